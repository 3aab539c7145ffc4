"""``mgmtd run --prometheus``: the node's metrics on ``/metrics``, served by the
official ``prometheus_client`` (its registry, its exposition, its HTTP server).

The supervisor owns one ``Metrics`` (a registry of its own, never the
library's global one): the cluster as this node sees it, updated once per
round; etcd and engine restarts; backups (``backup_taken``); and the engine's
counters, which the engine child sends as ``protocol.EngineStats`` lines and
``EngineMirror`` renders at scrape time. The engine's counters add up across
engine restarts, so that a counter only goes down when the supervisor
restarts. docs/operations.md "Metrics" lists every name, with mgmt's."""

from __future__ import annotations

import errno
import math
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from mgmtd import log, protocol
from mgmtd.cluster.model import AddLearner, Assessment, Decision, Promote, RemoveMember, Result
from mgmtd.supervisor.preflight import StartupError
from mgmtd.tls import TLSFiles
from mgmtd.urls import is_loopback_host

LOG = log.get("supervisor")

DEFAULT_LISTEN = "127.0.0.1:9233"   # mgmt's (Prometheus' registry of default ports)
CHANGE_KINDS = {AddLearner: "add_learner", Promote: "promote", RemoveMember: "remove"}
BOOLS = ("false", "true")


def add_buckets(a: protocol.Buckets, b: protocol.Buckets) -> protocol.Buckets:
    return protocol.Buckets(tuple(x + y for x, y in zip(a.counts, b.counts, strict=True)), a.sum + b.sum)


def add_counts(a: tuple[tuple, ...], b: tuple[tuple, ...]) -> tuple[tuple, ...]:
    """Labelled counts (labels..., n) summed label by label."""
    total: dict[tuple, int] = {}
    for row in (*a, *b):
        total[row[:-1]] = total.get(row[:-1], 0) + row[-1]
    return tuple(sorted((*labels, n) for labels, n in total.items()))


def accumulate(before: protocol.EngineStats, now: protocol.EngineStats) -> protocol.EngineStats:
    """The counters of an engine that ended (``before``) added to the running
    one's; the gauges are the running one's."""
    return protocol.EngineStats(
        checkapply=add_counts(before.checkapply, now.checkapply),
        failures=add_counts(before.failures, now.failures), failing=now.failing,
        resources=now.resources, graph_start=now.graph_start, repair=add_buckets(before.repair, now.repair),
        exports=now.exports, export_syncs=before.export_syncs + now.export_syncs,
        export_latency=add_buckets(before.export_latency, now.export_latency), collected=now.collected,
        collect_updates=before.collect_updates + now.collect_updates,
        collect_latency=add_buckets(before.collect_latency, now.collect_latency))


def histogram(name: str, documentation: str, buckets: protocol.Buckets) -> HistogramMetricFamily:
    cumulative, rows = 0, []
    for bound, count in zip((*protocol.LATENCY_BUCKETS, math.inf), buckets.counts, strict=True):
        cumulative += count
        rows.append(("+Inf" if bound == math.inf else repr(float(bound)), cumulative))
    return HistogramMetricFamily(name, documentation, buckets=rows, sum_value=buckets.sum)


class EngineMirror:
    """A collector (prometheus_client's custom collector protocol) for the
    engine's counters: the last stats line of the running engine, plus what
    the engines before it had counted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.run = 0
        self.ended = protocol.EngineStats()     # counters of the engines that ended
        self.current = protocol.EngineStats()

    def update(self, run: int, stats: protocol.EngineStats) -> None:
        """``run``: which start of the engine sent it (a late line of an ended one is dropped)."""
        with self.lock:
            if run < self.run:
                return
            if run > self.run:
                self.ended = accumulate(self.ended, self.current)
                self.current = protocol.EngineStats(resources=self.current.resources,
                                                    graph_start=self.current.graph_start)
                self.run = run
            self.current = stats

    def totals(self) -> protocol.EngineStats:
        with self.lock:
            return accumulate(self.ended, self.current)

    def collect(self) -> Iterator[Metric]:
        stats = self.totals()
        kinds = sorted({k for k, _ in stats.resources} | {row[0] for row in stats.checkapply})
        checkapply = CounterMetricFamily("mgmtd_checkapply", "Check/apply runs (mgmt_checkapply_total).",
                                         labels=["kind", "apply", "eventful", "errorful"])
        counted = {row[:4]: row[4] for row in stats.checkapply}
        for kind in kinds:  # every combination from the start, as mgmt: no series appears late
            for apply in (False, True):
                for eventful in (False, True):
                    for errorful in (False, True):
                        checkapply.add_metric([kind, BOOLS[apply], BOOLS[eventful], BOOLS[errorful]],
                                              counted.get((kind, apply, eventful, errorful), 0))
        yield checkapply
        failures = CounterMetricFamily("mgmtd_failures", "Failed check/apply runs; soft: retried, hard: "
                                       "retries used up (mgmt_failures_total).", labels=["kind", "failure"])
        failing = GaugeMetricFamily("mgmtd_failing_resources", "Resources failing now (mgmt_failures).",
                                    labels=["kind", "failure"])
        total_failures = {row[:2]: row[2] for row in stats.failures}
        failing_now = {row[:2]: row[2] for row in stats.failing}
        for kind in kinds:
            for failure in ("soft", "hard"):
                failures.add_metric([kind, failure], total_failures.get((kind, failure), 0))
                failing.add_metric([kind, failure], failing_now.get((kind, failure), 0))
        yield failures
        yield failing
        resources = GaugeMetricFamily("mgmtd_resources", "Resources in the running graph (mgmt_resources).",
                                      labels=["kind"])
        for kind, count in stats.resources:
            resources.add_metric([kind], count)
        yield resources
        yield GaugeMetricFamily("mgmtd_graph_start_time_seconds", "When the running graph was swapped in, "
                                "seconds since the epoch; 0: no graph yet (mgmt_graph_start_time_seconds).",
                                value=stats.graph_start)
        yield histogram("mgmtd_repair_seconds", "From an event that found a resource out of state (drift) "
                        "to the resource in state again.", stats.repair)
        yield GaugeMetricFamily("mgmtd_exports", "Resources this node exports (@@).", value=stats.exports)
        yield CounterMetricFamily("mgmtd_export_syncs", "Times etcd was brought to hold this node's exports.",
                                  value=stats.export_syncs)
        yield histogram("mgmtd_export_seconds", "From a graph's exports published to etcd holding them.",
                        stats.export_latency)
        yield GaugeMetricFamily("mgmtd_collected", "Collected resources in the running graph.",
                                value=stats.collected)
        yield CounterMetricFamily("mgmtd_collect_updates", "Sets of the cluster's exports taken in.",
                                  value=stats.collect_updates)
        yield histogram("mgmtd_collect_seconds", "From a new set of the cluster's exports read to the "
                        "graph with them swapped in.", stats.collect_latency)


class Metrics:
    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self.wall = wall
        self.registry = CollectorRegistry()
        r = self.registry
        self.reachable = Gauge("mgmtd_cluster_reachable", "1 when this node could read the cluster "
                               "in its last round.", registry=r)
        self.voters = Gauge("mgmtd_cluster_voters", "etcd voting members.", registry=r)
        self.learners = Gauge("mgmtd_cluster_learners", "etcd learners (members catching up).", registry=r)
        self.ideal = Gauge("mgmtd_cluster_ideal_size", "The voters the cluster aims for; 0: unknown.",
                           registry=r)
        self.is_leader = Gauge("mgmtd_cluster_is_leader", "1 on the elected mgmtd leader.", registry=r)
        self.quorum_ok = Gauge("mgmtd_cluster_quorum_ok", "1 while a majority of the voters is healthy "
                               "(as this node's probes see it).", registry=r)
        self.serving = Gauge("mgmtd_etcd_serving", "1 while this node runs an etcd member.", registry=r)
        self.leader_changes = Counter("mgmtd_cluster_leader_changes", "Changes of the elected mgmtd "
                                      "leader this node has seen.", registry=r)
        self.membership_changes = Counter("mgmtd_cluster_membership_changes", "Membership changes this "
                                          "node made as the leader, by kind.", ["kind"], registry=r)
        for kind in CHANGE_KINDS.values():
            self.membership_changes.labels(kind)
        self.etcd_restarts = Counter("mgmtd_etcd_restarts", "Times the etcd child was restarted after "
                                     "it exited.", registry=r)
        self.engine_restarts = Counter("mgmtd_engine_restarts", "Times the engine child was restarted "
                                       "after it exited.", registry=r)
        self.converged = Gauge("mgmtd_engine_converged", "1 while the engine is converged.", registry=r)
        self.backup_size = Gauge("mgmtd_backup_size_bytes", "Size of the last backup this node took; "
                                 "0: none yet.", registry=r)
        self.backup_time = Gauge("mgmtd_backup_last_timestamp_seconds", "When this node took its last "
                                 "backup, seconds since the epoch; 0: none yet.", registry=r)
        self.backup_age = Gauge("mgmtd_backup_age_seconds", "Seconds since this node took its last backup; "
                                "+Inf: none yet.", registry=r)
        self.backup_age.set_function(self._backup_age)
        self.engine = EngineMirror()
        r.register(self.engine)
        self.last_backup = 0.0     # seconds since the epoch; 0: none yet
        self.leader = ""
        self.server = None

    # --- what the supervisor tells it ---------------------------------------------------------
    def cluster_round(self, assessment: Assessment, decision: Decision, serving: bool) -> None:
        self.reachable.set(assessment.reachable)
        self.serving.set(serving)
        self.is_leader.set(assessment.is_leader)
        # the leader probes every voter; elsewhere the round's reads were linearizable: that
        # they were answered (or not) is what this node knows of a majority
        self.quorum_ok.set(assessment.quorum.ok if assessment.quorum is not None else assessment.reachable)
        if not assessment.reachable:
            return  # the member counts stay the last known
        self.voters.set(len(assessment.voters))
        self.learners.set(sum(1 for m in assessment.members if m.is_learner))
        self.ideal.set(assessment.ideal_size or 0)
        if assessment.leader and assessment.leader != self.leader:
            self.leader_changes.inc()
        if assessment.leader:
            self.leader = assessment.leader
        for outcome in decision.outcomes:
            kind = CHANGE_KINDS.get(type(outcome.action))
            if kind is not None and outcome.result is Result.DONE:
                self.membership_changes.labels(kind).inc()

    def etcd_restarted(self) -> None:
        self.etcd_restarts.inc()

    def engine_restarted(self) -> None:
        self.engine_restarts.inc()

    def engine_state(self, state: str) -> None:
        self.converged.set(state == "converged")

    def engine_stats(self, run: int, stats: protocol.EngineStats) -> None:
        self.engine.update(run, stats)

    def backup_taken(self, size: int, when: float) -> None:
        """A backup of ``size`` bytes was written at ``when`` (seconds since the epoch)."""
        self.backup_size.set(size)
        self.backup_time.set(when)
        self.last_backup = when

    def _backup_age(self) -> float:
        """+Inf before the first backup: an alert on the age (``> 3600``) fires for
        "never" too, where NaN or a missing series would keep it quiet."""
        last = self.last_backup
        return math.inf if last <= 0 else max(0.0, self.wall() - last)

    # --- the HTTP server ---------------------------------------------------------------------------
    def serve(self, host: str, port: int, tls: TLSFiles | None, insecure: bool) -> None:
        """Serves /metrics (OSError when the address cannot be bound). With TLS
        (unless ``insecure``): the node's certificate, and a client
        certificate of the cluster's CA required."""
        if tls is not None and not insecure:
            server, _ = start_http_server(port, host, self.registry, certfile=tls.cert, keyfile=tls.key,
                                          client_cafile=tls.ca, client_auth_required=True)
            # the handshake in the request's own thread, not in the accept loop: a client that
            # connects and sends nothing must not stall every other scrape
            server.socket.do_handshake_on_connect = False
        else:
            server, _ = start_http_server(port, host, self.registry)
        server.handle_error = self._request_failed
        self.server = server

    @staticmethod
    def _request_failed(_request, client_address) -> None:
        """A scrape that failed (no or a wrong client certificate, a dropped
        connection): one debug line, not socketserver's traceback on stderr."""
        err = sys.exc_info()[1]
        detail = err.reason if isinstance(err, ssl.SSLError) and err.reason else repr(err)
        LOG.debug("metrics: request from %s failed: %s", client_address[0], detail)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def serve_metrics(metrics: Metrics, listen: tuple[str, int], tls: TLSFiles | None, insecure: bool) -> None:
    """Starts /metrics for --prometheus; StartupError: one line naming the flag."""
    host, port = listen
    try:
        metrics.serve(host, port, tls, insecure)
    except OSError as err:
        hint = " (another mgmtd or exporter?): choose another --prometheus-listen" \
            if err.errno == errno.EADDRINUSE else ""
        raise StartupError(f"--prometheus-listen {host}:{port}: cannot listen: {err.strerror or err}{hint}") \
            from None
    secure = tls is not None and not insecure
    LOG.info("serving metrics on %s://%s:%d/metrics%s", "https" if secure else "http", host, port,
             " (client certificates of the cluster's CA only)" if secure else "")
    if not secure and not is_loopback_host(host):
        LOG.warning("/metrics on %s:%d is plain http: anyone who can reach it can read this node's "
                    "metrics (with --tls-* it asks for a client certificate)", host, port)
