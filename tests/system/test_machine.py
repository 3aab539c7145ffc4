"""A booted machine is a machine of its own: it cannot reach this host's /tmp,
/dev or disk, even when it runs what wipes /tmp at boot."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def test_a_booted_machine_leaves_the_hosts_tmp_and_disk_alone(make_fleet):
    fleet = make_fleet(1)
    machine = fleet[0]
    # a file on this host's disk, which the machine sees through its overlay
    host_file = Path("/var/tmp") / f"mgmtd-fleet-host-{secrets.token_hex(4)}"
    host_file.write_text("mine\n")
    try:
        check_isolation(fleet, machine, host_file)
    finally:
        host_file.unlink()


SYSTEMD_CGROUPS = (".slice", ".scope", ".service", ".mount", ".socket", ".swap")


def host_cgroups() -> set[Path]:
    """The host's cgroups a systemd would make (system.slice, init.scope...)."""
    found = set()
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if hierarchy.is_dir():
            found.update(p for p in hierarchy.rglob("*")
                         if p.is_dir() and len(p.parts) <= 9 and p.name.endswith(SYSTEMD_CGROUPS))
    return found


def check_isolation(fleet, machine, host_file: Path) -> None:
    dev_log_before = os.path.lexists("/dev/log")
    cgroups_before = host_cgroups()
    machine.boot()

    assert machine.run("hostname", check=True).stdout.strip() == "n1"
    assert machine.run("systemctl", "is-system-running").stdout.strip() in ("running", "degraded")
    # PID 1 is systemd, in its own PID namespace
    assert machine.run("cat", "/proc/1/comm", check=True).stdout.strip() == "systemd"
    for directory in ("/tmp", "/run", "/dev"):
        fstype = machine.run("stat", "-f", "-c", "%T", directory, check=True).stdout.strip()
        assert fstype == "tmpfs", f"{directory} is {fstype} inside the machine"
    assert machine.run("test", "-e", str(fleet.canary)).returncode == 1, "the machine sees the host's /tmp"

    # what systemd-tmpfiles does at boot (`D /tmp`: empty it), run by hand, and
    # writes to the machine's disk: none of it reaches this host
    machine.run("systemd-tmpfiles", "--boot", "--remove", "--create")
    machine.run("sh", "-c", f"echo theirs > {host_file} && echo x > /etc/mgmtd-fleet-probe", check=True)
    assert machine.path(str(host_file)).read_text() == "theirs\n"
    assert fleet.canary.exists(), "booting a machine removed a file in the host's /tmp"
    assert host_file.read_text() == "mine\n"
    assert not Path("/etc/mgmtd-fleet-probe").exists()
    assert os.path.lexists("/dev/log") == dev_log_before, "the machine changed the host's /dev"
    # systemd's cgroups (system.slice, mgmtd.service...) are under the machine's own
    # (another machine's, booted meanwhile by a test run beside this one, is not this one's doing)
    mine = {p for p in host_cgroups() - cgroups_before if machine.cgroup not in (p, *p.parents)
            and not any(q.name.startswith("mgmtd-fleet-") for q in (p, *p.parents))}
    assert not mine, f"the machine made cgroups in the host's hierarchies: {sorted(mine)[:5]}"
    assert (machine.cgroup / "init.scope").is_dir()
    assert machine.path("/etc/mgmtd-fleet-probe").read_text() == "x\n"

    # its disk outlives a power-off; its /tmp does not
    machine.run("sh", "-c", "echo gone > /tmp/scratch", check=True)
    machine.poweroff()
    assert (machine.disk / "upper" / "etc" / "mgmtd-fleet-probe").read_text() == "x\n"
    machine.boot()
    assert machine.path("/etc/mgmtd-fleet-probe").read_text() == "x\n"
    assert machine.run("test", "-e", "/tmp/scratch").returncode == 1
    namespace = machine.init_pid
    machine.pull_plug()
    assert not Path(f"/proc/{namespace}").exists() or machine.processes("systemd") == []
