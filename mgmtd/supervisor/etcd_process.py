"""The stock ``etcd`` binary as a child process: started, watched, re-logged,
stopped. Never embedded: a child can be killed and restarted on its own and
frees its ports when it goes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

import psutil

from mgmtd import log
from mgmtd.cluster.etcdapi import EtcdApi, EtcdApiError
from mgmtd.supervisor import child
from mgmtd.tls import TLSFiles

LOG = log.get("etcd")

# systemd's variables are for the supervisor only: etcd would notify systemd itself
STRIPPED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")

_LEVELS = {
    "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
    "warning": logging.WARNING, "error": logging.ERROR, "dpanic": logging.CRITICAL,
    "panic": logging.CRITICAL, "fatal": logging.CRITICAL,
}


# etcd warnings that say nothing an operator can act on in mgmtd's set-up: the
# planner retries refused member changes by design, and connections are news
LEVEL_OVERRIDES = {
    "simple token is not cryptographically signed": logging.DEBUG,
    "rejecting member add request; local member has not been connected to all peers, "
    "reconfigure breaks active quorum": logging.DEBUG,
    "rejecting member promote request; local member has not been connected to all peers, "
    "reconfigure breaks active quorum": logging.DEBUG,
    "rejecting member remove request; local member has not been connected to all peers, "
    "reconfigure breaks active quorum": logging.DEBUG,
    # a node that has no etcd user yet asks for one (mgmtd/cluster/access.py)
    "cannot find a user for permission check": logging.INFO,
    "established TCP streaming connection with remote peer": logging.INFO,
    "closed TCP streaming connection with remote peer": logging.INFO,
    "stopped TCP streaming connection with remote peer": logging.INFO,
}


REMOVED = "the member has been permanently removed from the cluster"


class EtcdStartError(Exception):
    """etcd did not come up; the message carries etcd's own last words."""


@dataclass
class EtcdConfig:
    binary: str
    name: str
    data_dir: str
    listen_client_urls: tuple[str, ...]
    advertise_client_urls: tuple[str, ...]
    listen_peer_urls: tuple[str, ...]
    advertise_peer_urls: tuple[str, ...]
    initial_cluster: str = ""               # "name=url,..."; empty = just this member
    initial_cluster_state: str = "new"
    cluster_token: str = "mgmtd"
    log_level: str = "warn"
    extra_args: tuple[str, ...] = field(default=())
    tls: TLSFiles | None = None

    def command(self) -> list[str]:
        initial = self.initial_cluster or ",".join(
            f"{self.name}={url}" for url in self.advertise_peer_urls)
        return [
            self.binary,
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client-urls", ",".join(self.listen_client_urls),
            "--advertise-client-urls", ",".join(self.advertise_client_urls),
            "--listen-peer-urls", ",".join(self.listen_peer_urls),
            "--initial-advertise-peer-urls", ",".join(self.advertise_peer_urls),
            "--initial-cluster", initial,
            "--initial-cluster-state", self.initial_cluster_state,
            "--initial-cluster-token", self.cluster_token,
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", self.log_level,
            # etcd keeps every revision until compacted: without this, exports and
            # host records would fill the 2 GiB quota and etcd would refuse all
            # writes (bench/scale.py: ~1 KiB per collecting host per export change).
            # An hour of history is far more than any watch here lags behind (a
            # collector that falls further resyncs from a fresh read).
            "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h",
            *self.tls_args(),
            *self.extra_args,
        ]

    def tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        files = self.tls
        return ["--cert-file", files.cert, "--key-file", files.key, "--trusted-ca-file", files.ca,
                "--client-cert-auth", "--peer-cert-file", files.cert, "--peer-key-file", files.key,
                "--peer-trusted-ca-file", files.ca, "--peer-client-cert-auth"]


def relog(line: str) -> None:
    """Re-emits one etcd log line (zap JSON) at its own level."""
    try:
        entry = json.loads(line)
        level = _LEVELS.get(str(entry.pop("level", "info")).lower(), logging.INFO)
        message = entry.pop("msg", "")
        level = LEVEL_OVERRIDES.get(message, level)
        if message == "rejected connection" and entry.get("error") == "EOF":
            # a client that hung up mid-handshake (a retry racing etcd's start); a
            # refused certificate says so in "error" and stays a warning
            level = logging.DEBUG
        for noise in ("ts", "caller", "stacktrace"):
            entry.pop(noise, None)
        details = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                           for k, v in entry.items())
        LOG.log(level, "%s%s", message, f" ({details})" if details else "")
    except (ValueError, AttributeError):
        text = line.rstrip()
        if text:
            LOG.log(plain_line_level(text), "%s", text)


def plain_line_level(text: str) -> int:
    """etcd writes a few lines outside its JSON log: a Go panic (its first line
    says why; the goroutine dump after it is for developers) and gRPC's own
    chatter."""
    if text.startswith(("panic:", "fatal error:")):
        return logging.ERROR
    if text.startswith(("goroutine ", "\t", " ", "created by ", "WARNING: ", "INFO: ")) or ".go:" in text:
        return logging.DEBUG
    return logging.INFO


class EtcdProcess:
    def __init__(self, config: EtcdConfig, pid_file: str, api: EtcdApi) -> None:
        self.config = config
        self.api = api              # the readiness probes, with this node's TLS files
        self.pid_file = pid_file
        self.proc: subprocess.Popen | None = None
        self.last_error = ""
        self.removed = False        # etcd said this member was removed from its cluster
        self.reader: threading.Thread | None = None

    @property
    def client_url(self) -> str:
        return self.config.advertise_client_urls[0]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def exit_reason(self) -> str:
        code = self.exit_code()
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return self.last_error or f"exit status {code}"

    def _read_stderr(self, stream) -> None:
        for raw in stream:
            line = raw.decode(errors="replace")
            try:
                entry = json.loads(line)
                level = entry.get("level")
                # the reason etcd gives up: an error-level message, or a warning with an error
                if level in ("error", "fatal", "panic") or (level == "warn" and entry.get("error")):
                    self.last_error = entry.get("error") or entry.get("msg", "")
                if REMOVED in line:
                    self.removed = True
            except (ValueError, AttributeError):
                pass
            relog(line)
        stream.close()

    def stop_leftover(self) -> None:
        """Stops an etcd a previous supervisor (killed without cleanup) left on
        our data dir; it is recognised by pid file, executable and command line."""
        try:
            with open(self.pid_file) as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            return
        try:
            proc = psutil.Process(pid)
            cmdline = proc.cmdline()
            is_ours = (os.path.basename(proc.exe()) == os.path.basename(self.config.binary)
                       and self.config.data_dir in cmdline)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            is_ours = False
        if is_ours:
            LOG.warning("stopping leftover etcd (pid %d) from a previous run", pid)
            try:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except psutil.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            except psutil.NoSuchProcess:
                pass  # it went by itself meanwhile: what we wanted
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass

    def start(self) -> None:
        self.stop_leftover()
        os.makedirs(os.path.dirname(self.config.data_dir), mode=0o700, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}
        self.last_error = ""
        self.removed = False
        command = self.config.command()
        LOG.debug("starting: %s", " ".join(command))
        self.proc = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True,
        )
        with open(self.pid_file + ".tmp", "w") as handle:
            handle.write(f"{self.proc.pid}\n")
        os.replace(self.pid_file + ".tmp", self.pid_file)
        self.reader = threading.Thread(target=self._read_stderr, args=(self.proc.stderr,),
                                       name="etcd-log", daemon=True)
        self.reader.start()
        LOG.info("started etcd (pid %d) serving %s", self.proc.pid, ",".join(
            self.config.advertise_client_urls))

    def wait_ready(self, timeout: float, status_only: bool = False,
                   stopping: threading.Event | None = None) -> None:
        """Waits until etcd answers /health (or, for a joining member, its status
        endpoint); raises EtcdStartError when it exits or the deadline passes."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while time.monotonic() < deadline:
            if not self.running():
                self._join_reader()
                detail = self.exit_reason()
                raise EtcdStartError(f"etcd exited during start-up: {detail}")
            if status_only:
                try:
                    self.api.status(self.client_url, timeout=1.0)
                    return
                except EtcdApiError:
                    pass
            elif self.api.healthy(self.client_url, timeout=1.0):
                return
            if stopping is not None and stopping.wait(delay):
                raise EtcdStartError("stopped while waiting for etcd")
            if stopping is None:
                time.sleep(delay)  # bounded by the deadline above
            delay = min(delay * 1.5, 0.05)  # start-up is on the critical path of forming a cluster
        raise EtcdStartError(f"etcd did not become healthy within {timeout:.0f}s"
                             + (f": {self.last_error}" if self.last_error else ""))

    def _join_reader(self) -> None:
        if self.reader is not None:
            self.reader.join(timeout=2)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # SIGCONT: a stopped etcd must run to obey
            child.stop(self.proc, "etcd", timeout, LOG, (signal.SIGTERM, signal.SIGCONT))
        self._join_reader()
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait(timeout=5)


def find_binary(name: str) -> str | None:
    if os.sep in name:
        return name if os.access(name, os.X_OK) else None
    return shutil.which(name)
