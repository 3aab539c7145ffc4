"""What every machine of the fleet needs from this host, and processes tied to
ours: a machine must never outlive the process that booted it."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil

SYSTEMD = "/lib/systemd/systemd"
TOOLS = ("unshare", "nsenter", "ip", "mount", "pivot_root", "systemctl", "journalctl")
_PR_SET_PDEATHSIG = 1
# loaded here, not in the child between fork and exec (other threads may hold locks then)
_LIBC = ctypes.CDLL(None, use_errno=True)


def unsupported_reason() -> str | None:
    """Why real machines cannot boot here, or None when they can."""
    if os.geteuid() != 0:
        return "booting systemd machines needs root (namespaces, mounts, veth links)"
    if not os.access(SYSTEMD, os.X_OK):
        return f"no systemd here ({SYSTEMD} missing)"
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem (each machine's disk is an overlay of this host's /)"
    try:
        own_cgroup2()
    except (RuntimeError, StopIteration, OSError):
        return "no cgroup2 hierarchy here (each machine's systemd gets a cgroup2 tree of its own)"
    return None


def start_tied(cmd: list[str], cgroup: Path | None = None, **kwargs) -> subprocess.Popen:
    """Starts ``cmd`` in a session of its own that is killed when this process dies
    (call it from the main thread: the tie is to the calling thread), in
    ``cgroup`` (a cgroup2 directory) if given."""
    def tie() -> None:
        # SIGKILL when the process that started it dies, however it dies: together with
        # unshare --kill-child this takes a whole machine down with the test run
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.setsid()
        if cgroup is not None:
            with open(cgroup / "cgroup.procs", "w") as procs:
                procs.write("0\n")

    return subprocess.Popen(cmd, preexec_fn=tie, **kwargs)  # noqa: PLW1509


def own_cgroup2() -> Path:
    """This process's directory in the cgroup2 hierarchy (mounted at /sys/fs/cgroup
    or, on hybrid hosts, /sys/fs/cgroup/unified)."""
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    mountpoint = next((m[1] for m in mounts if m[2] == "cgroup2"), None)
    if mountpoint is None:
        raise RuntimeError("no cgroup2 hierarchy mounted: machines need one of their own")
    own = next(line.split("::", 1)[1] for line in Path("/proc/self/cgroup").read_text().splitlines()
               if line.startswith("0::"))
    return Path(mountpoint) / own.lstrip("/")


def remove_cgroup(directory: Path, timeout: float = 30) -> None:
    """Removes a cgroup tree, deepest first, once its processes are gone."""
    deadline = time.monotonic() + timeout
    while directory.exists():
        try:
            for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                sub.rmdir()
            directory.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def processes_in(namespaces: set[str]) -> list[psutil.Process]:
    """Live processes (zombies aside) in any of these PID namespaces."""
    found = []
    for proc in psutil.process_iter():
        try:
            if pid_namespace(proc.pid) in namespaces and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def stop_process(proc: subprocess.Popen, sig: int, timeout: float) -> bool:
    """Sends ``sig`` and waits; True when it ended in time (an exited process is fine)."""
    if proc.poll() is not None:
        return True
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def kill_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    if not stop_process(proc, signal.SIGKILL, timeout):
        raise RuntimeError(f"pid {proc.pid} survived SIGKILL for {timeout:.0f} s")
