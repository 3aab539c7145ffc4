"""The engine through the real CLI: the shipped examples, drift repair, hot
reload under pressure, and graphs shaped like mgmt's own examples."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.harness import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "yaml"
MGMTD = str(Path(sys.executable).parent / "mgmtd")


def localized(name: str, root: Path, workdir: Path) -> str:
    """An example with its /tmp paths moved under the test's own directory."""
    text = (EXAMPLES / name).read_text().replace("/tmp/", f"{root}/")
    path = workdir / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("example", ["hello.yaml", "file1.yaml", "exec1.yaml", "noop1.yaml", "msg1.yaml",
                                     "autoedges1.yaml", "meta1.yaml"])
def test_example_converges_through_mgmtd_run(example, make_node, workdir):
    root = workdir / "root"
    root.mkdir()
    node = make_node()
    node.start(["yaml", localized(example, root, workdir)], "--converged-timeout", "1")
    assert node.proc.wait(timeout=90) == 0, node.log()
    assert "Traceback" not in node.log()
    if example == "hello.yaml":
        assert (root / "mgmtd-hello/hello.txt").read_text() == "hello from mgmtd\n"
    if example == "exec1.yaml":
        assert (root / "mgmtd-examples/exec1/stamp.txt").exists()
    if example == "meta1.yaml":
        assert (root / "mgmtd-examples/meta1/tries").read_text() == "3\n"  # retried until it worked
        assert not (root / "mgmtd-examples/meta1/never-written.txt").exists()  # noop
        assert "file[dry-run]: would create" in node.log()


def engine(graph: str, *args: str) -> subprocess.Popen:
    """``mgmtd engine``, its log in ``engine.log`` next to the graph (a file, not a
    pipe: the test reads it while the engine runs, and a full pipe would block it)."""
    with open(log_of(graph), "ab") as log:
        return subprocess.Popen([MGMTD, "engine", "--hostname", "t", *args, "yaml", graph],
                                stdout=subprocess.DEVNULL, stderr=log)


def log_of(graph: str) -> Path:
    return Path(graph).with_name("engine.log")


def stop(proc: subprocess.Popen) -> str:
    """Stops the engine; returns its log."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    return log_of(proc.args[-1]).read_text(errors="replace")


def test_timer_notifies_exec_repeatedly(workdir):
    text = (EXAMPLES / "timer1.yaml").read_text().replace("/tmp/mgmtd-examples", f"{workdir}/ex")
    text = text.replace("interval: 5", "interval: 1")
    graph = workdir / "timer1.yaml"
    graph.write_text(text)
    proc = engine(str(graph))
    try:
        log = workdir / "ex/timer1/ticks.log"
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, 20, "three ticks")
    finally:
        err = stop(proc)
    assert "Traceback" not in err


def test_drift_is_repaired_within_milliseconds(workdir):
    root = workdir / "m"
    graph = workdir / "g.yaml"
    graph.write_text(f"""graph: g
resources:
  file:
  - name: d
    path: "{root}/"
    mode: "0750"
  - name: f
    path: "{root}/f"
    content: "wanted\\n"
    mode: "0640"
""")
    proc = engine(str(graph))
    try:
        target = root / "f"
        wait_for(lambda: target.exists() and target.read_text() == "wanted\n", 20, "first converge")
        tampers = {
            "content": lambda: target.write_text("tampered"),
            "mode": lambda: os.chmod(target, 0o666),
            "deletion": lambda: target.unlink(),
            "directory mode": lambda: os.chmod(root, 0o777),
        }
        for what, tamper in tampers.items():
            started = time.monotonic()
            tamper()

            def repaired():
                try:
                    return (target.read_text() == "wanted\n"
                            and target.stat().st_mode & 0o777 == 0o640
                            and root.stat().st_mode & 0o777 == 0o750)
                except FileNotFoundError:
                    return False

            wait_for(repaired, 5, f"repair after {what}", interval=0.001)
            assert time.monotonic() - started < 1.0, what
        # the directory itself taken away with everything in it (rm -rf would race the repair)
        os.rename(root, workdir / "moved-away")
        wait_for(lambda: target.exists() and target.read_text() == "wanted\n", 5, "dir + file back")
    finally:
        err = stop(proc)
    assert "Traceback" not in err


def write_graph(path: Path, root: Path, names: list[str], tag: str) -> None:
    body = "".join(f'  - name: {n}\n    path: "{root}/{n}"\n    content: "{tag}"\n' for n in names)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f'graph: g\nresources:\n  file:\n  - name: root\n    path: "{root}/"\n{body}')
    os.replace(tmp, path)  # as an editor saves


def test_hundred_rapid_reloads_end_in_the_last_graph(workdir):
    root = workdir / "r"
    graph = workdir / "g.yaml"
    write_graph(graph, root, ["a", "b"], "v0")
    workers = 4
    proc = engine(str(graph), "--workers", str(workers))
    try:
        wait_for(lambda: (root / "b").exists(), 20, "first graph applied")
        # the pool has started at least one worker by now; it may start the others
        # later, but no more: any thread beyond that bound is a stray
        bound = psutil.Process(proc.pid).num_threads() + workers - 1

        def burst(offset: int) -> list[str]:
            for i in range(offset + 1, offset + 101):
                names = [f"f{j}" for j in range(i % 7, i % 7 + 5)]
                write_graph(graph, root, names, f"v{i}")
                if i % 10 == 0:
                    os.kill(proc.pid, signal.SIGHUP)  # reloads by signal mixed in
            return [f"f{j}" for j in range((offset + 100) % 7, (offset + 100) % 7 + 5)]

        def final(last: list[str], tag: str):
            def check():
                try:
                    return all((root / n).read_text() == tag for n in last)
                except FileNotFoundError:
                    return False
            return check

        def threads() -> int:
            return psutil.Process(proc.pid).num_threads()

        wait_for(final(burst(0), "v100"), 30, "the last graph's files")
        wait_for(lambda: threads() <= bound, 10, f"at most {bound} threads after 100 reloads")
        # a second burst must not leave more threads behind: no stray workers
        last = burst(100)
        wait_for(final(last, "v200"), 30, "the last graph's files, again")
        wait_for(lambda: threads() <= bound, 10, f"at most {bound} threads after 200 reloads")
        # a file dropped from the graph is no longer managed: changed before a managed
        # file, it is still as left once the engine has repaired the managed one
        dropped, managed = root / "a", root / last[0]
        dropped.write_text("mine")
        managed.write_text("tampered")
        wait_for(final(last[:1], "v200"), 10, f"{managed.name} repaired")
        assert dropped.read_text() == "mine"
        assert proc.poll() is None
    finally:
        err = stop(proc)
    assert "Traceback" not in err
    assert "graph swapped" in err


def test_bad_reload_keeps_the_last_good_graph(workdir):
    root = workdir / "k"
    graph = workdir / "g.yaml"
    write_graph(graph, root, ["x"], "good")
    proc = engine(str(graph))
    try:
        wait_for(lambda: (root / "x").exists(), 20, "first graph applied")
        graph.write_text("graph: g\nresources:\n  file:\n  - name: x\n    path: relative\n")
        wait_for(lambda: "the last good graph keeps running" in log_of(str(graph)).read_text(), 10,
                 "the bad graph refused")
        (root / "x").write_text("tampered")
        wait_for(lambda: (root / "x").read_text() == "good", 5, "the last good graph enforced")
    finally:
        err = stop(proc)
    assert f"{graph}:5:11: file[x]: path must be absolute" in err
    assert "the last good graph keeps running" in err


MGMT_SHAPED = {
    # the shape of mgmt's examples/yaml/file1.yaml (noop plus files, absent, edges)
    "file1": """---
graph: mygraph
resources:
  noop:
  - name: noop1
  file:
  - name: file1
    path: "{root}/f1"
    content: |
      i am f1
    state: exists
  - name: file2
    path: "{root}/f2"
    content: |
      i am f2
    state: exists
  - name: file4
    path: "{root}/f4"
    content: |
      i am f4 and i should not be here
    state: absent
edges:
- name: e1
  from:
    kind: file
    name: file1
  to:
    kind: file
    name: file2
""",
    # the shape of mgmt's exec1a.yaml: every exec field spelled out, empty strings included
    "exec1a": """---
graph: mygraph
resources:
  exec:
  - name: exec1
    cmd: sleep 0.1
    shell: ''
    timeout: 0
    watchcmd: ''
    watchshell: ''
    ifcmd: ''
    ifshell: ''
    pollint: 0
    state: present
  - name: exec2
    cmd: sleep 0.1
    shell: ''
    timeout: 0
    watchcmd: ''
    watchshell: ''
    ifcmd: ''
    ifshell: ''
    pollint: 0
    state: present
edges:
- name: e1
  from:
    kind: exec
    name: exec1
  to:
    kind: exec
    name: exec2
""",
    # the shape of mgmt's autoedges1.yaml: meta autoedge, a dir two levels up
    "autoedges1": """---
graph: mygraph
resources:
  file:
  - name: file1
    meta:
      autoedge: true
    path: "{root}/foo/bar/f1"
    content: |
      i am f1
    state: exists
  - name: file2
    meta:
      autoedge: true
    path: "{root}/foo/"
    state: exists
  - name: file3
    meta:
      autoedge: true
    path: "{root}/foo/bar/"
    state: exists
edges: []
""",
}


@pytest.mark.parametrize("name", sorted(MGMT_SHAPED))
def test_mgmt_shaped_graphs_run_unchanged(name, workdir):
    root = workdir / "mgmt"
    root.mkdir()
    graph = workdir / f"{name}.yaml"
    graph.write_text(MGMT_SHAPED[name].replace("{root}", str(root)))
    out = subprocess.run([MGMTD, "engine", "--hostname", "t", "--converged-timeout", "0.5", "yaml",
                          str(graph)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    if name == "file1":
        assert (root / "f2").read_text() == "i am f2\n" and not (root / "f4").exists()
    if name == "autoedges1":
        assert (root / "foo/bar/f1").read_text() == "i am f1\n"
