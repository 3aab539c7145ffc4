"""Meta params that gate a check/apply (timeout, limit/burst, sema), through
the real CLI (``mgmtd engine``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.harness import wait_for

MGMTD = str(Path(sys.executable).parent / "mgmtd")


def engine_once(graph: Path, timeout: float = 90, converged: str = "0.5") -> subprocess.CompletedProcess:
    return subprocess.run([MGMTD, "engine", "--hostname", "t", "--converged-timeout", converged,
                           "yaml", str(graph)], capture_output=True, text=True, timeout=timeout)


def test_timeout_cuts_a_command_short_and_retries_it(workdir):
    graph = workdir / "timeout.yaml"
    graph.write_text(f"""---
graph: timeout
resources:
  exec:
  - name: slow
    cmd: echo run >> {workdir}/runs; sleep 30
    shell: /bin/sh
    meta:
      timeout: 300
      retry: 1
""")
    started = time.monotonic()
    out = engine_once(graph, timeout=25)
    assert out.returncode == 1, out.stderr
    assert time.monotonic() - started < 20          # not the 60 s of two whole sleeps
    assert "exec[slow]: timed out after 300 ms" in out.stderr
    assert "Traceback" not in out.stderr
    assert (workdir / "runs").read_text() == "run\nrun\n"   # the first run and its one retry


def test_realize_is_refused_with_its_location(workdir):
    graph = workdir / "realize.yaml"
    graph.write_text("resources:\n  noop:\n  - name: n\n    meta:\n      realize: true\n")
    out = subprocess.run([MGMTD, "validate", str(graph)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{graph}:5:16: noop[n]: meta.realize is not supported" in lines[0]
    graph.write_text("resources:\n  noop:\n  - name: n\n    meta:\n      realize: false\n")
    out = subprocess.run([MGMTD, "validate", str(graph)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_limit_and_burst_shaped_like_mgmts_limit1(workdir):
    """A file rewritten behind the engine's back 50 times a second is repaired
    at most ``limit`` times a second (plus the burst), yet repaired in the end."""
    target = workdir / "limit"
    graph = workdir / "limit1.yaml"
    graph.write_text(f"""---
graph: mygraph
resources:
  file:
  - name: file1
    meta:
      limit: 2
      burst: 1
    path: "{target}"
    content: |
      i am a normal file
    state: exists
edges: []
""")
    log = workdir / "engine.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([MGMTD, "engine", "--hostname", "t", "yaml", str(graph)],
                                stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_for(lambda: target.exists() and target.read_text() == "i am a normal file\n", 30, "the file")
        start = time.monotonic()
        while time.monotonic() - start < 2.5:
            target.write_text("drift\n")
            time.sleep(0.02)
        window = time.monotonic() - start
        wait_for(lambda: target.read_text() == "i am a normal file\n", 10, "the last repair")
        applies = log.read_text().count("file[file1]: applied") - 1   # the first write
        assert 1 <= applies <= 1 + 2 * (window + 1.5), log.read_text()   # ~100 without the limit
        assert "Traceback" not in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_sema_shaped_like_mgmts_exec3_sema_serialises_the_four_commands(workdir):
    """mgmt's exec3-sema.yaml: four sleeping commands sharing ``mylock:1``
    (two also ``otherlock:42``), three of them chained: never two at once."""
    stamps = workdir / "stamps"
    stamps.mkdir()

    def execs(name: str, semas: str) -> str:
        return f"""  - name: {name}
    meta:
      sema: {semas}
    cmd: date +%s.%N >> {stamps}/{name}; sleep 0.4; date +%s.%N >> {stamps}/{name}
    shell: /bin/sh
"""
    graph = workdir / "exec3-sema.yaml"
    graph.write_text("---\ngraph: parallel\nresources:\n  exec:\n"
                     + execs("pkg10", "['mylock:1', 'otherlock:42']") + execs("svc10", "['mylock:1']")
                     + execs("exec10", "['mylock:1']") + execs("pkg15", "['mylock:1', 'otherlock:42']")
                     + """edges:
- name: e1
  from: {kind: exec, name: pkg10}
  to: {kind: exec, name: svc10}
- name: e2
  from: {kind: exec, name: svc10}
  to: {kind: exec, name: exec10}
""")
    out = engine_once(graph)
    assert out.returncode == 0, out.stderr
    runs = sorted(tuple(float(t) for t in (stamps / name).read_text().split())
                  for name in ("pkg10", "svc10", "exec10", "pkg15"))
    assert all(len(run) == 2 for run in runs)
    for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
        assert start >= end, f"two commands holding mylock:1 overlapped: {runs}"
