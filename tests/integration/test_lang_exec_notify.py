"""Issue 17 through `mgmtd run`: exec's fields from mgmt's exec.go working
together, and the notify example refreshing its exec exactly when its file
had to be changed."""

from __future__ import annotations

import os
from pathlib import Path

from tests.harness import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "yaml"

EXEC_FIELDS = """\
graph: execfields
resources:
  exec:
  - name: build
    cmd: sh -c 'cat src.txt > out.txt; echo "$STAGE" >> out.txt'
    cwd: {d}
    env: {{STAGE: built}}
    mtimes: ["{d}/src.txt"]
    ifcmd: 'false'
    donecmd: sh -c 'echo done >> done.log'
    donecwd: {d}
    sig: SIGINT
  - name: watcher
    cmd: sh -c 'echo run >> {d}/watch.log'
    watchfiles: ["{d}/trigger"]
    nifcmd: test -e {d}/stop
  - name: equals
    cmd: touch {d}/equals-ran
    ifcmd: echo same
    ifequals_stdout: "same\\n"
    timeout: 30
"""


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_exec_fields_through_mgmtd_run(make_node, workdir):
    d = workdir / "files"
    d.mkdir()
    (d / "src.txt").write_text("v1\n")
    graph = workdir / "exec.yaml"
    graph.write_text(EXEC_FIELDS.format(d=d))
    node = make_node()
    node.start(["yaml", str(graph)])
    try:
        # mtimes: the first run happens although ifcmd says no; env is the command's environment
        wait_for(lambda: (d / "out.txt").exists() and (d / "out.txt").read_text() == "v1\nbuilt\n"
                 and lines(d / "done.log") == 1, 60, "build and its donecmd to run")
        wait_for(lambda: lines(d / "watch.log") == 1, 30, "watcher's first run")
        (d / "src.txt").write_text("v2\n")      # a newer mtime: build runs again past ifcmd
        wait_for(lambda: (d / "out.txt").read_text() == "v2\nbuilt\n" and lines(d / "done.log") == 2,
                 30, "build to run again after src.txt changed")
        (d / "trigger").write_text("go")        # watchfiles: an event reruns watcher
        wait_for(lambda: lines(d / "watch.log") >= 2, 30, "watcher to run on the trigger")
        # every resource was checked at least once (equals too)
        wait_for(lambda: "converged status is: true" in node.log(), 30, "the engine to converge")
    finally:
        node.stop()
    log = node.log()
    # ifequals_stdout matched at every check, so equals never ran
    assert not (d / "equals-ran").exists(), log
    line = EXEC_FIELDS.splitlines().index("    timeout: 30") + 1
    assert f"{graph}:{line}:5: warning: exec[equals]: field 'timeout': mgmt HEAD has no such field" in log
    assert "Traceback" not in log


def localized(root: Path, workdir: Path) -> Path:
    path = workdir / "notify1.yaml"
    path.write_text((EXAMPLES / "notify1.yaml").read_text().replace("/tmp/", f"{root}/"))
    return path


def test_notify_example_refreshes_exactly_when_the_file_changed(make_node, workdir):
    root = workdir / "root"
    root.mkdir()
    graph = localized(root, workdir)
    config = root / "mgmtd-examples/notify1/app.conf"
    reloads = root / "mgmtd-examples/notify1/reloads.log"
    node = make_node()

    def run_to_convergence() -> None:
        node.start(["yaml", str(graph)], "--converged-timeout", "2")
        assert node.proc.wait(timeout=90) == 0, node.log()

    # 1. the file is written: one refresh, and mgmtd exits once quiet (nothing else can happen)
    run_to_convergence()
    assert config.read_text() == "port = 8080\nworkers = 4\n"
    assert lines(reloads) == 1, node.log()
    # 2. the file is right (only touched): no refresh in a whole run
    os.utime(config)
    run_to_convergence()
    assert lines(reloads) == 1, node.log()
    # 3. while mgmtd runs, an edit by hand is put back and refreshes the exec once
    converged = node.log().count("converged status is: true")   # the log is appended to
    node.start(["yaml", str(graph)])
    try:
        wait_for(lambda: node.log().count("converged status is: true") > converged, 60,
                 "the graph to converge")
        assert lines(reloads) == 1
        config.write_text("port = 1\n")
        wait_for(lambda: lines(reloads) == 2, 30, "the reload after the edit")
        assert config.read_text() == "port = 8080\nworkers = 4\n"
    finally:
        node.stop()
    assert lines(reloads) == 2, node.log()
