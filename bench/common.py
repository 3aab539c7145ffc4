"""What every scenario needs: free loopback ports, deadlines, timed polling,
processes that are always cleaned up, and small statistics."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from mgmtd.supervisor.preflight import free_port  # noqa: F401  (bench.* import it from here)

# the integration tests' helpers for processes that may be gone: one copy for both
from tests.integration.cluster import (  # noqa: F401  (bench.* import them from here)
    children_of,
    cmdline_of,
    etcd_processes_under,
    kill_leftovers,
    kill_supervisor,
)

VENV_BIN = Path(sys.executable).parent
MGMTD = str(VENV_BIN / "mgmtd")
MGMTCTL = str(VENV_BIN / "mgmtctl")
ETCD = shutil.which("etcd") or "etcd"
ETCDCTL = shutil.which("etcdctl") or "etcdctl"
LOOPBACK = "127.0.0.1"
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


def wait_until(predicate: Callable[[], object], deadline: Deadline, what: str,
               interval: float = 0.05, limit: float | None = None):
    """Polls ``predicate`` until it returns something truthy; returns it."""
    end = time.monotonic() + limit if limit is not None else None
    while True:
        value = predicate()
        if value:
            return value
        if end is not None and time.monotonic() > end:
            raise ScenarioTimeout(f"{deadline.what}: gave up after {limit:.0f}s waiting for {what}")
        deadline.check(f"waiting for {what}")
        time.sleep(interval)


# --- ports --------------------------------------------------------------------------------
def url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


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

    def start(self, name: str, cmd: list[str], env: dict | None = None,
              stdin=subprocess.DEVNULL) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=stdin,
                                env={**os.environ, **(env or {})})
        log.close()
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        try:
            return (self.root / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, proc: subprocess.Popen, timeout: float = 20) -> int | None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def cleanup(self, grace: float = 20) -> None:
        began = time.monotonic()
        live = [p for _, p in self.procs if p.poll() is None]
        for proc in live:
            try:
                proc.send_signal(signal.SIGKILL if self.kill else signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.monotonic() + grace
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.stop_seconds = time.monotonic() - began
        self.exit_codes = {name: p.returncode for name, p in self.procs}
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


# --- clients --------------------------------------------------------------------------------
def etcdctl(endpoints: str, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run([ETCDCTL, "--endpoints", endpoints, "--dial-timeout", "2s",
                           "--command-timeout", f"{max(1, int(timeout))}s", *args],
                          capture_output=True, text=True, timeout=timeout + 5,
                          env={**os.environ, "ETCDCTL_API": "3"})


def mgmtctl(endpoints: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([MGMTCTL, "--endpoints", endpoints, *args], capture_output=True,
                          text=True, timeout=timeout)


def etcd_command(name: str, data_dir: Path, client_port: int, peer_port: int,
                 initial_cluster: str, state: str = "new", token: str = "bench") -> list[str]:
    """The stock etcd as mgmtd starts it (same flags, same logger)."""
    return [ETCD, "--name", name, "--data-dir", str(data_dir),
            "--listen-client-urls", url(client_port), "--advertise-client-urls", url(client_port),
            "--listen-peer-urls", url(peer_port), "--initial-advertise-peer-urls", url(peer_port),
            "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
            "--initial-cluster-token", token,
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"]


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
