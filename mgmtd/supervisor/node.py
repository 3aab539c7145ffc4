"""``mgmtd run``: the supervisor. Owns this node's place in the cluster: its
etcd child (only while this node is a server member), its registration, the
engine child, and an orderly stop."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading

from mgmtd import log, protocol
from mgmtd.backoff import Backoff
from mgmtd.cluster.access import Access
from mgmtd.cluster.etcdapi import EtcdApiError
from mgmtd.cluster.keys import Keys
from mgmtd.supervisor.config import NodeConfig
from mgmtd.supervisor.engine_process import EngineProcess
from mgmtd.supervisor.etcd_process import EtcdConfig, EtcdProcess, EtcdStartError, find_binary
from mgmtd.supervisor.membership import ClusterMembership, DuplicateHost, Identity, Round
from mgmtd.supervisor.notify import Notifier
from mgmtd.supervisor.preflight import (
    NodeState,
    StartupError,
    check_graph,
    check_port_free,
    check_prefix,
    free_port,
    is_loopback,
    lock_prefix,
)
from mgmtd.supervisor.rounds import ClusterRounds, merge
from mgmtd.tls import TLSFiles, check_host_name, common_name

LOG = log.get("supervisor")

TICK = 0.5          # seconds between rounds when nothing is moving
FAST_TICK = 0.1     # while a membership change is under way


class Supervisor(ClusterRounds):
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.keys = Keys(config.namespace)
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.wake = threading.Event()
        self.etcd: EtcdProcess | None = None
        self.engine: EngineProcess | None = None
        self.client = None
        self.client_endpoints: tuple[str, ...] = ()
        self.engine_state = protocol.EngineState(state="starting")
        self.state: NodeState | None = None
        self.membership: ClusterMembership | None = None
        self.serving = False                # this node's etcd should run
        self.bootstrapped = False
        self.sent_membership: protocol.Membership | None = None
        self.cluster_endpoints: list[str] = []
        self.unreachable_since: float | None = None
        self.last_round = Round()
        self.notifier = Notifier()
        self.last_error = ""
        self.quorum_lost = ""
        self.access: Access | None = None
        self.join_asked_at: float | None = None

    # --- start-up ---------------------------------------------------------------
    def preflight(self) -> None:
        cfg = self.config
        urls = (*cfg.client_urls, *cfg.server_urls, *cfg.advertise_client_urls,
                *cfg.advertise_server_urls, *cfg.seeds)
        if cfg.tls is not None and any(u.startswith("http://") for u in urls):
            raise StartupError("with --tls-* every URL must be https:// (client, server and seed URLs)")
        if cfg.tls is None and any(u.startswith("https://") for u in urls):
            raise StartupError("https:// URLs need --tls-ca, --tls-cert and --tls-key")
        if cfg.no_server and not cfg.seeds:
            raise StartupError("--no-server needs --seeds: a client-only node must know the cluster")
        if cfg.tls is not None:
            self._check_identity(cfg.tls)
        check_prefix(cfg.prefix)
        self.prefix_lock = lock_prefix(cfg.prefix)
        binary = find_binary(cfg.etcd_binary)
        if binary is None and not cfg.no_server:
            raise StartupError(f"etcd binary {cfg.etcd_binary!r} not found: install etcd >= 3.4 "
                               "(Debian: apt-get install etcd-server) or pass --etcd-binary PATH")
        cfg.etcd_binary = binary or cfg.etcd_binary
        if cfg.graph_file is not None:
            check_graph(cfg.graph_file)
        self.state = NodeState(cfg.prefix)
        self.etcd = EtcdProcess(self._etcd_config(), os.path.join(cfg.prefix, "etcd.pid"))
        self.etcd.stop_leftover()
        if not cfg.no_server:
            for url in (*cfg.client_urls, *cfg.server_urls):
                check_port_free(url)
            exposed = [u for u in (*cfg.client_urls, *cfg.server_urls) if not is_loopback(u)]
            if exposed and cfg.tls is None:
                LOG.warning("etcd serves %s without TLS: anyone who can reach it can change this "
                            "cluster and make every node write files or run commands", ",".join(exposed))
        self.membership = ClusterMembership(
            Identity(cfg.hostname, self.state.instance, cfg.advertised_clients, cfg.advertised_peers,
                     may_serve=not cfg.no_server),
            self.keys, cfg.grace_period, cfg.learner_deadline, endpoints=lambda: self.cluster_endpoints,
            access=self.access)

    def _check_identity(self, files: TLSFiles) -> None:
        """etcd takes the user from the certificate's name: it must be this host's."""
        name = self.config.hostname
        try:
            check_host_name(name)
            certified = common_name(files.cert)
        except ValueError as err:
            raise StartupError(f"--hostname/--tls-cert: {err}") from None
        if certified != name:
            raise StartupError(f"--tls-cert {files.cert} is for {certified!r}, but --hostname is {name!r}: "
                               f"issue this node's own with 'mgmtd certs issue {name}'")
        self.access = Access(self.keys, files.ca)

    def has_member_data(self) -> bool:
        return os.path.isdir(os.path.join(self.data_dir, "member"))

    def _etcd_config(self, initial_cluster: str = "", state: str = "new") -> EtcdConfig:
        cfg = self.config
        debug = cfg.log_level == "debug"
        return EtcdConfig(
            binary=cfg.etcd_binary, name=cfg.hostname, data_dir=self.data_dir,
            listen_client_urls=cfg.client_urls, advertise_client_urls=cfg.advertised_clients,
            listen_peer_urls=cfg.server_urls, advertise_peer_urls=cfg.advertised_peers,
            initial_cluster=initial_cluster, initial_cluster_state=state,
            cluster_token=f"mgmtd-{cfg.hostname}", log_level="info" if debug else "warn",
            tls=cfg.tls,
        )

    def _engine_args(self) -> list[str]:
        cfg = self.config
        args = ["--hostname", cfg.hostname, "--namespace", cfg.namespace, "--log-level",
                cfg.log_level, "--stdin-membership", "--report-state"]
        if cfg.converged_timeout is not None:
            args += ["--converged-timeout", str(cfg.converged_timeout)]
        if cfg.noop:
            args.append("--noop")
        if cfg.tls is not None:
            args += cfg.tls.args()
        args += cfg.engine_args
        args += ["yaml", cfg.graph_file] if cfg.graph_file else ["empty"]
        return args

    def _first_role(self) -> None:
        cfg = self.config
        if not cfg.no_server and self.has_member_data():
            LOG.info("found etcd member data: rejoining as a server")
            self.serving = True
            try:
                self._start_etcd(joining=True)
            except EtcdStartError:
                if not self.etcd.removed:
                    raise
                # removed while we were away: start afresh as a client and volunteer
                self.etcd.kill()
                self._stop_serving()
        elif not cfg.seeds and not self.state.endpoints:
            if cfg.no_server:
                raise StartupError("--no-server needs --seeds")
            LOG.info("no seeds and no data: bootstrapping a new cluster")
            self.serving = True
            self.bootstrapped = True
            if self.access is not None:
                self._bootstrap_with_auth()
            else:
                self._start_etcd(joining=False)
        else:
            LOG.info("joining the cluster at %s as a client",
                     ",".join(cfg.seeds or self.state.endpoints))
        self.cluster_endpoints = list(self.state.endpoints or cfg.seeds)
        if self.serving:
            self.cluster_endpoints = merge(self.config.advertised_clients, self.cluster_endpoints)

    def _bootstrap_with_auth(self) -> None:
        """The new etcd first listens where only this host can reach it, gets its
        users and roles and auth turned on, and only then listens where the
        other nodes can: none of them ever sees it without auth."""
        public = self.etcd.config
        private = (f"https://127.0.0.1:{free_port()}",)
        self.etcd.config = dataclasses.replace(public, listen_client_urls=private,
                                               advertise_client_urls=private)
        self._start_etcd(joining=False)
        try:
            self.access.enable(self.etcd.client_url, self.config.hostname)
        except EtcdApiError as err:
            raise StartupError(f"cannot set up etcd's users and roles: {err}") from None
        self.etcd.stop()
        self.etcd.config = public
        self._start_etcd(joining=False)
        LOG.info("etcd auth is on: each node may write only its own keys")

    # --- signals / engine reports ------------------------------------------------------
    def _on_engine_state(self, state: protocol.EngineState) -> None:
        if state.state != self.engine_state.state:
            LOG.info("engine is %s (%d/%d resources in state)", state.state, state.ok,
                     state.resources)
        self.engine_state = state
        self.wake.set()

    def _install_signals(self) -> None:
        def stop(signum, _frame):
            LOG.info("received %s: stopping", signal.Signals(signum).name)
            self.stopping.set()
            self.wake.set()

        def reload(_signum, _frame):
            self.reload_requested.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    # --- the loop ----------------------------------------------------------------------
    def run(self) -> int:
        self.preflight()
        self._install_signals()
        try:
            self._first_role()
            self.engine = EngineProcess(self._engine_args(), self._on_engine_state)
            self.engine.start()
            self._cluster_round()
            return self._loop()
        except EtcdStartError as err:
            if self.stopping.is_set():
                return 0
            raise StartupError(str(err)) from None
        except DuplicateHost as err:
            raise StartupError(str(err)) from None
        finally:
            self.shutdown()

    def _loop(self) -> int:
        etcd_restarts, engine_restarts = Backoff(), Backoff()
        while not self.stopping.is_set():
            busy = self._membership_moving()
            self.wake.wait(self.notifier.tick(FAST_TICK if busy else TICK))
            self.wake.clear()
            self.notifier.watchdog()
            if self.stopping.is_set():
                break
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                LOG.info("reloading the graph")
                self.notifier.reloading()
                self.engine.reload()
                self.notifier.reloaded()
            if self.serving and not self.etcd.running():
                if not self._restart_etcd(etcd_restarts):
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
            if self._cluster_round() and self.engine_state.state in ("converged", "converging"):
                engine_restarts.reset()
            self._report()
        return 0

    def _report(self) -> None:
        """READY and STATUS for systemd (and the same line in mgmtctl's host record)."""
        if self.engine_state.graph_loaded and self.unreachable_since is None:
            self.notifier.ready()
        self.notifier.status(self.status_line())

    def status_line(self) -> str:
        round_ = self.last_round
        voters = sum(1 for m in round_.members if not m.is_learner and m.name)
        role = "server" if self.serving else "client"
        if round_.is_leader:
            role += ", leader"
        engine = self.engine_state
        parts = [f"{role}; {voters}/{round_.ideal_size or '?'} voters; engine {engine.state} "
                 f"({engine.ok}/{engine.resources} in state)"]
        if self.quorum_lost:
            parts.append(f"QUORUM LOST: {self.quorum_lost}")
        elif self.unreachable_since is not None:
            parts.append("cluster unreachable")
        if round_.ideal_problem:
            parts.append(round_.ideal_problem)
        if self.last_error:
            parts.append(f"last error: {self.last_error}")
        return "; ".join(parts)

    def _restart_etcd(self, backoff: Backoff) -> bool:
        detail = self.etcd.exit_reason()
        if self.etcd.removed:
            LOG.warning("etcd says this member was removed from the cluster (%s)", detail)
            self._stop_serving()
            return True
        delay = backoff.next_delay()
        LOG.error("etcd exited (%s); restarting in %.1fs", detail, delay)
        if self.stopping.wait(delay):
            return False
        # the cluster may have removed us meanwhile: ask before restarting
        self._cluster_round()
        if not self.serving:
            return True
        try:
            self._start_etcd(joining=True)
            backoff.reset()
        except EtcdStartError as err:
            LOG.error("%s", err)
            self.etcd.kill()
            return False
        return True

    def shutdown(self) -> None:
        self.notifier.stopping()
        if self.engine is not None:
            self.engine.stop()
        if self.membership is not None and self.client is not None:
            self.membership.withdraw(self.client)
        if self.client is not None:
            self.client.close()
        if self.etcd is not None:
            self.etcd.stop()
