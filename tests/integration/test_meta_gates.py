"""Meta params that gate a check/apply (timeout, limit/burst, sema), through
the real CLI (``mgmtd engine``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

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
