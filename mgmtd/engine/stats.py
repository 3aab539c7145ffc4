"""The engine's counters for /metrics (the supervisor serves them; the engine
sends ``protocol.EngineStats`` about once a second when they changed).

The scheduler's control thread counts check/apply runs, failures and repairs:
a dict increment per run, no lock (that thread is the only writer of those
fields, and a snapshot copies each dict whole, which the GIL makes atomic).
Exports and collects are counted from their own threads, under ``lock``."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable

from mgmtd import protocol
from mgmtd.graph import Key

SOFT, HARD = "soft", "hard"   # mgmt's failure label: retried or not


class Histogram:
    """Counts per bucket of ``protocol.LATENCY_BUCKETS``, and the sum."""

    def __init__(self) -> None:
        self.counts = [0] * (len(protocol.LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # Prometheus buckets are "less than or equal": bisect_left puts a value equal to a bound in it
        self.counts[bisect_left(protocol.LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    def frozen(self) -> protocol.Buckets:
        return protocol.Buckets(tuple(self.counts), self.sum)


class EngineStats:
    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self.wall = wall
        # control thread only
        self.checkapply: dict[tuple[str, bool, bool, bool], int] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self.failing: dict[Key, tuple[str, str]] = {}
        self.repair = Histogram()
        # whoever swaps a graph in (rebound whole, never changed in place)
        self.resources: dict[str, int] = {}
        self.graph_start = 0.0
        # the export and collect threads
        self.lock = threading.Lock()
        self.exports = 0
        self.export_syncs = 0
        self.export_latency = Histogram()
        self.collected = 0
        self.collect_updates = 0
        self.collect_latency = Histogram()

    # --- the scheduler's control thread ---------------------------------------------
    def checked(self, kind: str, apply: bool, eventful: bool, errorful: bool) -> None:
        """One check/apply ran (mgmt's labels: eventful = it found the resource
        out of state, errorful = it failed)."""
        label = (kind, apply, eventful, errorful)
        self.checkapply[label] = self.checkapply.get(label, 0) + 1

    def failed(self, key: Key, kind: str, failure: str) -> None:
        label = (kind, failure)
        self.failures[label] = self.failures.get(label, 0) + 1
        self.failing[key] = label

    def succeeded(self, key: Key) -> None:
        if key in self.failing:
            del self.failing[key]

    def forget(self, key: Key) -> None:
        """The resource left the graph."""
        self.succeeded(key)

    def repaired(self, seconds: float) -> None:
        self.repair.observe(seconds)

    # --- graph swaps ------------------------------------------------------------------
    def graph_started(self, kinds: Iterable[str]) -> None:
        """A new graph runs (mgmt's graph start time): its resources by kind."""
        counts: dict[str, int] = {}
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
        self.resources = counts
        self.graph_start = self.wall()

    # --- exports and collects (their own threads) --------------------------------------------
    def exports_published(self, count: int) -> None:
        with self.lock:
            self.exports = count

    def exports_synced(self, seconds: float) -> None:
        with self.lock:
            self.export_syncs += 1
            self.export_latency.observe(seconds)

    def collect_taken(self, collected: int, seconds: float) -> None:
        with self.lock:
            self.collected = collected
            self.collect_updates += 1
            self.collect_latency.observe(seconds)

    # --- what is sent -------------------------------------------------------------------------
    def snapshot(self) -> protocol.EngineStats:
        failing: dict[tuple[str, str], int] = {}
        for label in dict(self.failing).values():
            failing[label] = failing.get(label, 0) + 1
        with self.lock:
            exported = (self.exports, self.export_syncs, self.export_latency.frozen(), self.collected,
                        self.collect_updates, self.collect_latency.frozen())
        return protocol.EngineStats(
            checkapply=tuple(sorted((*label, n) for label, n in dict(self.checkapply).items())),
            failures=tuple(sorted((*label, n) for label, n in dict(self.failures).items())),
            failing=tuple(sorted((*label, n) for label, n in failing.items())),
            resources=tuple(sorted(dict(self.resources).items())),
            graph_start=self.graph_start, repair=self.repair.frozen(),
            exports=exported[0], export_syncs=exported[1], export_latency=exported[2],
            collected=exported[3], collect_updates=exported[4], collect_latency=exported[5])
