"""``mgmtd run``: the supervisor. Owns this node's place in the cluster: its
etcd child, its registration, the engine child, and an orderly stop."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field

from mgmtd import __version__, log, protocol
from mgmtd.cluster import gateway
from mgmtd.cluster.client import connect
from mgmtd.cluster.keys import Keys
from mgmtd.engine.main import load_spec
from mgmtd.supervisor.backoff import Backoff
from mgmtd.supervisor.engine_process import EngineProcess
from mgmtd.supervisor.etcd_process import EtcdConfig, EtcdProcess, EtcdStartError, find_binary
from mgmtd.yamlgraph.errors import GraphError

LOG = log.get("supervisor")

LEASE_TTL = 10
TICK = 0.5


class StartupError(Exception):
    """The node cannot start; the message is the one line the user sees."""


@dataclass
class NodeConfig:
    hostname: str
    prefix: str
    client_urls: tuple[str, ...] = ("http://127.0.0.1:2379",)
    server_urls: tuple[str, ...] = ("http://127.0.0.1:2380",)
    advertise_client_urls: tuple[str, ...] = ()
    advertise_server_urls: tuple[str, ...] = ()
    namespace: str = "/mgmtd"
    graph_file: str | None = None
    converged_timeout: float | None = None
    noop: bool = False
    etcd_binary: str = "etcd"
    log_level: str = "info"
    ideal_cluster_size: int = 5
    etcd_start_timeout: float = 30.0
    engine_args: list[str] = field(default_factory=list)

    @property
    def advertised_clients(self) -> tuple[str, ...]:
        return self.advertise_client_urls or self.client_urls

    @property
    def advertised_peers(self) -> tuple[str, ...]:
        return self.advertise_server_urls or self.server_urls


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
        with tempfile.TemporaryFile(dir=prefix):
            pass
    except OSError as err:
        raise StartupError(f"cannot use prefix {prefix}: {err.strerror}") from None


class Supervisor:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.keys = Keys(config.namespace)
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.etcd: EtcdProcess | None = None
        self.engine: EngineProcess | None = None
        self.client = None
        self.lease = None
        self.engine_state = protocol.EngineState(state="starting")
        self.state_changed = threading.Event()
        self.registered_value = ""
        self.membership: protocol.Membership | None = None
        self.cluster_initialised = False
        self.etcd_unreachable = False

    # --- start-up ---------------------------------------------------------------
    def preflight(self) -> None:
        cfg = self.config
        check_prefix(cfg.prefix)
        binary = find_binary(cfg.etcd_binary)
        if binary is None:
            raise StartupError(f"etcd binary {cfg.etcd_binary!r} not found: install etcd >= 3.4 "
                               "(Debian: apt-get install etcd-server) or pass --etcd-binary PATH")
        cfg.etcd_binary = binary
        try:
            load_spec(cfg.graph_file)
        except GraphError as err:
            raise StartupError(str(err)) from None
        self.etcd = EtcdProcess(self._etcd_config(), os.path.join(cfg.prefix, "etcd.pid"))
        self.etcd.stop_leftover()
        for url in (*cfg.client_urls, *cfg.server_urls):
            check_port_free(url)

    def _etcd_config(self) -> EtcdConfig:
        cfg = self.config
        debug = cfg.log_level == "debug"
        return EtcdConfig(
            binary=cfg.etcd_binary, name=cfg.hostname, data_dir=os.path.join(cfg.prefix, "etcd"),
            listen_client_urls=cfg.client_urls, advertise_client_urls=cfg.advertised_clients,
            listen_peer_urls=cfg.server_urls, advertise_peer_urls=cfg.advertised_peers,
            cluster_token=f"mgmtd-{cfg.hostname}", log_level="info" if debug else "warn",
        )

    def _start_etcd(self) -> None:
        self.etcd.start()
        self.etcd.wait_ready(self.config.etcd_start_timeout)
        LOG.info("etcd is ready at %s", self.etcd.client_url)

    def _engine_args(self) -> list[str]:
        cfg = self.config
        args = ["--hostname", cfg.hostname, "--namespace", cfg.namespace, "--log-level",
                cfg.log_level, "--stdin-membership", "--report-state"]
        if cfg.converged_timeout is not None:
            args += ["--converged-timeout", str(cfg.converged_timeout)]
        if cfg.noop:
            args.append("--noop")
        args += cfg.engine_args
        args += ["yaml", cfg.graph_file] if cfg.graph_file else ["empty"]
        return args

    # --- etcd bookkeeping ---------------------------------------------------------
    def _connect(self) -> None:
        self.client = connect(list(self.config.advertised_clients))

    def _ensure_lease(self) -> None:
        try:
            if self.lease is not None:
                refreshed = list(self.lease.refresh())
                if refreshed and refreshed[0].TTL > 0:
                    return
        except Exception as err:  # the lease is gone (etcd restarted, expired)
            LOG.debug("lease refresh failed: %s", err)
        self.lease = self.client.lease(LEASE_TTL)
        self.registered_value = ""

    def _register(self) -> None:
        cfg = self.config
        value = json.dumps({
            "host": cfg.hostname, "role": "server", "pid": os.getpid(), "version": __version__,
            "client_urls": list(cfg.advertised_clients), "peer_urls": list(cfg.advertised_peers),
            "engine": {k: v for k, v in vars(self.engine_state).items()},
        }, sort_keys=True, default=list)
        if value != self.registered_value:
            self.client.put(self.keys.host(cfg.hostname), value, lease=self.lease)
            self.registered_value = value

    def _campaign(self) -> None:
        client = self.client
        key = self.keys.leader
        client.transaction(
            compare=[client.transactions.create(key) == 0],
            success=[client.transactions.put(key, self.config.hostname, lease=self.lease)],
            failure=[],
        )

    def _init_cluster(self) -> None:
        self.client.put_if_not_exists(self.keys.ideal_size, str(self.config.ideal_cluster_size))

    def _membership(self) -> protocol.Membership:
        _, members = gateway.member_list(self.etcd.client_url)
        voters = [m for m in members if not m.is_learner]
        leader = self.client.get(self.keys.leader)[0]
        ideal = self.client.get(self.keys.ideal_size)[0]
        return protocol.Membership(
            endpoints=tuple(url for m in voters for url in m.client_urls),
            members=tuple(m.name for m in voters),
            leader=leader.decode() if leader else "",
            ideal_size=int(ideal) if ideal else 0,
        )

    def _sync_cluster(self) -> None:
        if not self.cluster_initialised:
            self._init_cluster()
            self.cluster_initialised = True
        self._ensure_lease()
        self._register()
        self._campaign()
        membership = self._membership()
        if membership != self.membership:
            self.membership = membership
            self.engine.send(membership)

    # --- signals / engine reports ------------------------------------------------------
    def _on_engine_state(self, state: protocol.EngineState) -> None:
        if state.state != self.engine_state.state:
            LOG.info("engine is %s (%d/%d resources in state)", state.state, state.ok,
                     state.resources)
        self.engine_state = state
        self.state_changed.set()

    def _install_signals(self) -> None:
        def stop(signum, _frame):
            LOG.info("received %s: stopping", signal.Signals(signum).name)
            self.stopping.set()
            self.state_changed.set()

        def reload(_signum, _frame):
            self.reload_requested.set()
            self.state_changed.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    # --- the loop ----------------------------------------------------------------------
    def run(self) -> int:
        self.preflight()
        self._install_signals()
        try:
            self._start_etcd()
            self._connect()
            self.engine = EngineProcess(self._engine_args(), self._on_engine_state)
            self.engine.start()
            self._try_sync_cluster()
            return self._loop()
        except EtcdStartError as err:
            raise StartupError(str(err)) from None
        finally:
            self.shutdown()

    def _loop(self) -> int:
        etcd_restarts, engine_restarts = Backoff(), Backoff()
        while not self.stopping.is_set():
            self.state_changed.wait(TICK)
            self.state_changed.clear()
            if self.stopping.is_set():
                break
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                LOG.info("reloading the graph")
                self.engine.reload()
            if not self.etcd.running():
                delay = etcd_restarts.next_delay()
                LOG.error("etcd exited (%s); restarting in %.1fs",
                          self.etcd.last_error or f"status {self.etcd.exit_code()}", delay)
                if self.stopping.wait(delay):
                    break
                try:
                    self._start_etcd()
                    etcd_restarts.reset()
                except EtcdStartError as err:
                    LOG.error("%s", err)
                    self.etcd.kill()
                    continue
            if not self.engine.running():
                code = self.engine.exit_code()
                if self.config.converged_timeout is not None and code in (0, 1):
                    return code
                if code == 2:
                    LOG.error("the engine cannot load the graph; stopping")
                    return 2
                delay = engine_restarts.next_delay()
                LOG.error("engine exited with status %s; restarting in %.1fs", code, delay)
                if self.stopping.wait(delay):
                    break
                self.engine.start()
            if self._try_sync_cluster() and self.engine_state.state in ("converged", "converging"):
                engine_restarts.reset()
        return 0

    def _try_sync_cluster(self) -> bool:
        try:
            self._sync_cluster()
            if self.etcd_unreachable:
                LOG.info("etcd is reachable again")
            self.etcd_unreachable = False
            return True
        except Exception as err:  # etcd briefly unavailable: keep going, say so once
            if not self.etcd_unreachable:
                LOG.warning("cannot reach etcd: %s", err)
            self.etcd_unreachable = True
            self.lease = None
            self._safe_connect()
            return False

    def _safe_connect(self) -> None:
        try:
            if self.client is not None:
                self.client.close()
            self._connect()
        except Exception as err:
            LOG.debug("reconnect failed: %s", err)

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.stop()
        if self.lease is not None:
            try:
                self.lease.revoke()
            except Exception as err:
                LOG.debug("lease revoke failed: %s", err)
        if self.client is not None:
            self.client.close()
        if self.etcd is not None:
            self.etcd.stop()

