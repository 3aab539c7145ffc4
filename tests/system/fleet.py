"""A fleet of real machines running mgmtd under systemd, as operators run it:
``systemctl enable --now mgmtd`` on each, flags in /etc/default/mgmtd written
exactly as docs/operations.md says, ``mgmtctl`` and ``journalctl`` inside.

    with Fleet(directory, image, 3) as fleet:
        fleet.start()                       # boot, configure, enable
        fleet.wait_settled(3)

Everything the fleet starts is stopped by ``close()``; a machine process left
over is an error."""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.harness import FAST, settled, voter_names, wait_for
from tests.system.image import Image
from tests.system.machine import Machine
from tests.system.namespaces import processes_in
from tests.system.switch import DEFAULT_SUBNET, Switch

CLIENT_PORT, PEER_PORT = 2379, 2380
SETTLE_TIMEOUT = 150.0


class FleetError(Exception):
    pass


def mgmtd_defaults(name: str, address: str, ideal: int | None, seeds: Sequence[str],
                   flags: Sequence[str] = ()) -> str:
    """/etc/default/mgmtd for a node, in the form docs/operations.md gives: real
    addresses, 127.0.0.1 too for mgmtctl's default endpoint, ``--ideal-cluster-size``
    on the first node and ``--seeds`` on the others."""
    options = [f"--hostname {name}",
               f"--client-urls http://{address}:{CLIENT_PORT},http://127.0.0.1:{CLIENT_PORT}",
               f"--advertise-client-urls http://{address}:{CLIENT_PORT}",
               f"--server-urls http://{address}:{PEER_PORT}"]
    if ideal is not None:
        options.append(f"--ideal-cluster-size {ideal}")
    if seeds:
        options.append(f"--seeds {','.join(seeds)}")
    options.extend(flags)
    return f'MGMTD_OPTS="{" ".join(options)}"\nMGMTD_FRONTEND="yaml /etc/mgmtd/graph.yaml"\n'


class Fleet:
    def __init__(self, directory: Path, image: Image, count: int, ideal: int = 3,
                 flags: Sequence[str] = FAST, subnet: str = DEFAULT_SUBNET) -> None:
        self.directory = directory
        self.ideal = ideal
        self.flags = tuple(flags)
        self.tag = secrets.token_hex(6)
        self.canary = Path("/tmp") / f"mgmtd-fleet-canary-{self.tag}"
        self.canary.write_text("the host's /tmp: a machine must not see or remove this\n")
        self.switch = Switch(subnet)
        self.machines = [Machine(f"n{i}", self.switch.address_of(i), directory / f"n{i}", image,
                                 self.switch, self.canary, self.tag) for i in range(1, count + 1)]

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getitem__(self, index: int) -> Machine:
        return self.machines[index]

    @property
    def client_urls(self) -> list[str]:
        return [f"http://{m.address}:{CLIENT_PORT}" for m in self.machines]

    # --- bringing it up ------------------------------------------------------------------
    def start(self, graph: str | None = None) -> Fleet:
        """Boots every machine, writes its /etc/default/mgmtd (and graph), then
        ``systemctl enable --now mgmtd``, the first node first."""
        for machine in self.machines:
            self.configure(machine, graph)
            machine.boot()
        self.enable(self.machines)
        return self

    def configure(self, machine: Machine, graph: str | None = None) -> None:
        first = machine is self.machines[0]
        seeds = [] if first else [self.client_urls[0]]
        machine.write("/etc/default/mgmtd", mgmtd_defaults(
            machine.name, machine.address, self.ideal if first else None, seeds, self.flags))
        if graph is not None:
            machine.write("/etc/mgmtd/graph.yaml", graph)

    def enable(self, machines: Iterable[Machine]) -> None:
        for machine in machines:
            machine.systemctl("enable", "--now", "mgmtd")

    # --- what mgmtctl says -------------------------------------------------------------
    def members(self, via: Machine, all_endpoints: bool = True, timeout: float = 30) -> dict | None:
        """``mgmtctl members -o json`` on ``via``; through every machine's client URL
        (as on a node without etcd) unless ``all_endpoints`` is False."""
        endpoints = ["--endpoints", ",".join(self.client_urls)] if all_endpoints else []
        try:
            done = via.run("mgmtctl", *endpoints, "members", "-o", "json", timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return json.loads(done.stdout) if done.returncode == 0 else None

    def wait_settled(self, size: int, via: Machine | None = None, voters: set[str] | None = None,
                     check=None, timeout: float = SETTLE_TIMEOUT, what: str = "") -> dict:
        """Waits until ``size`` healthy voters (these ones, if given) with one leader,
        as ``via`` (default: any running machine) reads them, and ``check(view)``."""
        last: dict = {}

        def probe():
            machine = via or next(m for m in self.machines if m.running)
            view = self.members(machine)
            last["view"] = view
            ok = (view is not None and settled(view, size)
                  and (voters is None or voter_names(view) == voters)
                  and (check is None or check(view)))
            return view if ok else None

        try:
            return wait_for(probe, timeout, what or f"{size} healthy voters"
                            + (f" {sorted(voters)}" if voters else ""), interval=0.5)
        except AssertionError as err:
            raise AssertionError(f"{err}\nlast view: {json.dumps(last.get('view'), indent=1)}\n"
                                 f"{self.journals()}") from None

    def journals(self, lines: int = 25) -> str:
        """The last journal lines of mgmtd on every running machine (for failures)."""
        parts = []
        for machine in self.machines:
            if machine.running:
                try:
                    text = machine.journal("-u", "mgmtd", "-n", str(lines), "-o", "cat", timeout=20)
                except Exception as err:  # noqa: BLE001 (a report of a failure must not fail)
                    text = f"(no journal: {err})"
                parts.append(f"--- {machine.name} ---\n{text}")
        return "\n".join(parts)

    # --- taking it down ----------------------------------------------------------------
    def poweroff(self, machines: Iterable[Machine]) -> list[Exception]:
        """Powers the machines off together (one by one, the last ones would wait
        for a quorum that is gone)."""
        errors: list[Exception] = []

        def off(machine: Machine) -> None:
            try:
                machine.poweroff()
            except Exception as err:  # noqa: BLE001 (collected, raised by close)
                errors.append(err)

        threads = [threading.Thread(target=off, args=(m,)) for m in machines if m.proc is not None]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return errors

    def close(self, clean: bool = False) -> None:
        """Pulls every plug (a test that cares about clean stops makes them
        itself), or with ``clean`` powers the machines off together first.
        Everything is stopped whatever fails; then the first problem is raised."""
        errors: list[Exception] = []
        try:
            if clean:
                errors.extend(self.poweroff(self.machines))
            for machine in self.machines:
                try:
                    machine.pull_plug()
                except Exception as err:  # noqa: BLE001 (the others are stopped all the same)
                    errors.append(err)
        finally:
            self.switch.close()
            namespaces = set().union(*(m.namespaces for m in self.machines))
            deadline = time.monotonic() + 30
            while (left := processes_in(namespaces)) and time.monotonic() < deadline:
                time.sleep(0.1)
            canary_kept = self.canary.exists()
            self.canary.unlink(missing_ok=True)
        if left:
            errors.append(FleetError(f"machine processes left behind: {left}"))
        if not canary_kept:
            errors.append(FleetError(f"{self.canary} is gone: a machine reached this host's /tmp"))
        if errors:
            raise FleetError("; ".join(map(str, errors)))
