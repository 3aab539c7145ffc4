"""Helpers for integration tests (and the bench): free loopback ports, mgmtd
nodes as real subprocesses, signalling and killing processes that may be gone
by then, and a check that nothing a test started outlives it."""

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


# --- processes that may be gone -------------------------------------------------------
# Any process a test looks at may exit between being listed and being used (a
# child of a node that is restarting, an etcd being replaced): every helper
# below treats "gone" as an answer, never as an error. ZombieProcess is a
# NoSuchProcess; AccessDenied means the pid now belongs to someone else's process.
GONE = (psutil.NoSuchProcess, psutil.AccessDenied)
ProcessRef = int | psutil.Process


def _handle(proc: ProcessRef) -> psutil.Process | None:
    if isinstance(proc, psutil.Process):
        return proc
    try:
        return psutil.Process(proc)
    except GONE:
        return None


def gone(proc: ProcessRef) -> bool:
    """No such process any more, or only a zombie waiting to be reaped."""
    handle = _handle(proc)
    try:
        return handle is None or not handle.is_running() or handle.status() == psutil.STATUS_ZOMBIE
    except GONE:
        return True


def send_signal(proc: ProcessRef, sig: int) -> bool:
    """Signals the process; False when it is gone (psutil refuses a reused pid)."""
    handle = _handle(proc)
    if handle is None:
        return False
    try:
        handle.send_signal(sig)
        return True
    except GONE:
        return False


def children_of(pid: ProcessRef, recursive: bool = True) -> list[psutil.Process]:
    """The process's children (all descendants by default); [] when it is gone."""
    handle = _handle(pid)
    try:
        return handle.children(recursive=recursive) if handle is not None else []
    except GONE:
        return []


def cmdline_of(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except GONE:
        return []


def exe_name(proc: psutil.Process) -> str:
    """The basename of the process's executable; "" when it is gone."""
    try:
        return os.path.basename(proc.exe() or (proc.cmdline() or [""])[0])
    except GONE:
        return ""


def environ_of(proc: psutil.Process) -> dict[str, str] | None:
    try:
        return proc.environ()
    except GONE:
        return None


def signal_tree(pid: ProcessRef, sig: int) -> list[psutil.Process]:
    """Signals the process and every descendant (listed first: once the root is
    gone its children are no longer its children). Returns those signalled."""
    root = _handle(pid)
    if root is None:
        return []
    family = [root, *children_of(root)]
    return [proc for proc in family if send_signal(proc, sig)]


def freeze_tree(pid: ProcessRef) -> list[psutil.Process]:
    """SIGSTOPs the process and its descendants until a listing finds no new one:
    a stopped process cannot start a child (a supervisor would restart the etcd
    that was just killed). Returns the frozen processes."""
    root = _handle(pid)
    if root is None or not send_signal(root, signal.SIGSTOP):
        return []
    frozen = {root.pid: root}
    for _ in range(100):  # each pass stops one more generation; trees are shallow
        new = [p for p in children_of(root) if p.pid not in frozen]
        if not new:
            break
        for proc in new:
            send_signal(proc, signal.SIGSTOP)  # one that is gone is simply not listed again
            frozen[proc.pid] = proc
    return [p for p in frozen.values() if not gone(p)]


def wait_gone(procs: list[psutil.Process], timeout: float, what: str) -> None:
    wait_for(lambda: all(gone(p) for p in procs), timeout, what)


def kill_tree(pid: ProcessRef, timeout: float = 10) -> list[psutil.Process]:
    """SIGKILLs the process and every descendant, frozen first so that none is
    replaced meanwhile, and waits until each is gone (a zombie counts). Returns
    those killed; a process that had already exited is simply not among them."""
    killed = [proc for proc in freeze_tree(pid) if send_signal(proc, signal.SIGKILL)]
    wait_gone(killed, timeout, f"pid {pid if isinstance(pid, int) else pid.pid} and its descendants to die")
    return killed


def kill_supervisor(proc: subprocess.Popen, prefix: str) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """SIGKILLs a node's supervisor and its etcd (in a session of its own, it
    would outlive the supervisor), not its engine, which must go by itself when
    its stdin closes. The supervisor is stopped first, so that it cannot replace
    its etcd meanwhile. Returns the supervisor's descendants and the etcds found."""
    proc.send_signal(signal.SIGSTOP)  # Popen's: a no-op once it has exited
    children = children_of(proc.pid)
    etcds = etcd_processes_under(prefix)
    proc.kill()
    for etcd in etcds:
        send_signal(etcd, signal.SIGKILL)
    proc.wait(timeout=10)
    return children, etcds


def processes_under(directory: str) -> list[psutil.Process]:
    """Processes (other than this one) whose command line mentions the directory."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
        except GONE:
            continue
        if proc.pid != os.getpid() and any(directory in part for part in cmdline):
            found.append(proc)
    return found


def etcd_processes_under(directory: str) -> list[psutil.Process]:
    return [proc for proc in processes_under(directory) if exe_name(proc) == "etcd"]


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


def wait_full_rounds(node: Node, rounds: int = 1, timeout: float = 30) -> None:
    """Waits until the node's supervisor has made ``rounds`` complete passes of its
    main loop (a cluster round in each) that began after this call. A SIGHUP is
    logged ("reloading the graph") at the top of the pass that takes it, so the
    pass before the next logged SIGHUP is over. What a test asserts did not happen
    has had its chance to happen then: a positive event, not a guessed sleep."""
    for _ in range(rounds + 1):
        seen = node.log().count("reloading the graph")
        node.proc.send_signal(signal.SIGHUP)
        wait_for(lambda seen=seen: node.log().count("reloading the graph") > seen, timeout,
                 f"{node.name}'s supervisor to take a SIGHUP")


def kill_leftovers(directory: str, timeout: float = 10) -> list[str]:
    """Kills whatever a test left running under its directory; returns their
    descriptions (a non-empty list is a leak, i.e. a bug)."""
    leaked, killed = [], []
    for proc in processes_under(directory):
        described = " ".join(cmdline_of(proc))[:200]
        if described and send_signal(proc, signal.SIGKILL):
            leaked.append(f"pid {proc.pid}: {described}")
            killed.append(proc)
    # not psutil.wait_procs: it would reap our own children behind their Popen's back
    wait_gone(killed, timeout, f"leftovers under {directory} to die")
    return leaked


def mgmtctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([MGMTCTL, *args], capture_output=True, text=True, timeout=timeout)


def etcdctl(endpoint: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["etcdctl", "--endpoints", endpoint, *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "ETCDCTL_API": "3"})
