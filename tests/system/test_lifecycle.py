"""A node's life on a real machine: stopped and started, powered off and on,
upgraded in place, cut from the network (docs/operations.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time

from tests.harness import etcdctl, roles, voter_names, wait_for
from tests.system import image as images

ALL3 = {"n1", "n2", "n3"}


def by_name(fleet, name: str):
    return next(m for m in fleet.machines if m.name == name)


def since_last(text: str, marker: str) -> list[str]:
    """The lines from the last one with ``marker`` on (none if it is not there)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if marker in line]
    return lines[starts[-1]:] if starts else []


def index_of(lines: list[str], text: str) -> int:
    return next(i for i, line in enumerate(lines) if text in line)


def test_systemctl_stop_is_clean_the_cluster_repairs_and_start_rejoins(make_fleet):
    fleet = make_fleet(4).start()
    view = fleet.wait_settled(3, check=lambda v: len(v["nodes"]) == 4, what="3 voters and a spare")
    victim = by_name(fleet, sorted(voter_names(view) - {view["leader"]})[0])
    others = [m for m in fleet.machines if m is not victim]

    assert len(victim.unit_processes()) >= 3  # supervisor, engine, etcd
    victim.systemctl("stop", "mgmtd")
    state = dict(line.split("=", 1) for line in victim.systemctl(
        "show", "-p", "ActiveState", "-p", "Result", "-p", "ExecMainStatus", "mgmtd").stdout.split())
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, state
    # mgmtd's own lines are in order (one stream); systemd's may come before or after them
    stop = wait_for(lambda: (lines := since_last(victim.journal("-u", "mgmtd", "-o", "cat"),
                                                 "received SIGTERM: stopping"))
                    and any("Deactivated successfully" in line for line in lines) and lines,
                    30, "the stop in the journal")
    order = [index_of(stop, text) for text in ("received SIGTERM: stopping", "supervisor: stopped engine",
                                               "etcd: stopped etcd")]
    assert order == sorted(order), "\n".join(stop)
    assert any("Deactivated successfully" in line for line in stop), "\n".join(stop)
    assert victim.processes("etcd") == [] and victim.unit_processes() == []

    # repaired: the spare takes the stopped voter's place
    fleet.wait_settled(3, via=others[0], voters={m.name for m in others},
                       what=f"the spare replacing {victim.name}")
    victim.systemctl("start", "mgmtd")
    fleet.wait_settled(3, check=lambda v: roles(v).get(victim.name) in ("client", "voter", "leader"),
                       what=f"{victim.name} registered again")


def test_a_machine_powered_off_or_cut_off_boots_back_into_the_cluster(make_fleet):
    fleet = make_fleet(3).start()
    fleet.wait_settled(3, voters=ALL3)
    n1, n2, n3 = fleet.machines

    n3.poweroff()
    n3.boot()  # returns once boot is done: with mgmtd started (enabled) and READY
    assert n3.systemctl("is-enabled", "mgmtd").stdout.strip() == "enabled"
    assert n3.systemctl("is-active", "mgmtd").stdout.strip() == "active"
    fleet.wait_settled(3, voters=ALL3)

    # a power cut this time, long enough for the cluster to remove it
    n2.pull_plug()
    fleet.wait_settled(2, via=n1, voters={"n1", "n3"}, what="n2 removed after its grace period")
    n2.boot()
    assert n2.systemctl("is-active", "mgmtd").stdout.strip() == "active"
    fleet.wait_settled(3, voters=ALL3, what="n2 back as a voter")
    assert len(n2.processes("etcd")) == 1


class Writer:
    """Puts numbered keys through etcdctl from the switch, as fast as they are
    acknowledged; remembers which ones were."""

    def __init__(self, fleet) -> None:
        self.fleet = fleet
        self.acked: list[str] = []
        self.failures = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _write(self) -> None:
        endpoints = ",".join(self.fleet.client_urls)
        i = 0
        while not self.stopping.is_set():
            i += 1
            key = f"/upgrade/{i:06d}"
            try:
                done = etcdctl(endpoints, "--command-timeout", "5s", "put", key, str(i), timeout=15,
                               wrap=self.fleet.switch.wrap)
                if done.returncode == 0:
                    self.acked.append(key)
                else:
                    self.failures += 1
            except subprocess.TimeoutExpired:
                self.failures += 1
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)

    def stored(self) -> set[str]:
        done = etcdctl(",".join(self.fleet.client_urls), "get", "--prefix", "/upgrade/", "--keys-only",
                       timeout=60, wrap=self.fleet.switch.wrap)
        assert done.returncode == 0, done.stderr
        return {line for line in done.stdout.splitlines() if line}


def started_build(machine) -> str | None:
    """The version the running supervisor logged at its start (None: not in the
    journal yet)."""
    pid = machine.systemctl("show", "-p", "MainPID", "--value", "mgmtd").stdout.strip()
    starts = re.findall(rf"supervisor: mgmtd (\S+) starting \(pid {pid}\)",
                        machine.journal("-u", "mgmtd", "-o", "cat"))
    return starts[-1] if starts else None


def install(machine, image) -> None:
    """What a package upgrade does to the machine's disk: the new /opt/mgmtd in
    place of the old (the running processes keep theirs until restarted)."""
    staged = machine.path("/opt/mgmtd.new")
    shutil.copytree(image.venv, staged, symlinks=True)
    shutil.rmtree(machine.path("/opt/mgmtd"))
    staged.rename(machine.path("/opt/mgmtd"))


def test_rolling_upgrade_one_machine_at_a_time_loses_no_write(make_fleet, tmp_path):
    fleet = make_fleet(3).start()
    version = "0.1.0+fleet.upgrade"
    newer = images.build(images.source_at_version(tmp_path / "newer", version))
    try:
        assert newer.version == version
        fleet.wait_settled(3, voters=ALL3)
        writer = Writer(fleet)
        try:
            wait_for(lambda: len(writer.acked) >= 5, 60, "the writer under way")
            for machine in fleet.machines:
                install(machine, newer)
                assert machine.run("/opt/mgmtd/bin/mgmtd", "--version", check=True).stdout.split()[-1] == version
                machine.systemctl("restart", "mgmtd")
                wait_for(lambda m=machine: started_build(m), 30, f"{machine.name}'s start line")
                assert started_build(machine) == version, machine.name
                fleet.wait_settled(3, voters=ALL3, what=f"{machine.name} back after its upgrade")
                before = len(writer.acked)
                wait_for(lambda b=before: len(writer.acked) > b + 5, 60, "writes acknowledged again")
        finally:
            writer.stop()
        stored = writer.stored()
        missing = [key for key in writer.acked if key not in stored]
        assert not missing, f"{len(missing)} of {len(writer.acked)} acknowledged writes lost"
        print(f"rolling upgrade: {len(writer.acked)} writes acknowledged and found, "
              f"{writer.failures} refused or timed out during restarts")
    finally:
        images.remove(newer)


def test_a_machine_cut_from_the_network_is_replaced_and_rejoins_without_a_split(make_fleet):
    fleet = make_fleet(4).start()
    view = fleet.wait_settled(3, check=lambda v: len(v["nodes"]) == 4, what="3 voters and a spare")
    cut = by_name(fleet, view["leader"])  # the hardest one to lose: mgmtd's leader
    rest = [m for m in fleet.machines if m is not cut]

    cut.set_link(False)
    fleet.wait_settled(3, via=rest[0], voters={m.name for m in rest}, what=f"{cut.name} replaced")
    cut.set_link(True)
    view = fleet.wait_settled(3, voters={m.name for m in rest},
                              check=lambda v: roles(v).get(cut.name) == "client",
                              what=f"{cut.name} back as a client")
    # one cluster: every etcd that answers on a machine is a member of the same one
    for machine in rest:
        local = wait_for(lambda m=machine: fleet.members(m, all_endpoints=False), 60,
                         f"{machine.name}'s own etcd answering")
        assert local["cluster_id"] == view["cluster_id"], (machine.name, local)
    wait_for(lambda: cut.processes("etcd") == [], 60, f"{cut.name} without an etcd of its own")
