"""The graph file's reload through ``mgmtd engine`` (issue 19): an edit is
picked up as soon as it is written, and a rapid sequence of writes, each one
visibly half-written for a moment, ends with the last content applied and no
error logged for any half-written state. Correctness only: no timing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.harness import wait_for, write_atomically

MGMTD = str(Path(sys.executable).parent / "mgmtd")


def graph_text(root: Path, tag: str, names: tuple[str, ...] = ("a", "b", "c")) -> str:
    body = "".join(f'  - name: {n}\n    path: "{root}/{n}"\n    content: "{tag}\\n"\n' for n in names)
    return f'graph: g\nresources:\n  file:\n  - name: root\n    path: "{root}/"\n{body}'


def holds(root: Path, tag: str, names: tuple[str, ...] = ("a", "b", "c")):
    def check() -> bool:
        try:
            return all((root / n).read_text() == f"{tag}\n" for n in names)
        except FileNotFoundError:
            return False
    return check


def start_engine(graph: Path) -> tuple[subprocess.Popen, Path]:
    log = graph.with_name("engine.log")
    with open(log, "ab") as handle:
        proc = subprocess.Popen([MGMTD, "engine", "--hostname", "t", "yaml", str(graph)],
                                stdout=subprocess.DEVNULL, stderr=handle)
    return proc, log


def stop_engine(proc: subprocess.Popen, log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    return log.read_text(errors="replace")


def test_an_edit_is_applied_and_rapid_half_written_writes_end_in_the_last_graph(workdir):
    root = workdir / "out"
    graph = workdir / "g.yaml"
    graph.write_text(graph_text(root, "v0"))
    proc, log = start_engine(graph)
    try:
        wait_for(holds(root, "v0"), 30, "the first graph applied")
        # an editor's save (temp file, rename)
        write_atomically(graph, graph_text(root, "v1"))
        wait_for(holds(root, "v1"), 10, "the edit applied")
        # an in-place save, as `cat > g.yaml` or a slow tool: the file is truncated and
        # written in two parts, the first part alone not valid YAML (an open quote)
        for i in range(2, 42):
            text = graph_text(root, f"v{i}")
            cut = text.index('content: "') + len('content: "') + 1
            with open(graph, "w") as handle:
                handle.write(text[:cut])
                handle.flush()
                os.fsync(handle.fileno())   # the half is on disk: readable by anyone now
                handle.write(text[cut:])
            # and a file replaced by rename in between, first half-written as a temp file
            if i % 5 == 0:
                write_atomically(graph, graph_text(root, f"v{i}"))
        wait_for(holds(root, "v41"), 30, "the last write applied")
        assert proc.poll() is None
    finally:
        err = stop_engine(proc, log)
    assert "Traceback" not in err
    assert " ERROR " not in err, err[-3000:]
    assert "graph not reloaded" not in err


def test_a_finished_bad_write_is_still_reported_and_the_next_good_one_applied(workdir):
    root = workdir / "out"
    graph = workdir / "g.yaml"
    graph.write_text(graph_text(root, "good"))
    proc, log = start_engine(graph)
    try:
        wait_for(holds(root, "good"), 30, "the first graph applied")
        graph.write_text('graph: g\nresources:\n  file:\n  - name: x\n    content: "unterminated\n')
        wait_for(lambda: "the last good graph keeps running" in log.read_text(), 10,
                 "the broken graph reported")
        write_atomically(graph, graph_text(root, "better"))
        wait_for(holds(root, "better"), 10, "the repaired graph applied")
    finally:
        err = stop_engine(proc, log)
    assert f"{graph}:" in err   # a located error, FILE:LINE:COL
