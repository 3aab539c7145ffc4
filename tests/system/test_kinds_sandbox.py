"""The sandbox the kind tests use: ``mgmtd run`` inside a machine, once and as
a running agent, changes the machine's disk and never this host's."""

from __future__ import annotations

from pathlib import Path

GRAPH = """\
graph: sandbox
resources:
  file:
  - name: marker
    path: /etc/mgmtd-sandbox-marker
    content: |
      written inside
"""


def test_apply_and_agent_change_only_the_machine(sandbox):
    done = sandbox.apply(GRAPH)
    assert done.returncode == 0, done.log
    assert sandbox.read("/etc/mgmtd-sandbox-marker") == "written inside\n"
    assert not Path("/etc/mgmtd-sandbox-marker").exists()

    agent = sandbox.start(GRAPH)
    agent.wait_log("converged status is: true")
    before = len(agent.log())
    sandbox.run("rm", "/etc/mgmtd-sandbox-marker")
    agent.wait_log("file[marker]: applied", after=before)
    assert sandbox.read("/etc/mgmtd-sandbox-marker") == "written inside\n"
    log = agent.stop()
    assert "Traceback" not in log
