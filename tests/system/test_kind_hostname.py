"""The hostname kind in a machine (its own UTS namespace and /etc): through
systemd-hostnamed, and with hostnamed masked through the files and
sethostname; drift by hand repaired by events either way."""

from __future__ import annotations

import textwrap

from tests.harness import wait_for

# mgmt's examples/yaml/hostname.yaml, as mgmt writes it
MGMT_SHAPE = textwrap.dedent("""\
    ---
    graph: mygraph
    resources:
      hostname:
        - name: Hostname Watcher @ TestHost
          hostname: test.hostname.example.com
    edges: []
    """)

SPLIT = textwrap.dedent("""\
    graph: names
    resources:
      hostname:
      - name: {name}
        pretty_hostname: "{pretty}"
        static_hostname: {static}
        transient_hostname: {transient}
    """)


def names(sandbox) -> tuple[str, str, str]:
    """(pretty, static, transient) as the files and the kernel have them."""
    # hostnamed deletes /etc/machine-info when a change empties it (hostnamectl
    # set-hostname clears the pretty name), until mgmtd writes it again
    info = sandbox.run("cat", "/etc/machine-info", check=False).stdout
    pretty = ""
    for line in info.splitlines():
        if line.startswith("PRETTY_HOSTNAME="):
            pretty = line.split("=", 1)[1].strip('"')
    static = sandbox.run("cat", "/etc/hostname").stdout.strip()
    transient = sandbox.run("cat", "/proc/sys/kernel/hostname").stdout.strip()
    return pretty, static, transient


def test_mgmt_shape_through_hostnamed(sandbox):
    done = sandbox.apply(MGMT_SHAPE)
    assert done.returncode == 0, done.log
    assert "hostnamed not available" not in done.log
    assert names(sandbox) == ("test.hostname.example.com",) * 3
    again = sandbox.apply(MGMT_SHAPE)
    assert again.returncode == 0, again.log
    assert "applied" not in again.log


def test_noop_reports_and_changes_nothing(sandbox):
    before = names(sandbox)
    done = sandbox.apply(SPLIT.format(name="noop", pretty="Noop Box", static="noop-static",
                                      transient="noop-transient"), "--noop")
    assert done.returncode == 0, done.log
    assert "would set the static hostname to 'noop-static'" in done.log
    assert "would set the pretty hostname to 'Noop Box'" in done.log
    assert names(sandbox) == before


def test_drift_by_hand_is_repaired_through_hostnamed(sandbox):
    graph = SPLIT.format(name="drift", pretty="Drift Box", static="drift-static", transient="drift-static")
    agent = sandbox.start(graph)
    try:
        agent.wait_log("converged status is: true")
        assert names(sandbox) == ("Drift Box", "drift-static", "drift-static")
        sandbox.run("hostname", "changed-by-hand")               # the kernel's name only
        wait_for(lambda: names(sandbox)[2] == "drift-static", timeout=10, what="the transient name back")
        sandbox.run("hostnamectl", "set-hostname", "changed-again")   # static and transient
        wait_for(lambda: names(sandbox) == ("Drift Box", "drift-static", "drift-static"), timeout=10,
                 what="every name back")
    finally:
        log = agent.stop()   # never left running to fight the next test's names
    assert "Traceback" not in log


def test_without_hostnamed_the_files_are_written_and_watched(sandbox):
    sandbox.run("systemctl", "mask", "--now", "systemd-hostnamed.service")
    try:
        graph = SPLIT.format(name="files", pretty="Files \\\"Box\\\"", static="files-static",
                             transient="files-transient")
        done = sandbox.apply(graph)
        assert done.returncode == 0, done.log
        assert "hostnamed not available" in done.log
        assert names(sandbox) == ('Files \\"Box\\', "files-static", "files-transient")
        assert 'PRETTY_HOSTNAME="Files \\"Box\\""' in sandbox.read("/etc/machine-info")
        assert sandbox.run("systemctl", "is-active", "systemd-hostnamed.service",
                           check=False).stdout.strip() != "active"

        agent = sandbox.start(graph)
        agent.wait_log("converged status is: true")
        sandbox.run("hostname", "by-hand")
        wait_for(lambda: names(sandbox)[2] == "files-transient", timeout=10, what="the kernel's name back")
        sandbox.write("/etc/hostname", "edited\n")
        wait_for(lambda: names(sandbox)[1] == "files-static", timeout=10, what="/etc/hostname back")
        assert "Traceback" not in agent.stop()
    finally:
        sandbox.run("systemctl", "unmask", "systemd-hostnamed.service")
