"""A graph file that is a FIFO (issue 13, item 10), through the real CLI:
`mgmtd validate` and `mgmtd run` refuse it at once instead of waiting for a
writer, and an engine whose graph is briefly replaced by a FIFO goes on
reloading (the next good graph is applied)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.harness import one_file_graph, wait_for

MGMTD = str(Path(sys.executable).parent / "mgmtd")


def release_fifo(path: Path) -> None:
    """Lets a reader blocked in open() of the FIFO go (it then reads EOF), so
    a failing test leaves nothing stuck behind it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return   # not a FIFO any more, or no reader waiting
    os.close(fd)


def test_validate_refuses_a_fifo_at_once(workdir):
    fifo = workdir / "g.yaml"
    os.mkfifo(fifo)
    try:
        out = subprocess.run([MGMTD, "validate", str(fifo)], capture_output=True, text=True, timeout=20)
    finally:
        release_fifo(fifo)
    assert out.returncode == 2
    assert out.stderr == f"mgmtd: {fifo}: not a regular file (a FIFO)\n"
    assert out.stdout == ""


def test_run_refuses_a_fifo_at_start_up(make_node, workdir):
    fifo = workdir / "g.yaml"
    os.mkfifo(fifo)
    node = make_node()
    node.start(["yaml", str(fifo)])
    try:
        assert node.proc.wait(timeout=30) == 1, node.log()
    finally:
        release_fifo(fifo)
    log = node.log()
    assert f"{fifo}: not a regular file (a FIFO)" in log
    assert "Traceback" not in log


def test_reload_survives_the_graph_briefly_being_a_fifo(workdir):
    """Needs the engine's reload (mgmtd/engine/main.py, Engine.load) to read
    the file through read_graph_bytes: a plain open() waits for a writer."""
    target = workdir / "managed"
    graph = workdir / "g.yaml"
    one_file_graph(graph, target, "one")
    errors = workdir / "engine.log"
    with open(errors, "wb") as log:
        proc = subprocess.Popen([MGMTD, "engine", "--hostname", "t", "yaml", str(graph)],
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for(lambda: target.exists() and target.read_text() == "one", 20, "the first graph applied")
        fifo = workdir / "g.fifo"
        os.mkfifo(fifo)
        os.replace(fifo, graph)   # as an editor saves
        wait_for(lambda: f"{graph}: not a regular file (a FIFO)" in errors.read_text(), 20,
                 "the FIFO refused")
        good = one_file_graph(workdir / "g.new", target, "two")
        os.replace(good, graph)
        wait_for(lambda: target.read_text() == "two", 20, "the next good graph applied")
        # and a reload on request still works
        one_file_graph(workdir / "g.new", target, "three")
        os.replace(workdir / "g.new", graph)
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: target.read_text() == "three", 20, "the graph reloaded again")
    finally:
        release_fifo(graph)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = errors.read_text()
    assert "Traceback" not in text
    assert "the last good graph keeps running" in text
