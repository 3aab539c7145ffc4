"""``mgmtd engine``: the process that applies the graph. Started by the
supervisor (membership on stdin, state on stdout) or alone for tests
(``--endpoints``)."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

from mgmtd import log, protocol
from mgmtd.cluster.client import Connection
from mgmtd.cluster.graphview import DEFAULT_FILTER
from mgmtd.engine import memory
from mgmtd.engine.collect import Collector, Export, LocalObjects, matched, select
from mgmtd.engine.exports import ExportPublisher
from mgmtd.engine.graphout import GraphPublisher, GraphvizWriter
from mgmtd.engine.memos import MemoStore
from mgmtd.engine.reload import Changed, GraphReloader
from mgmtd.engine.reversal import Reversals, ReversalStore
from mgmtd.engine.scheduler import Scheduler, Summary
from mgmtd.engine.stats import EngineStats
from mgmtd.graph import Graph
from mgmtd.resources.base import Context, Meta
from mgmtd.tls import TLSFiles
from mgmtd.yamlgraph import cache as graph_cache
from mgmtd.yamlgraph.errors import GraphError, Location
from mgmtd.yamlgraph.loader import GraphSpec, load_file
from mgmtd.yamlgraph.source import graph_digest

LOG = log.get("engine")

STATS_EVERY = 1.0   # seconds between stats lines to the supervisor (only when they changed)
SEND_WAIT = 0.05    # a reload waits at most this long for its exports to go out (see wait_sending)


@dataclass
class EngineOptions:
    hostname: str
    namespace: str = "/mgmtd"
    graph_file: str | None = None        # None: the empty frontend
    converged_timeout: float | None = None
    noop: bool = False
    endpoints: tuple[str, ...] = ()
    membership_from_stdin: bool = False
    report_state: bool = False
    workers: int = 8
    converged_after: float = 3.0
    tls: TLSFiles | None = None          # mutual TLS to etcd (--tls-*); None: plain http
    converger_status_file: str | None = None  # 'true'/'false' appended on each change
    max_runtime: float = 0.0             # exit with status 1 after this long; 0: never
    no_autoedges: bool = False           # --no-autoedges: meta autoedge false everywhere
    no_autogroup: bool = False           # --no-autogroup: meta autogroup false everywhere
    no_watch: bool = False               # --no-watch: the graph changes only on SIGHUP
    prefix: str | None = None            # state directory (meta.reverse records); None: none
    sema: int = -1                       # --sema N: every resource also holds ":N"; <= 0: off
    graphviz: str | None = None          # --graphviz FILE: FILE@HOST (DOT), FILE@HOST.png
    graphviz_filter: str = DEFAULT_FILTER


def overridden_meta(meta: Meta, no_autoedges: bool, no_autogroup: bool, sema: int = -1) -> Meta:
    """A resource's meta params under --no-autoedges / --no-autogroup / --sema N
    (mgmt's lib/main.go appends the semaphore ":N" to every resource's sema)."""
    changes: dict = {}
    if no_autoedges and meta.autoedge:
        changes["autoedge"] = False
    if no_autogroup and meta.autogroup:
        changes["autogroup"] = False
    if sema > 0 and f":{sema}" not in meta.sema:
        changes["sema"] = (*meta.sema, f":{sema}")
    return dataclasses.replace(meta, **changes) if changes else meta


def append_converger_status(path: str, converged: bool) -> None:
    """mgmt's appendConvergerStatus: one line, 'true' or 'false', appended (the
    file created 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"true\n" if converged else b"false\n")
    finally:
        os.close(fd)


def load_spec(path: str | None, prefix: str | None = None) -> GraphSpec:
    """The graph in ``path``; with a state directory, through its cache of the
    last graph loaded (mgmtd.yamlgraph.cache)."""
    if path is None:
        return GraphSpec(name="empty", source="<empty>")
    if prefix is not None:
        return graph_cache.load_file_cached(path, prefix)
    return load_file(path)


class Engine:
    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self.connection = Connection(options.endpoints, tls=options.tls)
        self.ctx = Context(host=options.hostname, namespace=options.namespace,
                           noop=options.noop, etcd=self.connection.get, report=self._report)
        self.reversals = None if options.prefix is None else \
            Reversals(ReversalStore(options.prefix), noop=options.noop)
        # what checks learnt, for the next run (noop proves nothing about its own writes)
        self.memos = None if options.prefix is None or options.noop else MemoStore(options.prefix)
        self.stats = EngineStats()
        self.scheduler = Scheduler(self.ctx, workers=options.workers,
                                   converged_after=options.converged_after,
                                   on_summary=self._on_summary, reversals=self.reversals,
                                   on_view=self._on_view, stats=self.stats)
        self.exports = ExportPublisher(self.connection, options.hostname, options.namespace,
                                       on_synced=self.stats.exports_synced)
        # {ns}/graph/HOST only where an etcd can ever be reached: an engine alone with no
        # endpoints would draw the whole graph every second for no one
        self.publisher: GraphPublisher | None = None
        if options.endpoints or options.membership_from_stdin:
            self.publisher = GraphPublisher(self.connection, options.hostname, options.namespace)
        self.graph_outputs: list = [self.publisher] if self.publisher is not None else []
        if options.graphviz is not None:
            self.graph_outputs.append(GraphvizWriter(options.graphviz, options.hostname,
                                                     options.graphviz_filter))
        if not self.graph_outputs:
            self.scheduler.on_view = None   # no one draws the graph: no copy of its states
        self.spec: GraphSpec | None = None
        self.loaded_digest: bytes | None = None   # of the graph file's bytes (not kept: a big graph's MiBs)
        self.reloader = GraphReloader(options.graph_file,
                                     lambda forced, changed: self.load(False, forced, changed))
        self.collector = Collector(self.connection, options.namespace, self._on_exports)
        self.exports_seen: list[Export] = []
        self.composed: tuple = (None, [])    # the spec and the matched exports of the last compose
        self.local_objects: tuple = (None, None)   # a spec and its LocalObjects, for select
        self.compose_lock = threading.Lock()
        self.reported: set[str] = set()
        self.collected: tuple[str, ...] = ()
        self.summary: Summary | None = None
        self.out_lock = threading.Lock()
        self.converged = False               # as mgmt's converger: starts not converged
        self.exports_taken = False           # --no-watch: the first set of exports is kept
        self.collecting = False              # the graph has collect rules: exports watched
        self.exports_refresh = False         # ... until a SIGHUP asks for a fresh one
        self.max_runtime_reached = threading.Event()

    def _report(self, level: str, message: str) -> None:
        LOG.log(logging.getLevelName(level.upper()), "%s", message)

    def _send(self, message: protocol.EngineState | protocol.EngineStats) -> None:
        if not self.options.report_state:
            return
        with self.out_lock:
            try:
                sys.stdout.write(message.to_line())
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                pass

    def _on_summary(self, summary: Summary) -> None:
        LOG.debug("state %s: %d/%d in state", summary.state, summary.ok, summary.resources)
        self.summary = summary
        self._send_state()
        converged = summary.state == "converged"
        if converged != self.converged:
            self.converged = converged
            LOG.info("converged status is: %s", str(converged).lower())
            if converged and self.memos is not None:
                # the scheduler's thread: its graph is not changing under the copy
                resources = list(self.scheduler.graph.resources.values())
                threading.Thread(target=self._keep_memos, args=(resources,), name="memos",
                                 daemon=True).start()
            if self.options.converger_status_file is not None:
                try:
                    append_converger_status(self.options.converger_status_file, converged)
                except OSError as err:
                    LOG.error("--converger-status-file: %s", err)

    def _keep_memos(self, resources: list | None = None) -> None:
        """What the checks learnt, kept for the next run: at each convergence (an
        engine killed keeps what it had then) and at exit."""
        if resources is None:
            resources = list(self.scheduler.graph.resources.values())
        self.memos.save(resources)

    def _on_view(self, graph: Graph, states: dict) -> None:
        """The scheduler's thread: only hand them over (the outputs draw and write)."""
        for output in self.graph_outputs:
            output.put(graph, states)

    def _send_stats(self) -> None:
        """The counters for the supervisor's /metrics, when they changed: one
        small line a second at most, whatever the graph's size."""
        sent = None
        while not self.scheduler.stopped.wait(STATS_EVERY):
            stats = self.stats.snapshot()
            if stats != sent:
                self._send(stats)
                sent = stats

    def _send_state(self) -> None:
        summary = self.summary
        if summary is None:
            return
        self._send(protocol.EngineState(
            state=summary.state, resources=summary.resources, ok=summary.ok, failed=summary.failed,
            blocked=summary.blocked, pending=summary.pending, errors=summary.errors,
            graph_loaded=True, collected=self.collected,
        ))

    def load(self, initial: bool, forced: bool = False, changed: Changed | None = None) -> bool:
        """Loads the graph file; on error keeps the last good graph. Forced
        (SIGHUP): even an unchanged file is loaded, its exports re-published
        and the cluster's exports re-read. ``changed`` (from the reloader)
        says whether the file changed after this read began: then what was
        read may be half-written, and the reload of the newer content follows."""
        if forced:
            self.exports_refresh = True
            self.collector.resync()
        elif not initial and self.options.graph_file is not None:
            try:
                if graph_digest(self.options.graph_file) == self.loaded_digest:
                    return True  # touched, not changed
            except GraphError:
                pass  # load_spec below says why
        # a changed file misses the cache (it holds the graph running now): parsed
        # without it, and the cache written once the exports went out (below)
        cache_after = not initial and not forced and self.options.prefix is not None
        try:
            spec = load_spec(self.options.graph_file,  # checks cycles too
                             None if cache_after else self.options.prefix)
            self._check_reversible(spec)
        except GraphError as err:
            if changed is not None and changed(True):
                LOG.debug("%s changed while it was read (%s): reading the newer content",
                          self.options.graph_file, str(err).splitlines()[0])
                return False
            LOG.error("%s", err)
            if not initial:
                LOG.error("graph not reloaded: the last good graph keeps running")
            return False
        if changed is not None and not forced and changed(False):
            LOG.debug("%s changed while it was read: reading the newer content", self.options.graph_file)
            return False
        for warning in spec.warnings:   # once per load: an unchanged file is not loaded again
            LOG.warning("%s", warning)
        if initial and self.memos is not None:
            taken = self.memos.recall(spec.resources)
            LOG.debug("%d resources took their memo of the last run", taken)
        if initial:
            # the graph's objects live as long as the engine: out of the cyclic
            # collector's sight, which would otherwise walk them again and again
            gc.freeze()
        with self.compose_lock:
            self.spec = spec
            self._collect(bool(spec.collect), initial)
            self.loaded_digest = spec.digest
            # exports first: other hosts wait on them, while the local graph's swap takes a while
            if self.options.noop:
                for res in spec.exports:
                    LOG.info("would export %s (noop: exports are not published)", res)
            else:
                self.exports.publish(spec.exports)
                self.stats.exports_published(len(spec.exports))
                if not initial:
                    self.exports.wait_sending(SEND_WAIT)
            if cache_after and spec.digest is not None \
                    and len(spec.resources) + len(spec.exports) >= graph_cache.WORTH_CACHING_ON_RELOAD:
                # while the exports thread writes them, and before the compose lends
                # the graph anything: the cache keeps it as loaded
                graph_cache.write(os.path.join(self.options.prefix, graph_cache.CACHE_DIR),
                                  graph_cache.graph_key(self.options.graph_file, spec.digest), spec)
            self._compose()
        memory.give_back()   # the parser's temporaries: freed, yet resident until given back
        if forced:
            LOG.info("graph %s reloaded from %s (requested): exports re-published", spec.name, spec.source)
        elif not initial:
            LOG.info("graph %s reloaded from %s", spec.name, spec.source)
        return True

    def _check_reversible(self, spec: GraphSpec) -> None:
        if self.reversals is not None:
            return
        for res in spec.resources:
            if res.meta.reverse:
                raise GraphError(spec.locations.get(res.key, Location(spec.source)),
                                 "meta.reverse: true needs a state directory for its records "
                                 "(mgmtd engine --prefix)", str(res))

    def _collect(self, collecting: bool, initial: bool) -> None:
        """Watches the cluster's exports only while the graph collects."""
        if collecting == self.collecting:
            return
        self.collecting = collecting
        if collecting:
            LOG.info("the graph collects: watching the cluster's exports")
            if not initial:   # the start holds it itself (run)
                self.scheduler.hold("collect")
        else:
            LOG.info("the graph collects nothing: not watching the cluster's exports")
            # what was seen goes stale from now on: rules that come back wait for a fresh read
            self.exports_seen, self.exports_taken = [], False
            self.scheduler.release("collect")
        self.collector.want(collecting)

    def _on_exports(self, exports: list[Export]) -> None:
        read_at = time.monotonic()
        with self.compose_lock:
            if not self.collecting:
                return   # handed on before the watch stopped
            if not self.exports_taken:
                # held from the start until the cluster's exports are known; released
                # once (an event for each change would wake the scheduler's thread
                # for nothing while this one composes)
                self.scheduler.release("collect")
            if self.options.no_watch and self.exports_taken and not self.exports_refresh:
                LOG.debug("the cluster's exports changed: --no-watch keeps the graph (SIGHUP reloads)")
                return
            # the first read composes: until then the graph was built not knowing the
            # cluster's exports (reversals of collected files wait for it)
            first = not self.exports_taken
            refresh = self.exports_refresh or first
            self.exports_taken, self.exports_refresh = True, False
            self.exports_seen = exports
            if self.spec is None:
                pass
            elif (not refresh and self.spec is self.composed[0]
                    and matched(self.spec.collect, exports) == self.composed[1]):
                # no collect rule sees the change: composing would swap in the same
                # graph and report "converging", a host-record write on every host
                # for every export anywhere (docs/clustering.md "Scale")
                LOG.debug("the cluster's exports changed, none that this graph collects: graph kept")
            else:
                self._compose()
            self.stats.collect_taken(len(self.collected), time.monotonic() - read_at)

    def _compose(self) -> None:
        """The graph to run: the file's resources and the collected ones."""
        spec = self.spec
        self.composed = (spec, matched(spec.collect, self.exports_seen))
        if self.local_objects[0] is not spec:
            self.local_objects = (spec, LocalObjects(spec.resources))
        chosen = select(spec.collect, self.exports_seen, self.options.hostname, self.local_objects[1])
        # meta.reverse with nowhere to keep its records: refused, never ignored
        refused = [] if self.reversals is not None else [r for r in chosen.resources if r.meta.reverse]
        applied = [res for res in chosen.resources if res not in refused]
        problems = {*chosen.conflicts, *chosen.rejected,
                    *(f"{res}: meta.reverse needs a state directory (--prefix): not applied"
                      for res in refused)}
        for problem in sorted(problems - self.reported):
            LOG.warning("collect: %s", problem)
        self.reported = problems
        for res in [*spec.resources, *applied]:
            res.meta = overridden_meta(res.meta, self.options.no_autoedges, self.options.no_autogroup,
                                       self.options.sema)
        try:
            graph: Graph = spec.build(applied)
        except GraphError as err:
            LOG.error("collected resources do not fit the graph (%s): keeping the current graph", err)
            return
        # until the cluster's exports are known, a collected object is not gone
        # (first start, etcd away): its reversal would revert it, so they wait
        if self.reversals is not None and (self.exports_taken or not spec.collect):
            graph = self._with_reversals(spec, applied, graph)
        graph.name = spec.name
        graph.collected = {key: tuple(sorted({s.split("/", 1)[0] for s in sources}))
                           for key, sources in chosen.sources.items()}
        self.stats.graph_started(kind for kind, _ in graph.resources)
        collected = tuple(sorted(key for keys in chosen.sources.values() for key in keys))
        if collected != self.collected:
            self.collected = collected
            self._send_state()
        # last: the scheduler's thread wakes to it, and this one must not hold the
        # interpreter (or the CPU) it then needs with work that can come before
        self.scheduler.swap(graph)

    def _with_reversals(self, spec: GraphSpec, collected: list, graph: Graph) -> Graph:
        """The graph with the pending reversals of objects it no longer manages."""
        reversals = self.reversals.compose([*spec.resources, *collected], set(graph.resources))
        if not reversals:
            return graph
        try:
            return spec.build([*collected, *reversals])
        except GraphError as err:
            LOG.error("the pending reversals do not fit the graph (%s): they wait", err)
            return graph

    def _read_membership(self) -> None:
        for line in sys.stdin:
            message = protocol.parse_line(line)
            if isinstance(message, protocol.Membership):
                if self.connection.set_endpoints(message.endpoints):
                    LOG.info("etcd endpoints: %s", ",".join(message.endpoints) or "none")
                    self.exports.poke()
                    if self.publisher is not None:
                        self.publisher.poke()
                    self.collector.endpoints_changed()
        # stdin closed: the supervisor is gone; no one will stop us otherwise
        LOG.info("supervisor closed the membership channel; stopping")
        self.scheduler.stop()

    def run(self) -> int:
        threading.excepthook = quiet_watch_thread_deaths
        started = (time.monotonic(), time.process_time())
        if not self.load(initial=True):
            return 2
        LOG.info("graph %s loaded from %s: %d resources, %d exported", self.spec.name,
                 self.spec.source, len(self.spec.resources), len(self.spec.exports))
        if self.options.membership_from_stdin:
            threading.Thread(target=self._read_membership, name="membership", daemon=True).start()
        signal.signal(signal.SIGTERM, lambda *_: self.scheduler.stop())
        signal.signal(signal.SIGINT, lambda *_: self.scheduler.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.reloader.request(forced=True))
        if self.spec.collect:
            self.scheduler.hold("collect")  # converged means "with what the cluster exports"
        self.exports.start()
        self.collector.start()
        for output in self.graph_outputs:
            output.start()
        if self.options.report_state:
            threading.Thread(target=self._send_stats, name="stats", daemon=True).start()
        if self.options.no_watch:
            self.reloader.start(watch_file=False)  # SIGHUP only
        else:
            self.reloader.start()
            # an edit between the first load and the watch would otherwise go unseen:
            # look once more now that the watch is on (an unchanged file costs one read)
            self.reloader.request()
        if self.options.max_runtime > 0:
            timer = threading.Timer(self.options.max_runtime, self._max_runtime_reached)
            timer.daemon = True
            timer.start()
        try:
            rc = self.scheduler.run(self.options.converged_timeout)
        finally:
            if self.memos is not None:
                self._keep_memos()
            self.reloader.stop()
            self.collector.stop()
            self.exports.stop()
            for output in self.graph_outputs:
                output.stop()
            self.connection.close()
            self.scheduler.closed()
            self._report_first_pass(started)
        if self.max_runtime_reached.is_set() and not self.scheduler.timed_out:
            LOG.error("max runtime reached (%ss): exiting with status 1", self.options.max_runtime)
            return 1
        if self.scheduler.timed_out:
            if rc == 0:
                LOG.info("converged for %ss: exiting", self.options.converged_timeout)
            else:
                LOG.error("settled with failed resources: exiting with status %d", rc)
        return rc

    def _report_first_pass(self, started: tuple[float, float]) -> None:
        """How long the first pass took, from the engine's start (its graph
        loaded, every resource checked or applied once): what a restart costs."""
        first = self.scheduler.first_pass
        if first is not None:
            LOG.info("first pass: %d resources in %.4f s from the engine's start (CPU %.4f s)",
                     len(self.spec.resources), first[0] - started[0], first[1] - started[1])

    def _max_runtime_reached(self) -> None:
        self.max_runtime_reached.set()
        self.scheduler.stop()


def quiet_watch_thread_deaths(args: threading.ExceptHookArgs,
                              fallback=threading.__excepthook__) -> None:
    """python3-etcd3 runs each client's watches on a thread of its own; when the
    engine replaces its client (new endpoints) that thread may die on the closed
    channel ("Cannot invoke RPC: Channel closed!") with a traceback on stderr.
    The watches' owners make them again on the new client: one debug line is
    all it is worth."""
    name = args.thread.name if args.thread is not None else ""
    if name.startswith("etcd3_watch"):
        LOG.debug("%s ended: %s", name, f"{type(args.exc_value).__name__}: {args.exc_value}")
        return
    fallback(args)


def run(options: EngineOptions) -> int:
    memory.limit_arenas()   # before any thread of ours: see memory.py
    if options.graph_file is not None:
        options.graph_file = os.path.abspath(options.graph_file)
    return Engine(options).run()
