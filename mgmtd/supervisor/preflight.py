"""Checks before a node starts, and what a node remembers across restarts."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import uuid


class StartupError(Exception):
    """The node cannot start; the message is the one line the user sees."""


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class PortAllocator:
    """Hands out free TCP ports, never the same one twice. A port handed out is
    not bound yet (an etcd started later binds it), so only memory of what was
    handed out keeps the next one from being the same: whoever asks for
    several ports (a test session, a benchmark) holds one allocator for all of
    them."""

    def __init__(self) -> None:
        self.handed_out: set[int] = set()
        self.lock = threading.Lock()

    def free_port(self, host: str = "127.0.0.1") -> int:
        """A free TCP port below the kernel's ephemeral range, never one this
        allocator handed out before. In that range a client retrying a port
        nothing listens on yet can be given that very port as its own (TCP
        self-connect), and the etcd meant to listen there then cannot bind it."""
        with self.lock:
            for _ in range(1000):
                port = random.randrange(10000, _ephemeral_low())
                if port not in self.handed_out and _bindable(host, port):
                    self.handed_out.add(port)
                    return port
        raise OSError(f"no free port on {host} below the ephemeral range")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_port_free(url: str) -> None:
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname or "0.0.0.0", parsed.port
    if port is None:
        raise StartupError(f"URL {url} has no port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise StartupError(f"{host}:{port} is already in use (another etcd or mgmtd?); "
                                   "stop it or choose other --client-urls/--server-urls") from None
            raise StartupError(f"cannot listen on {host}:{port}: {err.strerror}") from None


def check_prefix(prefix: str) -> None:
    try:
        os.makedirs(prefix, mode=0o700, exist_ok=True)
        os.chmod(prefix, 0o700)  # etcd data and node state: nobody else's business
        with tempfile.TemporaryFile(dir=prefix):
            pass
    except OSError as err:
        raise StartupError(f"cannot use prefix {prefix}: {err.strerror}") from None


class NodeState:
    """What this node remembers across restarts, in ``{prefix}/node.json``: its
    instance id (a restart may take over its own registration, a stranger may
    not) and the cluster's client URLs (a node that was ever in a cluster never
    bootstraps a new one by itself)."""

    def __init__(self, prefix: str) -> None:
        self.path = os.path.join(prefix, "node.json")
        try:
            with open(self.path) as handle:
                raw = json.load(handle)
        except (OSError, ValueError):
            raw = {}
        self.instance: str = raw.get("instance") or uuid.uuid4().hex
        self.endpoints: list[str] = list(raw.get("endpoints", []))
        # the cluster this node's member data belongs to (cluster/generation.py), the
        # last revision it saw, a generation a restore left to write, and how the node
        # was run (what ``mgmtd restore`` needs with the supervisor stopped)
        self.cluster_id: int = _whole(raw.get("cluster_id"))
        self.generation: int = _whole(raw.get("generation"))
        self.revision: int = _whole(raw.get("revision"))
        self.restored_generation: int = _whole(raw.get("restored_generation"))
        self.node: dict = raw.get("node") if isinstance(raw.get("node"), dict) else {}
        self.save()

    def save(self) -> None:
        temp = self.path + ".tmp"
        with open(temp, "w") as handle:
            json.dump({"instance": self.instance, "endpoints": self.endpoints, "cluster_id": self.cluster_id,
                       "generation": self.generation, "revision": self.revision,
                       "restored_generation": self.restored_generation, "node": self.node}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)

    def remember(self, endpoints: list[str]) -> None:
        if endpoints and sorted(endpoints) != sorted(self.endpoints):
            self.endpoints = sorted(endpoints)
            self.save()


def _whole(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlparse(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def check_graph(path: str) -> None:
    """Validates the graph before anything starts, in a short-lived child: the
    supervisor runs for months and should not keep a big graph's memory."""
    out = subprocess.run([sys.executable, "-P", "-m", "mgmtd.cli", "validate", path], capture_output=True,
                         text=True, timeout=300)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"cannot validate {path}"]
        raise StartupError(lines[-1].removeprefix("mgmtd: "))


def lock_prefix(prefix: str) -> int:
    """Takes the prefix for this process (two supervisors on one prefix would
    fight over one etcd); the lock goes with the process, however it ends."""
    path = os.path.join(prefix, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StartupError(f"prefix {prefix} is in use by another mgmtd (pid {holder}); "
                           "every node needs its own --prefix") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
