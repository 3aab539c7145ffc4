"""Applies a graph and keeps it applied.

One control thread owns every piece of state; workers (a bounded pool) only
run ``check_apply`` and report back through the same queue that carries
watch events and graph swaps, so a swap can never race a worker: a worker of
a replaced resource finishes, its result is dropped, and the new resource
starts only then."""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mgmtd import log
from mgmtd.engine.gates import Semaphores, TokenBucket, limited
from mgmtd.engine.reversal import Reversals
from mgmtd.engine.stats import HARD, SOFT, EngineStats
from mgmtd.engine.status import BLOCKED, FAILED, OK, PENDING, Status, Tally
from mgmtd.engine.watch import FileWatcher
from mgmtd.graph import Graph, Key, key_str
from mgmtd.resources.base import Context, Resource, ResourceError

LOG = log.get("engine")


@dataclass(frozen=True)
class Summary:
    """The node's engine state, as reported to the supervisor and mgmtctl."""

    state: str                      # converging | converged | failed
    resources: int
    ok: int
    failed: int
    blocked: int
    pending: int
    errors: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict:
        return {"state": self.state, "resources": self.resources, "ok": self.ok,
                "failed": self.failed, "blocked": self.blocked, "pending": self.pending,
                "errors": list(self.errors)}


GATE_TIMERS = ("retry", "limit")   # timers that are work to come (not polls or timeouts)


def autogroups(ready: list[tuple[Key, Resource]], noop: bool) -> list[list[tuple[Key, Resource]]]:
    """The resources ready to run now, in batches: one batch per kind and group
    token of a GROUPABLE kind (resources with ``meta.autogroup``), every other
    resource alone. A batch runs in one ``check_apply_group``, so its members
    must agree on whether to apply."""
    batches: dict[tuple, list[tuple[Key, Resource]]] = {}
    alone: list[list[tuple[Key, Resource]]] = []
    for key, res in sorted(ready, key=lambda item: item[0]):
        if type(res).GROUPABLE and res.meta.autogroup:
            token = (type(res), res.group_token(), noop or res.meta.noop)
            batches.setdefault(token, []).append((key, res))
        else:
            alone.append([(key, res)])
    return [*batches.values(), *alone]


def rewatched(res: Resource, status: Status | None) -> bool:
    """True when a graph swap restarts ``res`` although it did not change:
    ``meta.rewatch`` and it failed for good (its retries spent). mgmt restarts
    a worker that ended in error at a swap when rewatch is set."""
    return res.meta.rewatch and status is not None and status.state == FAILED


def timed_out_error(timeout_ms: int) -> str:
    return f"timed out after {timeout_ms} ms"


def retry_wait(delay_ms: int) -> float:
    """Seconds to wait before a retry: ``meta.delay`` is in milliseconds, as in
    mgmt; at least 50 ms, so a retry loop never spins."""
    return max(delay_ms / 1000, 0.05)


class Scheduler:
    def __init__(self, ctx: Context, workers: int = 8, converged_after: float = 3.0,
                 on_summary: Callable[[Summary], None] | None = None,
                 on_view: Callable[[Graph, dict[Key, str]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 reversals: Reversals | None = None, stats: EngineStats | None = None) -> None:
        self.ctx = ctx
        self.reversals = reversals                # meta.reverse; None: no records kept
        self.stats = stats or EngineStats()
        self.clock = clock
        self.converged_after = converged_after
        self.on_summary = on_summary or (lambda s: None)
        self.on_view = on_view                   # the graph and each resource's drawn state
        self.viewed: tuple[Graph | None, dict[Key, str]] = (None, {})
        self.viewed_version = -1
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="worker")
        self.workers = workers
        self.takers = 0                          # pool tasks taking runs (see _dispatch)
        self.takers_lock = threading.Lock()
        self.graph = Graph()
        self.status: dict[Key, Status] = {}
        self.tally = Tally()                     # counts and drawn states, kept as they change
        self.retired: dict[Key, Resource] = {}  # replaced/removed, still in a worker
        self.twins: dict[Key, Resource] = {}    # a swapped-in instance found equal to the running one
        self.candidates: set[Key] = set()
        self.timers: list[tuple[float, int, str, Key]] = []   # (when, seq, what, key)
        self.gate_timers = 0                     # "retry" and "limit" timers among them
        # ready runs (one resource, or an autogroup batch): workers take them in turn
        self.runs: deque[tuple[Key, Resource] | list[tuple[Key, Resource]]] = deque()
        self.seq = 0
        self.stops: dict[Key, Callable[[], None]] = {}
        self.watcher = FileWatcher(self.poke_all)
        self.quiet_since: float | None = None    # None while work is under way
        self.last_activity = clock()             # last change, failure or swap: checks that find
                                                 # everything in state (polls, own writes) do not count
        self.last_summary: Summary | None = None
        self.stopped = threading.Event()
        self.watcher_closing: threading.Thread | None = None
        self.swaps = 0
        # when every resource of the first graph had been checked: (clock, process CPU)
        self.first_pass: tuple[float, float] | None = None
        self.timed_out = False
        self.summarized_at = 0.0
        self.in_flight = 0
        self.holds: set[str] = set()
        self.semas = Semaphores()                # meta.sema, shared by every resource
        self.sema_waiters: set[Key] = set()      # ready but a semaphore is full

    # --- thread-safe entry points -------------------------------------------
    def poke(self, key: Key) -> None:
        self.events.put(("poke", key, None))

    def poke_all(self, keys: set[Key]) -> None:
        """One event for everything one change touched: all are dirty before
        any is dispatched, so a resource waits for the dependencies the same
        change touched (a user for its deleted group) instead of racing them."""
        self.events.put(("pokes", None, keys))

    def swap(self, graph: Graph) -> None:
        self.events.put(("swap", None, graph))

    def stop(self) -> None:
        self.events.put(("stop", None, None))

    # --- the control loop ------------------------------------------------------
    def run(self, converged_timeout: float | None = None, stop: threading.Event | None = None) -> int:
        """Runs until stopped (returns 0), or until settled for
        ``converged_timeout`` seconds (0 when every resource is in state, 1 when
        some failed)."""
        if converged_timeout is not None:
            self.converged_after = min(self.converged_after, converged_timeout)
        try:
            while not (stop and stop.is_set()):
                event = self._next_event(converged_timeout)
                if event is not None:
                    what, key, payload = event
                    if what == "stop":
                        return 0
                    self._handle(what, key, payload)
                    # drain what is already queued before dispatching: one pass for a burst
                    while True:
                        try:
                            what, key, payload = self.events.get_nowait()
                        except queue.Empty:
                            break
                        if what == "stop":
                            return 0
                        self._handle(what, key, payload)
                self._fire_timers()
                self._dispatch()
                self._track_quiet()
                now = self.clock()
                # the summary walks every resource: while busy, 10 times a second is enough
                if self.quiet_since is not None or now - self.summarized_at >= 0.1:
                    self.summarized_at = now
                    self._summarize()
                if converged_timeout is not None and self._settled_for() >= converged_timeout:
                    self.timed_out = True
                    summary = self._summarize()
                    return 1 if summary.failed or summary.blocked else 0
            return 0
        finally:
            self._shutdown()

    def _next_event(self, converged_timeout: float | None):
        now = self.clock()
        if self.candidates:
            return self._event_now()   # a dispatch made more (a quick check's dependants)
        waits = [1.0]
        if self.timers:
            waits.append(self.timers[0][0] - now)
        if self.quiet_since is not None:
            for limit in (self.converged_after, converged_timeout):
                if limit is not None and now - self.quiet_since < limit:
                    waits.append(self.quiet_since + limit - now)
        try:
            return self.events.get(timeout=max(0.0, min(waits)))
        except queue.Empty:
            return None

    def _event_now(self):
        try:
            return self.events.get_nowait()
        except queue.Empty:
            return None

    def _handle(self, what: str, key: Key, payload) -> None:
        if what == "poke":
            self._poked(key)
        elif what == "pokes":
            for poked in payload:
                self._poked(poked)
        elif what == "done":
            self._done(key, *payload)
        elif what == "cancelled":
            self.in_flight -= 1
            status = self.status.get(key)
            if status is not None and status.cancelling:
                status.cancelling = False
                self.candidates.add(key)
        elif what == "swap":
            self._swap(payload)
        elif what == "hold":
            if payload:
                self.holds.add(key)
            elif key in self.holds:
                self.holds.discard(key)
                self.last_activity = self.clock()

    def _poked(self, key: Key) -> None:
        status = self.status.get(key)
        if status is not None and not status.dirty:
            status.dirty = True
            if status.state == OK and status.drift_at is None:
                status.drift_at = self.clock()
            self.candidates.add(key)

    def _dispatch(self) -> None:
        candidates, self.candidates = self.candidates, set()
        ready: list[tuple[Key, Resource]] = []
        for key in candidates:
            status = self.status.get(key)
            if status is None or not status.dirty or status.running is not None or status.cancelling:
                continue
            if key in self.retired:
                continue  # the old instance is still running; we go when it is done
            if status.retry_at is not None:
                continue
            waiting = False
            for dep in self.graph.requires[key]:
                dep_status = self.status[dep]
                if dep_status.state in (FAILED, BLOCKED):
                    if status.state != BLOCKED:
                        LOG.warning("%s: blocked: %s has failed", key_str(key), key_str(dep))
                    status.state = BLOCKED
                    waiting = True
                    break
                if dep_status.state != OK or dep_status.dirty or dep_status.running is not None:
                    waiting = True
            if waiting:
                continue
            res = self.graph.resources[key]
            if res.meta.hidden:
                # mgmt: a hidden resource is in the graph but its check/apply never
                # runs; it counts as in state once what it depends on is
                status.dirty, status.refresh, status.running = False, False, res
                self.in_flight += 1
                self._done(key, res, True, "")
                continue
            if not self.semas.available(res.meta.sema):
                self.sema_waiters.add(key)  # back when a run gives a semaphore back
                continue
            if not self._token(key, status, res):
                continue  # delayed, not dropped: still dirty, a timer brings it back
            if not (status.refresh or status.retrying) and self._quick(res):
                self._quick_done(key, res, status)   # checked here: no worker needed
                continue
            # set on the resource only when not its class default (False): an
            # attribute more would grow every resource's __dict__
            if res.refresh is not status.refresh:
                res.refresh = status.refresh
            if res.retrying is not status.retrying:
                res.retrying = status.retrying
            status.refresh = status.dirty = status.retrying = False
            self.semas.acquire(res.meta.sema)  # all of them or none: see Semaphores
            status.running = res
            status.timed_out = False
            if res.meta.timeout > 0:
                status.deadline = self.clock() + res.meta.timeout / 1000
                self._timer(status.deadline, "timeout", key)
            self.in_flight += 1
            ready.append((key, res))
        batches = autogroups(ready, self.ctx.noop)
        for batch in batches:
            if len(batch) == 1:
                self.runs.append(batch[0])
            else:
                LOG.info("%s: in one check/apply (autogroup)", ", ".join(key_str(key) for key, _ in batch))
                self.runs.append(batch)
        # at most one pool task per worker, each taking runs until none is left: a task
        # per run cost more than a file's whole check (and piled up while workers were
        # busy). A task leaves only when it finds no run, under the lock that counts the
        # tasks: a run queued after that sees it gone and starts another.
        with self.takers_lock:
            start = min(len(self.runs), self.workers - self.takers)
            self.takers += start
        for _ in range(start):
            self.pool.submit(self._take_runs)

    def _quick(self, res: Resource) -> bool:
        """Whether the resource proves itself in state at once (quick_check):
        only a plain check, one that nothing else (noop, a semaphore, a
        timeout, a reversal record) has to surround."""
        meta = res.meta
        if self.ctx.noop or meta.noop or meta.sema or meta.timeout > 0 or meta.reverse \
                or res.reversal_of is not None:
            return False
        try:
            return res.quick_check()
        except Exception:   # a bug there costs the shortcut, never the check
            return False

    def _take_runs(self) -> None:
        while True:
            with self.takers_lock:
                if not self.runs:
                    self.takers -= 1
                    return
                run = self.runs.popleft()
            if isinstance(run, list):
                self._work_group(run)
            else:
                self._work(*run)

    def _token(self, key: Key, status: Status, res: Resource) -> bool:
        """True when ``meta.limit`` lets this run start now (it takes a token);
        else sets a timer for when a token is there."""
        if not limited(res.meta.limit):
            return True
        now = self.clock()
        if status.limited_until is not None and status.limited_until > now:
            return False  # its timer is set
        if status.bucket is None:
            status.bucket = TokenBucket(res.meta.limit, res.meta.burst, now)
        wait = status.bucket.take(now)
        if wait <= 0:
            status.limited_until = None
            return True
        status.limited_until = now + wait
        self._timer(status.limited_until, "limit", key)
        return False

    def _work(self, key: Key, res: Resource) -> None:
        error = ""
        in_state = False
        apply = not (self.ctx.noop or res.meta.noop)
        try:
            if apply and self.reversals is not None:
                self.reversals.before_apply(res)  # what it finds, before it changes anything
            in_state = res.check_apply(apply)
        except ResourceError as err:
            error = str(err)
        except Exception as err:  # a bug in a resource must not stop the engine
            LOG.exception("%s: internal error", res)
            error = f"internal error: {err!r}"
        self.events.put(("done", key, (res, in_state, error)))

    def _work_group(self, batch: list[tuple[Key, Resource]]) -> None:
        if self.reversals is not None and not (self.ctx.noop or batch[0][1].meta.noop):
            batch = self._recorded(batch)
            if not batch:
                return
        members = [res for _, res in batch]
        first = members[0]
        try:
            results = type(first).check_apply_group(members, not (self.ctx.noop or first.meta.noop))
            if len(results) != len(members):
                raise RuntimeError(f"{len(results)} results for {len(members)} resources")
        except ResourceError as err:
            results = [err] * len(members)
        except Exception as err:  # a bug in a resource must not stop the engine
            LOG.exception("%s: internal error in a group of %d", first, len(members))
            results = [ResourceError(f"internal error: {err!r}")] * len(members)
        for (key, res), result in zip(batch, results, strict=True):
            if isinstance(result, ResourceError):
                self.events.put(("done", key, (res, False, str(result))))
            else:
                self.events.put(("done", key, (res, bool(result), "")))

    def _recorded(self, batch: list[tuple[Key, Resource]]) -> list[tuple[Key, Resource]]:
        """The members of a group whose reversal (meta.reverse) is recorded;
        the others fail alone."""
        kept = []
        for key, res in batch:
            try:
                self.reversals.before_apply(res)
            except ResourceError as err:
                self.events.put(("done", key, (res, False, str(err))))
                continue
            kept.append((key, res))
        return kept

    def _done(self, key: Key, res: Resource, in_state: bool, error: str) -> None:
        self.in_flight -= 1
        if res.meta.sema:  # held from dispatch until the worker returned (late runs too)
            self.semas.release(res.meta.sema)
            self.candidates |= self.sema_waiters
            self.sema_waiters.clear()
        if self.retired.get(key) is res:
            del self.retired[key]
            res.close()
            self.candidates.add(key)
            return
        status = self.status.get(key)
        if status is None or status.running is not res:
            return
        status.running = None
        status.deadline = None
        if status.timed_out:  # whatever it returned, it returned too late
            status.timed_out = False
            in_state, error = False, timed_out_error(res.meta.timeout)
        status.checks += 1
        if status.dirty:  # poked while it ran: check again
            self.candidates.add(key)
        noop = self.ctx.noop or res.meta.noop
        self.stats.checked(res.kind, not noop, not in_state, bool(error))
        if error:
            status.attempts += 1
            status.error = error
            self.last_activity = self.clock()
            retry = res.meta.retry
            self.stats.failed(key, res.kind, SOFT if retry == -1 or status.attempts <= retry else HARD)
            if retry == -1 or status.attempts <= retry:
                status.retry_at = self.clock() + retry_wait(res.meta.delay)
                self._timer(status.retry_at, "retry", key)
                LOG.warning("%s: %s (attempt %d, retrying)", key_str(key), error, status.attempts)
            else:
                if status.state != FAILED:
                    LOG.error("%s: %s", key_str(key), error)
                status.state = FAILED
                self._block_dependants(key)
            return
        if status.state == FAILED:
            LOG.info("%s: recovered", key_str(key))
        status.error = ""
        if res.meta.retryreset:  # mgmt: else the retry budget is spent for the resource's lifetime
            status.attempts = 0
        status.state = OK
        status.would_change = noop and not in_state
        self.stats.succeeded(key)
        if status.drift_at is not None and not in_state and not noop:
            self.stats.repaired(self.clock() - status.drift_at)
            status.drift_at = None
        elif not status.dirty:  # in state: that event was no drift (its own write, say)
            status.drift_at = None
        self.watcher.rearm(key)
        if res.reversal_of is not None and not noop and self.reversals is not None:
            self.reversals.reversed(res)  # done once: it leaves the graph
            self._drop(key)
            return
        if not in_state:
            self.last_activity = self.clock()
            if noop:
                return
            status.changes += 1
            LOG.info("%s: applied", key_str(key))
            for dependant in self.graph.dependants[key]:
                dep_status = self.status[dependant]
                dep_status.dirty = True
                if (key, dependant) in self.graph.notifies:
                    dep_status.refresh = True
        self._in_state(key, res)

    def _quick_done(self, key: Key, res: Resource, status: Status) -> None:
        """``_done`` of a quick check that found the resource in state: no run,
        no semaphore, no error, nothing changed (a repair-free check)."""
        status.dirty = False
        status.checks += 1
        self.stats.checked(res.kind, True, False, False)
        if status.state == FAILED:
            LOG.info("%s: recovered", key_str(key))
        status.error = ""
        if res.meta.retryreset:
            status.attempts = 0
        status.state = OK
        status.would_change = False
        self.stats.succeeded(key)
        status.drift_at = None   # an event that found it in state was no drift
        self.watcher.rearm(key)
        self._in_state(key, res)

    def _in_state(self, key: Key, res: Resource) -> None:
        """After a run that left the resource in state: its dependants may
        have been waiting for it; a polled one is checked again later."""
        for dependant in self.graph.dependants[key]:
            dep_status = self.status[dependant]
            if dep_status.state == BLOCKED:
                dep_status.state = PENDING
                dep_status.dirty = True
            self.candidates.add(dependant)
        if res.meta.poll > 0 and not res.meta.hidden:
            self._timer(self.clock() + res.meta.poll, "poll", key)

    def _cut_short(self, key: Key, res: Resource) -> None:
        """``meta.timeout`` has passed: the run fails, but only once its worker
        returns. Until then the resource stays running, so it is never run twice
        at once (a retry waits for the late run to end)."""
        status = self.status[key]
        status.timed_out = status.cancelling = True
        self.in_flight += 1  # the cancel is work under way too
        LOG.warning("%s: %s: cutting it short", key_str(key), timed_out_error(res.meta.timeout))

        def cancel() -> None:
            try:
                res.cancel()
            except Exception:  # a bug in a resource must not stop the engine
                LOG.exception("%s: internal error in cancel", res)
            # a cancel still under way could cut the next run short: that run waits for this
            self.events.put(("cancelled", key, None))

        threading.Thread(target=cancel, name=f"cancel {key_str(key)}", daemon=True).start()

    def _block_dependants(self, key: Key) -> None:
        todo = list(self.graph.dependants[key])
        while todo:
            dep = todo.pop()
            status = self.status[dep]
            if status.state != BLOCKED and status.running is None:
                status.state = BLOCKED
                todo.extend(self.graph.dependants[dep])

    def _timer(self, when: float, what: str, key: Key) -> None:
        self.seq += 1
        if what in GATE_TIMERS:
            self.gate_timers += 1
        heapq.heappush(self.timers, (when, self.seq, what, key))

    def _fire_timers(self) -> None:
        now = self.clock()
        while self.timers and self.timers[0][0] <= now:
            _, _, what, key = heapq.heappop(self.timers)
            if what in GATE_TIMERS:
                self.gate_timers -= 1
            status = self.status.get(key)
            if status is None:
                continue
            if what == "retry" and status.retry_at is not None and status.retry_at <= now:
                status.retry_at = None
                status.retrying = True
                status.dirty = True
                self.candidates.add(key)
            elif (what == "timeout" and status.running is not None and status.deadline is not None
                    and status.deadline <= now and not status.timed_out):
                self._cut_short(key, status.running)
            elif what == "limit" and status.limited_until is not None and status.limited_until <= now:
                status.limited_until = None
                self.candidates.add(key)
            elif what == "poll" and not status.dirty:
                status.dirty = True
                self.candidates.add(key)

    # --- graph swaps -----------------------------------------------------------
    def _swap(self, graph: Graph) -> None:
        self.swaps += 1
        old = self.graph
        kept = 0
        carried: dict[Key, int] = {}    # retry counts that outlive a replaced instance
        for key, res in list(old.resources.items()):
            new = graph.resources.get(key)
            status = self.status.get(key)
            # the same instance (a graph extended by collected resources keeps the
            # others), or one found equal to it before (the loaded graph's, whose
            # running twin is this one since a reload): no need to compare parameters
            same = new is not None and (new is res or new is self.twins.get(key) or res.same_as(new))
            if same and not rewatched(res, status):
                if new is not res:
                    self.twins[key] = new
                graph.resources[key] = res  # keep the running instance and its watches
                kept += 1
                continue
            if new is not None and status is not None:
                if rewatched(res, status):
                    LOG.info("%s: failed for good: restarted by the graph swap (meta.rewatch)",
                             key_str(key))
                if not new.meta.reset:  # mgmt's MetaState: kept unless meta.reset
                    carried[key] = status.attempts
            self._retire(key, res)
        self.graph = graph
        watches: list[tuple[Key, list[str]]] = []
        started: set[Key] = set()
        for key, res in graph.resources.items():
            if key in old.resources and old.resources[key] is res:
                continue
            res.lend(self.ctx)
            status = self.status[key] = Status(key, attempts=carried.get(key, 0))
            self.tally.add(status)
            if not res.meta.hidden:  # mgmt: a hidden resource does not watch
                self._start_watch(key, res, watches)
            started.add(key)
        self.watcher.watch_many(watches)
        for key in started:
            # one that waits for another just started is not a candidate yet: it becomes
            # one when that one is done (10,000 files of one directory: one pass, not two)
            requires = graph.requires[key]
            if not requires or requires.isdisjoint(started) or any(
                    self.status[dep].state in (FAILED, BLOCKED) for dep in requires):
                self.candidates.add(key)
        # an edge may have appeared or gone: recheck whoever now depends on something
        for key in graph.resources:
            if key not in started and graph.requires[key] != (old.requires.get(key) or set()):
                self.status[key].dirty = True
                self.candidates.add(key)
        self.last_activity = self.clock()
        if old.resources and (kept != len(graph) or kept != len(old)):
            LOG.info("graph swapped: %d kept, %d started, %d stopped", kept,
                     len(graph) - kept, len(old) - kept)

    def _drop(self, key: Key) -> None:
        """Takes one resource out of the running graph (a reversal that is done)."""
        graph = self.graph
        res = graph.resources.pop(key)
        for dep in graph.requires.pop(key):   # the graph's sets may be shared: new ones
            graph.dependants[dep] = graph.dependants[dep] - {key}
        for dependant in graph.dependants.pop(key):
            graph.requires[dependant] = graph.requires[dependant] - {key}
            self.candidates.add(dependant)
        graph.notifies = {pair for pair in graph.notifies if key not in pair}
        self._retire(key, res)
        self.last_activity = self.clock()

    def _retire(self, key: Key, res: Resource) -> None:
        self.twins.pop(key, None)
        self.stats.forget(key)
        self.watcher.unwatch(key)
        stop = self.stops.pop(key, None)
        if stop is not None:
            stop()
        status = self.status.pop(key, None)
        if status is not None:
            self.tally.remove(status)
        if status is not None and status.running is res:
            self.retired[key] = res  # closed when its worker is done
        else:
            res.close()

    def _start_watch(self, key: Key, res: Resource, watches: list[tuple[Key, list[str]]]) -> None:
        """Its own event source now; its paths into ``watches`` (watched together)."""
        if res.meta.poll < 0:  # mgmt's poll -1: checked once, never watched
            return
        paths = res.watch_paths()
        if paths and res.meta.poll <= 0:
            watches.append((key, paths))
        if type(res).start_watch is Resource.start_watch:
            return   # no event source of its own (most kinds): no callback to make
        stop = res.start_watch(lambda: self.poke(key))
        if stop is not None:
            self.stops[key] = stop

    # --- state -------------------------------------------------------------------
    def _busy(self) -> bool:
        """Work is under way or can start. A dirty resource that waits on a
        failed one is not work: it cannot start until something changes."""
        return bool(self.in_flight or self.candidates or self.retired or self.holds
                    or self.gate_timers > 0)

    def hold(self, reason: str) -> None:
        """Not converged until released (e.g. the collected set is not known yet)."""
        self.events.put(("hold", reason, True))

    def release(self, reason: str) -> None:
        self.events.put(("hold", reason, False))

    def _track_quiet(self) -> None:
        busy = self._busy()
        self.quiet_since = None if busy else self.last_activity
        if not busy and self.first_pass is None and self.swaps:
            self.first_pass = (self.clock(), time.process_time())

    def _settled_for(self) -> float:
        return 0.0 if self.quiet_since is None else self.clock() - self.quiet_since

    def _summarize(self) -> Summary:
        # a poll or a re-check in flight does not make a converged node converging
        tally = self.tally
        busy = self.quiet_since is None and (bool(self.candidates) or bool(self.holds)
                                             or tally.waiting > 0)
        counts = tally.counts
        errors = [f"{key_str(key)}: {status.error}" for key, status in tally.failed.items()]
        if counts[FAILED] or counts[BLOCKED]:
            state = "failed" if not busy else "converging"
        elif not busy and self.clock() - self.last_activity >= self.converged_after:
            state = "converged"
        else:
            state = "converging"
        summary = Summary(state, len(self.status), counts[OK], counts[FAILED], counts[BLOCKED],
                          counts[PENDING], tuple(sorted(errors)[:5]))
        if summary != self.last_summary:
            self.last_summary = summary
            self.on_summary(summary)
        self._view()
        return summary

    def _view(self) -> None:
        """Hands the graph and its drawn states to ``on_view`` when either
        changed (with the summary: at most 10 times a second while busy). The
        callee must only queue them: this is the control thread."""
        if self.on_view is None:
            return
        if self.graph is self.viewed[0] and self.tally.version == self.viewed_version:
            return
        self.viewed_version = self.tally.version
        states = dict(self.tally.shown)   # a copy: the callee reads it on another thread
        if self.graph is not self.viewed[0] or states != self.viewed[1]:
            self.viewed = (self.graph, states)
            self.on_view(self.graph, states)

    def _shutdown(self) -> None:
        self.runs.clear()   # runs not started yet are dropped, as the pool's queued tasks
        for key in list(self.stops):
            self.stops.pop(key)()
        running = [s.running for s in self.status.values() if s.running is not None]
        for res in [*running, *self.retired.values()]:
            threading.Thread(target=res.interrupt, daemon=True).start()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for res in [*self.graph.resources.values(), *self.retired.values()]:
            res.close()
        # closing an inotify descriptor that has watches waits out a kernel grace
        # period (~10 ms): on a thread of its own, while the engine stops the rest
        self.watcher_closing = threading.Thread(target=self.watcher.close, name="watch-close")
        self.watcher_closing.start()
        self.stopped.set()

    def closed(self, timeout: float = 5) -> None:
        """Waits until the watcher is closed (after ``run`` returned)."""
        if self.watcher_closing is not None:
            self.watcher_closing.join(timeout)
