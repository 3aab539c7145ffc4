"""``mgmtd run``: the supervisor. Owns this node's place in the cluster: its
etcd child (only while this node is a server member), its registration, the
engine child, and an orderly stop."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

from mgmtd import __version__, log, protocol
from mgmtd.backoff import Backoff
from mgmtd.cluster.access import Access
from mgmtd.cluster.assess import Settings
from mgmtd.cluster.etcdapi import EtcdApi
from mgmtd.cluster.keys import Keys, parse_ideal_size
from mgmtd.cluster.local import AskToJoin, NominateSelf, StartEtcd, StopServing
from mgmtd.cluster.loop import ClusterLoop, Round, merge
from mgmtd.cluster.presence import Identity
from mgmtd.cluster.store import DuplicateHost
from mgmtd.supervisor.config import NodeConfig
from mgmtd.supervisor.engine_process import EngineProcess
from mgmtd.supervisor.etcd_process import EtcdStartError, find_binary
from mgmtd.supervisor.local_etcd import LocalEtcd
from mgmtd.supervisor.metrics import Metrics, serve_metrics
from mgmtd.supervisor.notify import Notifier
from mgmtd.supervisor.preflight import (
    NodeState,
    StartupError,
    check_graph,
    check_port_free,
    check_prefix,
    is_loopback,
    lock_prefix,
)
from mgmtd.supervisor.recovery import Recovery
from mgmtd.tls import TLSFiles, check_host_name, common_name

LOG = log.get("supervisor")

TICK = 0.5          # seconds between rounds when nothing is moving
LEAVE_TIMEOUT = 10.0   # seconds a stop gives the cluster's farewell before stopping etcd anyway
FAST_TICK = 0.1     # while a membership change is under way


def max_runtime_over(max_runtime: float, elapsed: float) -> bool:
    """--max-runtime N: the node has run for N seconds (0: no limit)."""
    return max_runtime > 0 and elapsed >= max_runtime


class Stopping(BaseException):
    """A stop ends the block under way (see Supervisor._abortable). A
    BaseException, so that no handler of etcd's errors takes it for one."""


class Supervisor:
    """Composes the node: this node's etcd (``LocalEtcd``), the engine child,
    the cluster rounds (``ClusterLoop``) and systemd notifications."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.keys = Keys(config.namespace)
        self.api = EtcdApi(config.tls)   # every etcd call of the supervisor goes with its TLS files
        self.stopping = threading.Event()
        self.abortable = False   # the main thread is in an _abortable block
        self.reload_requested = threading.Event()
        self.restore_requested = threading.Event()   # SIGUSR1: mgmtctl restore
        self.recovery: Recovery | None = None
        self.wake = threading.Event()
        self.local: LocalEtcd | None = None
        self.engine: EngineProcess | None = None
        self.loop: ClusterLoop | None = None
        self.engine_state = protocol.EngineState(state="starting")
        self.state: NodeState | None = None
        self.sent_membership: protocol.Membership | None = None
        self.last_round: Round | None = None
        self.notifier = Notifier()
        self.last_error = ""
        self.access: Access | None = None
        self.metrics = Metrics()   # served only with --prometheus; kept up to date either way (cheap)

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
        self.local = LocalEtcd(cfg, self.stopping, self.api)
        self.local.process.stop_leftover()
        if not cfg.no_server:
            for url in (*cfg.client_urls, *cfg.server_urls):
                check_port_free(url)
            exposed = [u for u in (*cfg.client_urls, *cfg.server_urls) if not is_loopback(u)]
            if exposed and cfg.tls is None:
                LOG.warning("etcd serves %s without TLS: anyone who can reach it can change this "
                            "cluster and make every node write files or run commands", ",".join(exposed))
        self.loop = ClusterLoop(
            Identity(cfg.hostname, self.state.instance, cfg.advertised_clients, cfg.advertised_peers,
                     may_serve=not cfg.no_server),
            self.keys, Settings(cfg.grace_period, cfg.learner_deadline), endpoints=[],
            fallback=lambda: merge(self.state.endpoints, cfg.seeds), api=self.api, access=self.access,
            pid=os.getpid())
        self.recovery = Recovery(self)
        self.recovery.start()
        self.loop.before_change = self.recovery.before_change
        # which build runs, for an operator reading the journal during an upgrade (once the
        # checks passed: a refused start stays one line)
        LOG.info("mgmtd %s starting (pid %d)", __version__, os.getpid())
        if cfg.prometheus_listen is not None:
            serve_metrics(self.metrics, cfg.prometheus_listen, cfg.tls, cfg.prometheus_insecure)

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
        self.access = Access(self.keys, files.ca, self.api)

    def _engine_args(self) -> list[str]:
        cfg = self.config
        args = ["--hostname", cfg.hostname, "--namespace", cfg.namespace, "--log-level",
                cfg.log_level, "--stdin-membership", "--report-state", "--prefix", cfg.prefix]
        if cfg.converged_timeout is not None:
            args += ["--converged-timeout", str(cfg.converged_timeout)]
        if cfg.converged_after is not None:
            args += ["--converger-timeout", str(cfg.converged_after)]
        if cfg.converger_status_file is not None:
            args += ["--converger-status-file", cfg.converger_status_file]
        if cfg.noop:
            args.append("--noop")
        if cfg.no_autoedges:
            args.append("--no-autoedges")
        if cfg.no_autogroup:
            args.append("--no-autogroup")
        if cfg.no_watch:
            args.append("--no-watch")
        if cfg.sema > 0:
            args += ["--sema", str(cfg.sema)]
        if cfg.graphviz is not None:
            args += ["--graphviz", cfg.graphviz]
        if cfg.graphviz_filter is not None:
            args += ["--graphviz-filter", cfg.graphviz_filter]
        if cfg.tls is not None:
            args += cfg.tls.args()
        args += cfg.engine_args
        args += ["yaml", cfg.graph_file] if cfg.graph_file else ["empty"]
        return args

    def _first_role(self) -> None:
        cfg = self.config
        if not cfg.no_server and self.local.has_member_data() and not self.recovery.superseded_at_start():
            self.local.rejoin()
        elif not cfg.seeds and not self.state.endpoints:
            if cfg.no_server:
                raise StartupError("--no-server needs --seeds")
            self.local.bootstrap(self.access)
            self.loop.endpoints = list(cfg.advertised_clients)
            # at once, so the first round already plans with it (the nomination
            # step writes it again if etcd did not take it now)
            self._birth_ideal_size()
        else:
            LOG.info("joining the cluster at %s as a client",
                     ",".join(cfg.seeds or self.state.endpoints))
        endpoints = list(self.state.endpoints or cfg.seeds)
        if self.local.serving:
            endpoints = merge(cfg.advertised_clients, endpoints)
        self.loop.endpoints = endpoints

    # --- signals / engine reports ------------------------------------------------------
    def _on_engine_state(self, state: protocol.EngineState) -> None:
        if state.state != self.engine_state.state:
            LOG.info("engine is %s (%d/%d resources in state)", state.state, state.ok,
                     state.resources)
        self.engine_state = state
        self.metrics.engine_state(state.state)
        self.wake.set()

    def _install_signals(self) -> None:
        def stop(signum, _frame):
            LOG.info("received %s: stopping", signal.Signals(signum).name)
            self.stopping.set()
            self.wake.set()
            if self.abortable:
                raise Stopping()

        def reload(_signum, _frame):
            self.reload_requested.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    @contextlib.contextmanager
    def _abortable(self) -> Iterator[None]:
        """A block that a stop ends at once (Stopping, raised by the signal's
        handler), as a crash there would: it only talks to etcd and starts no
        process, and its etcd calls may each wait seconds for a timeout, one
        endpoint after the other (a cluster losing its quorum as its nodes stop
        together kept a node a minute and a half)."""
        if self.stopping.is_set():
            raise Stopping()
        self.abortable = True
        try:
            yield
        finally:
            self.abortable = False

    def _on_restore_signal(self, _signum, _frame) -> None:
        self.restore_requested.set()
        self.wake.set()

    # --- the loop ----------------------------------------------------------------------
    def run(self) -> int:
        # mgmtctl restore signals whoever holds the prefix's lock, taken in preflight
        signal.signal(signal.SIGUSR1, self._on_restore_signal)
        self.preflight()
        self._install_signals()
        try:
            self._first_role()
            self.engine = EngineProcess(self._engine_args(), self._on_engine_state,
                                        self.metrics.engine_stats)
            self.engine.start()
            self._cluster_round()
            return self._loop()
        except Stopping:
            return 0   # asked to stop while the round talked to etcd (_abortable)
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
        started = time.monotonic()
        while not self.stopping.is_set():
            busy = self._membership_moving()
            self.wake.wait(self.notifier.tick(FAST_TICK if busy else TICK))
            self.wake.clear()
            self.notifier.watchdog()
            if self.stopping.is_set():
                break
            if max_runtime_over(self.config.max_runtime, time.monotonic() - started):
                LOG.error("max runtime reached (%ss): stopping with status 1", self.config.max_runtime)
                return 1
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                LOG.info("reloading the graph")
                self.notifier.reloading()
                self.engine.reload()
                self.notifier.reloaded()
            if self.restore_requested.is_set():
                self.restore_requested.clear()
                self.recovery.restore_from_request()
            if self.local.serving and not self.local.process.running():
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
                self.metrics.engine_restarted()
            if self._cluster_round() and self.engine_state.state in ("converged", "converging"):
                engine_restarts.reset()
            self._report()
        return 0

    # --- one cluster round, and this node's share of it ------------------------------------
    def _cluster_round(self) -> bool:
        """One round of the cluster loop; then this node's own step. True when
        the cluster could be read."""
        with self._abortable():
            round_ = self.loop.round(self.local.state(), self._engine_record())
        self.last_round = round_
        assessment = round_.assessment
        self.metrics.cluster_round(assessment, round_.decision, self.local.serving)
        if assessment.reachable:
            self.state.remember(list(assessment.voter_endpoints))
            self.last_error = ""
        elif not assessment.permission_denied:
            self.last_error = assessment.error[:200]
        self._take(round_.step)   # may start etcd: not abortable
        with self._abortable():
            self.recovery.after_round(round_)
        if assessment.reachable:
            self._push_membership(round_)
        return assessment.reachable

    def _birth_ideal_size(self) -> bool:
        """The bootstrapping node writes the ideal size it was started with,
        unless the key exists; True when done (or nothing to write)."""
        size = self.config.ideal_cluster_size
        if size is None or parse_ideal_size(str(size)).size is None:
            return True
        return self.loop.set_ideal_size_if_missing(size)

    def _take(self, step) -> None:
        if isinstance(step, AskToJoin):
            self.last_error = self.loop.ask_to_join() or self.last_error
        elif isinstance(step, NominateSelf):
            if self._birth_ideal_size() and self.loop.nominate_self(step.initial_cluster):
                self.local.bootstrapped = False
        elif isinstance(step, StartEtcd):
            self.local.join(step.initial_cluster)
        elif isinstance(step, StopServing):
            self._stop_serving()

    def _stop_serving(self) -> None:
        self.local.stop_serving()
        self.loop.drop_endpoints(self.config.advertised_clients, instead=list(self.config.seeds))

    def _membership_moving(self) -> bool:
        """Round at the fast pace while the cluster changes: the leader while a
        change is due or under way, a volunteer while the cluster is below its
        ideal size (its nomination may come any moment), a server while there
        is no leader yet."""
        if self.last_round is None:
            return True
        assessment, decision = self.last_round.assessment, self.last_round.decision
        serving = self.local.serving
        volunteering = not serving and not self.config.no_server
        return (decision.changed_membership or decision.change_pending
                or any(m.is_learner for m in assessment.members)
                or (assessment.nomination is not None and not serving)
                or (volunteering and assessment.below_ideal)
                or (serving and assessment.reachable and not assessment.leader))

    def _engine_record(self) -> dict:
        return {"state": self.engine_state.state, "resources": self.engine_state.resources,
                "ok": self.engine_state.ok, "failed": self.engine_state.failed,
                "collected": list(self.engine_state.collected)}

    def _push_membership(self, round_: Round) -> None:
        assessment = round_.assessment
        membership = protocol.Membership(
            endpoints=assessment.voter_endpoints,
            members=tuple(m.name for m in assessment.voters if m.name), leader=assessment.leader,
            ideal_size=assessment.ideal_size or 0)
        if membership != self.sent_membership:
            self.sent_membership = membership
            self.engine.send(membership)

    def _report(self) -> None:
        """READY and STATUS for systemd (and the same line in mgmtctl's host record)."""
        reachable = self.last_round is not None and self.last_round.assessment.reachable
        if self.engine_state.graph_loaded and reachable:
            self.notifier.ready()
        self.notifier.status(self.status_line())

    def status_line(self) -> str:
        engine = self.engine_state
        role = "server" if self.local.serving else "client"
        if self.last_round is None:
            return f"{role}; engine {engine.state}"
        assessment = self.last_round.assessment
        voters = sum(1 for m in assessment.voters if m.name)
        if assessment.is_leader:
            role += ", leader"
        parts = [f"{role}; {voters}/{assessment.ideal_size or '?'} voters; engine {engine.state} "
                 f"({engine.ok}/{engine.resources} in state)"]
        if assessment.quorum_lost:
            parts.append(f"QUORUM LOST: {assessment.quorum_lost}")
        elif not assessment.reachable:
            parts.append("cluster unreachable")
        if assessment.ideal_problem:
            parts.append(assessment.ideal_problem)
        if self.last_error:
            parts.append(f"last error: {self.last_error}")
        if self.recovery is not None and self.recovery.backups.last_error:
            parts.append(f"last backup failed: {self.recovery.backups.last_error}")
        return "; ".join(parts)

    def _restart_etcd(self, backoff: Backoff) -> bool:
        process = self.local.process
        detail = process.exit_reason()
        if process.removed:
            LOG.warning("etcd says this member was removed from the cluster (%s)", detail)
            self._stop_serving()
            return True
        delay = backoff.next_delay()
        LOG.error("etcd exited (%s); restarting in %.1fs", detail, delay)
        if self.stopping.wait(delay):
            return False
        # the cluster may have removed us meanwhile: ask before restarting
        self._cluster_round()
        if not self.local.serving:
            return True
        try:
            self.local.start(joining=True)
            backoff.reset()
            self.metrics.etcd_restarted()
        except EtcdStartError as err:
            LOG.error("%s", err)
            process.kill()
            return False
        return True

    def shutdown(self) -> None:
        self.notifier.stopping()
        if self.engine is not None:
            self.engine.stop()
        # leaving the cluster talks to etcd: a call that never returns (a stop can cut a
        # round's call short, and its client with it) must not keep this node's etcd
        # running past the stop, so it gets LEAVE_TIMEOUT, then etcd stops anyway
        farewell = threading.Thread(target=self._leave_cluster, name="leave", daemon=True)
        farewell.start()
        farewell.join(LEAVE_TIMEOUT)
        if farewell.is_alive():
            LOG.warning("leaving the cluster took more than %g s: stopping anyway", LEAVE_TIMEOUT)
        if self.local is not None:
            self.local.process.stop()
        self.api.close()
        self.metrics.close()

    def _leave_cluster(self) -> None:
        """Revokes this node's lease (its records go at once) and notes the last
        revision its etcd served (for a restore with the supervisor stopped)."""
        if self.loop is not None:
            self.loop.close()
        if self.recovery is not None:
            self.recovery.at_stop()
