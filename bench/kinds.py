"""Figure 7: the kinds that configure a machine.

- pkg: the no-change check of N installed packages (this host's own, read
  only: a check changes nothing), through the kind's grouped check, against
  ``dpkg-query -W`` of the same packages (one process: what a shell script
  would do) and against the floor of reading dpkg's status file once.
- svc: drift repair, inside a real systemd machine (tests/system): the time
  from a unit becoming inactive (``systemctl stop`` by hand) to active again,
  read from systemd's own D-Bus signals, against the same unit started again by
  a direct StartUnit call (the floor of any repair)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import Deadline, median, percentile

PROBE = Path(__file__).with_name("svc_probe.py")
UNIT = "mgmtd-bench.service"
UNIT_TEXT = """[Unit]
Description=mgmtd bench: a service kept running

[Service]
ExecStart=/bin/sleep infinity
"""
GRAPH = """graph: bench-svc
resources:
  svc:
  - name: mgmtd-bench
    state: running
"""


def _percentiles(samples: list[float]) -> dict:
    """Seconds, as the report's rows take them (it prints "ms" rows in ms)."""
    ordered = sorted(samples)
    return {"p50": median(ordered), "p99": percentile(ordered, 99), "max": ordered[-1], "samples": ordered}


def svc_repair(rounds: int, deadline: Deadline) -> dict:
    """Boots one machine, measures ``rounds`` direct restarts (the floor) and
    ``rounds`` repairs by a running ``mgmtd run``."""
    from tests.system import image as images
    from tests.system.fleet import Fleet
    from tests.system.kinds import Sandbox
    from tests.system.namespaces import unsupported_reason

    reason = unsupported_reason()
    if reason:
        raise RuntimeError(f"no machines here: {reason}")
    image = images.build()
    directory = Path(tempfile.mkdtemp(prefix="mgmtd-bench-svc-"))
    fleet = Fleet(directory, image, 1)
    try:
        machine = fleet[0]
        machine.boot()
        box = Sandbox(machine)
        box.write(f"/etc/systemd/system/{UNIT}", UNIT_TEXT)
        box.write("/root/svc_probe.py", PROBE.read_text())
        machine.systemctl("daemon-reload")
        machine.systemctl("start", UNIT)
        probe = ["/opt/mgmtd/bin/python", "/root/svc_probe.py", UNIT, str(rounds)]
        floor = json.loads(box.run(*probe, "start", timeout=deadline.within(300)).stdout)
        agent = box.start(GRAPH)
        agent.wait_log("converged", timeout=deadline.within(120))
        repair = json.loads(box.run(*probe, "repair", timeout=deadline.within(300)).stdout)
        log = agent.stop()
        return {"repair": _percentiles(repair), "floor": _percentiles(floor),
                "agent_errors": [line for line in log.splitlines() if "ERROR" in line][:5]}
    finally:
        try:
            fleet.close()
        finally:
            images.remove(image)
            shutil.rmtree(directory, ignore_errors=True)


def installed_packages(count: int) -> list[str]:
    """``count`` packages installed on this host, spread over the alphabet."""
    from mgmtd.resources.dpkgdb import DpkgStatus

    db = DpkgStatus().snapshot()
    names = sorted(name for name in db.packages if db.lookup(name) is not None)
    if len(names) < count:
        raise RuntimeError(f"only {len(names)} packages installed here, {count} wanted")
    step = len(names) / count
    return [names[int(i * step)] for i in range(count)]


def pkg_check(count: int, repeats: int, deadline: Deadline) -> dict:
    """As the engine runs them: one grouped check (autogroup), ``apply`` on, on
    packages that are installed, so nothing is changed. "cold" starts from a
    status file not parsed yet (the first check after any dpkg run)."""
    from mgmtd.resources.apt import Apt
    from mgmtd.resources.dpkgdb import STATUS_PATH, DpkgStatus
    from mgmtd.resources.pkg import Backend, PkgResource

    names = installed_packages(count)
    cold, warm, query, floor = [], [], [], []
    for _ in range(repeats):
        deadline.within()
        backend = Backend(DpkgStatus(), Apt())
        resources = []
        for name in names:
            res = PkgResource(name, {"state": "installed"})
            res.validate()
            res.backend = backend
            resources.append(res)
        began = time.perf_counter()
        results = PkgResource.check_apply_group(resources, True)
        cold.append(time.perf_counter() - began)
        if results != [True] * count:
            raise RuntimeError(f"installed packages not in state: {results[:3]}")
        began = time.perf_counter()
        PkgResource.check_apply_group(resources, True)
        warm.append(time.perf_counter() - began)
        began = time.perf_counter()
        subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\n", *names],
                       check=True, capture_output=True)
        query.append(time.perf_counter() - began)
        began = time.perf_counter()
        Path(STATUS_PATH).read_bytes()
        floor.append(time.perf_counter() - began)
    return {"count": count, "cold": median(cold), "warm": median(warm), "dpkg_query": median(query),
            "read_status": median(floor)}
