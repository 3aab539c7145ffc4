"""What every scenario needs besides the harness it shares with the tests
(tests/harness.py: waiting, nodes, clusters, clients, processes): deadlines,
workspaces that always clean up, and small statistics."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from tests.harness import Node, free_port, kill_leftovers, start_logged, stop_processes

# where a workspace copies its logs when a process did not stop cleanly (set by run.py)
KEEP_LOGS_IN: Path | None = None


class ScenarioTimeout(Exception):
    """A scenario ran past its deadline."""


# --- deadlines ------------------------------------------------------------------------
class Deadline:
    """A hard limit for one scenario: SIGALRM raises ScenarioTimeout in the main
    thread even while it blocks in a wait, so the scenario's finally blocks run."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def within(self, limit: float | None = None) -> float:
        """The seconds a wait may take: what is left, and at most ``limit``."""
        return self.left() if limit is None else min(limit, self.left())

    def check(self, doing: str = "") -> None:
        if self.left() <= 0:
            raise ScenarioTimeout(f"{self.what}: deadline of {self.seconds:.0f}s passed {doing}".rstrip())

    def __enter__(self) -> Deadline:
        def fire(*_):
            raise ScenarioTimeout(f"{self.what}: deadline of {self.seconds:.0f}s passed")
        self.previous = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)


# --- processes ------------------------------------------------------------------------------
class Workspace:
    """A temp directory and every process started in it. On exit: SIGTERM to
    every live process at once, SIGKILL after a grace period, then SIGKILL to
    anything whose command line still mentions the directory (mgmtd's etcd runs
    in its own session), then the directory goes."""

    def __init__(self, name: str, keep: bool = False, kill: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"mgmtd-bench-{name}-"))
        self.keep = keep
        self.kill = kill                # SIGKILL at once (throw-away reference processes)
        self.stop_seconds: float | None = None
        self.exit_codes: dict[str, int | None] = {}
        self.kept_logs: Path | None = None
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.nodes: list[Node] = []
        self.leaked: list[str] = []

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        # the scenario's deadline must not cut the clean-up short (it has its own bounds)
        remaining, _ = signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            self.cleanup()
        finally:
            if remaining > 0:
                signal.setitimer(signal.ITIMER_REAL, remaining)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        """Starts ``cmd``, its output in NAME.log."""
        proc = start_logged(cmd, self.root / f"{name}.log", env)
        self.procs.append((name, proc))
        return proc

    def node(self, name: str) -> Node:
        """An mgmtd node of this workspace (its prefix NAME, its log NAME.log, free
        loopback ports); stopped with the rest."""
        node = Node(name, self.path(name), free_port(), free_port())
        self.nodes.append(node)
        return node

    def log(self, name: str) -> str:
        try:
            return (self.root / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, proc: subprocess.Popen, timeout: float = 20) -> int | None:
        stop_processes([proc], timeout)
        return proc.returncode

    def cleanup(self, grace: float = 20) -> None:
        began = time.monotonic()
        named = self.procs + [(n.name, n.proc) for n in self.nodes if n.proc is not None]
        stop_processes([p for _, p in named], grace, signal.SIGKILL if self.kill else signal.SIGTERM)
        self.stop_seconds = time.monotonic() - began
        self.exit_codes = {name: p.returncode for name, p in named}
        self.leaked = kill_leftovers(str(self.root))
        unclean = self.leaked or (not self.kill and any(
            code not in (0, None) for code in self.exit_codes.values()))
        if unclean and KEEP_LOGS_IN is not None:
            self.kept_logs = KEEP_LOGS_IN / self.root.name
            self.kept_logs.mkdir(parents=True, exist_ok=True)
            for log in self.root.glob("*.log"):
                shutil.copy(log, self.kept_logs / log.name)
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


# --- statistics ------------------------------------------------------------------------------
def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile: the smallest sample with at least ``pct``%
    of the samples at or below it (p99 of 50 samples is the largest)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# --- other people's work -------------------------------------------------------------------------
class ForeignCpu:
    """How much of the machine's CPU went to processes that are not this
    benchmark (nor its waited-for children) between start and stop: other
    work on a shared machine inflates every figure."""

    def __init__(self) -> None:
        self.began = (time.monotonic(), self._busy(), self._ours())

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)

    @staticmethod
    def _ours() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def share(self) -> float:
        """Fraction of all CPUs (0..1) used by others since the start."""
        wall0, busy0, ours0 = self.began
        wall = time.monotonic() - wall0
        if wall <= 0:
            return 0.0
        others = (self._busy() - busy0) - (self._ours() - ours0)
        return max(0.0, others / (wall * (os.cpu_count() or 1)))
