"""Helpers for integration tests: free loopback ports, mgmtd nodes as real
subprocesses, and a check that nothing a test started outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from mgmtd.supervisor.preflight import free_port  # noqa: F401  (the tests' ports too)

VENV_BIN = Path(sys.executable).parent
MGMTD = str(VENV_BIN / "mgmtd")
MGMTCTL = str(VENV_BIN / "mgmtctl")


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def one_file_graph(path: Path, target, content: str) -> str:
    """Writes a graph managing one file (``file[f]``) and returns its path."""
    path.write_text(f'graph: g\nresources:\n  file:\n  - name: f\n    path: "{target}"\n'
                    f'    content: "{content}"\n')
    return str(path)


def processes_under(directory: str) -> list[psutil.Process]:
    """etcd/mgmtd processes whose command line mentions the directory."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if proc.pid != os.getpid() and any(directory in part for part in cmdline):
            found.append(proc)
    return found


def etcd_processes_under(directory: str) -> list[psutil.Process]:
    out = []
    for proc in processes_under(directory):
        try:
            if os.path.basename(proc.exe()) == "etcd":
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


@dataclass
class Node:
    name: str
    prefix: Path
    client_port: int
    peer_port: int
    address: str = "127.0.0.1"
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def client_url(self) -> str:
        return f"http://{self.address}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{self.peer_port}"

    def command(self, frontend: list[str], *args: str) -> list[str]:
        return [MGMTD, "run", "--hostname", self.name, "--prefix", str(self.prefix),
                "--client-urls", self.client_url, "--server-urls", self.peer_url,
                *self.extra, *args, *frontend]

    def start(self, frontend: list[str], *args: str, env: dict | None = None) -> subprocess.Popen:
        self.log_path = self.prefix.parent / f"{self.name}.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(frontend, *args), stdout=log, stderr=log,
                                     env={**os.environ, **(env or {})})
        log.close()
        return self.proc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def kill_leftovers(directory: str) -> list[str]:
    """Kills whatever a test left running under its directory; returns their
    descriptions (a non-empty list is a leak, i.e. a bug)."""
    leaked = []
    for proc in processes_under(directory):
        try:
            leaked.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:200]}")
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    return leaked


def mgmtctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([MGMTCTL, *args], capture_output=True, text=True, timeout=timeout)


def etcdctl(endpoint: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["etcdctl", "--endpoints", endpoint, *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "ETCDCTL_API": "3"})
