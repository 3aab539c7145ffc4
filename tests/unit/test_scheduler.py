"""The scheduler (DESIGN.md section 5): dependency order, parallelism, failure
isolation, retries, notify/refresh, and graph hot-swaps. Uses a ``probe``
resource that records every call it gets."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgmtd.engine import scheduler as scheduler_module
from mgmtd.engine.scheduler import BLOCKED, FAILED, OK, Scheduler
from mgmtd.graph import Edge, build
from mgmtd.resources.base import Context, Field, Meta, Resource, ResourceError
from tests.harness import wait_for

GUARD = 5.0  # seconds before a run that should have ended is declared hung
POLL = 0.005  # the scheduler's events come fast: poll them closely


@dataclass
class Call:
    name: str
    start: float
    end: float
    seq_start: int
    seq_end: int
    apply: bool
    refresh: bool
    result: str  # "changed" | "in_state" | "failed"
    instance: int


@dataclass
class Recorder:
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: list[Call] = field(default_factory=list)
    closed: list[tuple[str, int]] = field(default_factory=list)
    seq: int = 0

    def tick(self) -> int:
        with self.lock:
            self.seq += 1
            return self.seq

    def of(self, name: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.name == name]

    def applied(self, name: str) -> list[Call]:
        return [c for c in self.of(name) if c.result == "changed"]


class Probe(Resource):
    """Reports "changed" ``changes`` times, then "in state"; fails the first
    ``fail`` calls; sleeps ``sleep`` seconds in every call."""

    kind = "probe"
    FIELDS = {"version": Field((int,), 0)}  # only so a swap can see a "changed" resource

    def __init__(self, name: str, rec: Recorder, *, changes: int = 1, fail: int = 0,
                 sleep: float = 0.0, version: int = 0, meta: Meta | None = None,
                 meet: threading.Barrier | None = None) -> None:
        super().__init__(name, {"version": version}, meta)
        self.rec = rec
        self.changes = changes
        self.fail = fail
        self.sleep = sleep
        self.meet = meet  # every probe sharing it must be inside check_apply at once

    def check_apply(self, apply: bool) -> bool:
        start, seq_start = time.monotonic(), self.rec.tick()
        if self.meet is not None:
            self.meet.wait(GUARD / 2)  # raises BrokenBarrierError (a failed call) when alone
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail > 0:
            self.fail -= 1
            result = "failed"
        elif self.changes > 0 and apply:
            self.changes -= 1
            result = "changed"
        elif self.changes > 0:
            result = "changed"  # noop: would change, changes nothing
        else:
            result = "in_state"
        with self.rec.lock:
            self.rec.seq += 1
            self.rec.calls.append(Call(self.name, start, time.monotonic(), seq_start, self.rec.seq,
                                       apply, self.refresh, result, id(self)))
        if result == "failed":
            raise ResourceError(f"{self.name} told to fail")
        return result == "in_state"

    def close(self) -> None:
        with self.rec.lock:
            self.rec.closed.append((self.name, id(self)))


def graph_of(resources: list[Probe], pairs=(), notify=()):
    key = {r.name: r.key for r in resources}
    edges = [Edge(key[s], key[t]) for s, t in pairs]
    edges += [Edge(key[s], key[t], notify=True) for s, t in notify]
    return build(resources, edges)


def run(graph, workers: int = 4, timeout: float = 0.1, ctx: Context | None = None) -> tuple[int, Scheduler]:
    """Runs to convergence in a thread, failing the test (not hanging) when it
    does not end."""
    sched = Scheduler(ctx or Context(), workers=workers)
    sched.swap(graph)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(sched.run(converged_timeout=timeout)),
                              daemon=True)
    thread.start()
    thread.join(GUARD)
    if thread.is_alive():
        sched.stop()
        thread.join(GUARD)
        pytest.fail(f"run(converged_timeout={timeout}) did not return within {GUARD}s")
    return result[0], sched


class Background:
    """A scheduler running with no timeout, stopped at the end of the test. Its
    summaries (what the engine reports) are kept: a summary with nothing pending
    is the scheduler saying it has dealt with everything it was given."""

    def __init__(self, graph, workers: int = 4) -> None:
        self.summaries: list = []
        self.sched = Scheduler(Context(), workers=workers, on_summary=self.summaries.append)
        self.sched.swap(graph)
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(self.sched.run()), daemon=True)
        self.thread.start()

    def stop(self) -> int:
        self.sched.stop()
        self.thread.join(GUARD)
        assert not self.thread.is_alive(), "run() did not stop"
        return self.result[0]


# --- order and parallelism --------------------------------------------------------

def assert_after_deps(rec: Recorder, pairs) -> None:
    for dep, dependant in pairs:
        dep_done = max(c.seq_end for c in rec.of(dep))
        for call in rec.of(dependant):
            assert call.seq_start > dep_done, f"{dependant} ran before {dep} was in state"


def test_all_in_state_returns_zero_and_each_resource_is_checked():
    rec = Recorder()
    rc, sched = run(graph_of([Probe(n, rec, changes=0) for n in "abc"]))
    assert rc == 0
    assert sorted(c.name for c in rec.calls) == ["a", "b", "c"]
    assert all(c.apply for c in rec.calls)
    assert {s.state for s in sched.status.values()} == {OK}


def test_dependency_order():
    rec = Recorder()
    pairs = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e"), ("x", "e")]
    resources = [Probe(n, rec, sleep=0.01) for n in "edcbax"]
    rc, _ = run(graph_of(resources, pairs))
    assert rc == 0
    for name in "abcdex":
        assert len(rec.applied(name)) == 1
    assert_after_deps(rec, pairs)


def test_dependant_waits_for_a_slow_dependency():
    rec = Recorder()
    rc, _ = run(graph_of([Probe("slow", rec, sleep=0.15), Probe("next", rec)], [("slow", "next")]))
    assert rc == 0
    (slow,), (after,) = rec.of("slow"), rec.of("next")
    assert after.start >= slow.end


def test_independent_resources_run_in_parallel():
    # each waits inside check_apply for the other: run one after the other, both fail
    rec = Recorder()
    meet = threading.Barrier(2)
    rc, _ = run(graph_of([Probe("p1", rec, meet=meet), Probe("p2", rec, meet=meet)]), workers=2)
    assert [c.result for c in rec.calls] == ["changed", "changed"], "not run in parallel"
    assert rc == 0


def test_one_worker_runs_one_at_a_time():
    rec = Recorder()
    rc, _ = run(graph_of([Probe("p1", rec, sleep=0.05), Probe("p2", rec, sleep=0.05)]), workers=1)
    assert rc == 0
    first, second = sorted(rec.calls, key=lambda c: c.start)
    assert second.start >= first.end


# --- failures -------------------------------------------------------------------------

def test_failed_resource_blocks_only_its_dependants():
    rec = Recorder()
    resources = [Probe("bad", rec, fail=10**6), Probe("child", rec), Probe("grandchild", rec),
                 Probe("other", rec), Probe("other2", rec)]
    bg = Background(graph_of(resources, [("bad", "child"), ("child", "grandchild"), ("other", "other2")]))
    try:
        # settled: every resource checked, failed or blocked, nothing left to dispatch
        wait_for(lambda: any(s.state == "failed" and s.pending == 0 for s in bg.summaries), GUARD,
                 "a summary with the failure and nothing pending", POLL)
    finally:
        assert bg.stop() == 0
    assert len(rec.of("bad")) == 1  # meta retry 0: one attempt
    assert rec.of("child") == [] and rec.of("grandchild") == []
    assert len(rec.applied("other")) == 1 and len(rec.applied("other2")) == 1
    status = bg.sched.status
    assert status[("probe", "bad")].state == FAILED
    assert "told to fail" in status[("probe", "bad")].error
    assert status[("probe", "child")].state == BLOCKED
    assert status[("probe", "grandchild")].state == BLOCKED
    assert status[("probe", "other2")].state == OK


def test_failure_without_dependants_returns_one():
    rec = Recorder()
    rc, sched = run(graph_of([Probe("bad", rec, fail=10**6), Probe("good", rec)]))
    assert rc == 1
    assert len(rec.applied("good")) == 1
    assert sched.last_summary.failed == 1


def test_failure_with_dependants_returns_one():
    # on HEAD (e2cb92e) this hung: blocked resources stayed dirty, so the run never settled
    rec = Recorder()
    rc, sched = run(graph_of([Probe("bad", rec, fail=10**6), Probe("child", rec), Probe("good", rec)],
                             [("bad", "child")]), timeout=0.1)
    assert rc == 1
    assert rec.of("child") == []
    assert sched.last_summary.blocked == 1


def test_retry_with_delay():
    rec = Recorder()
    flaky = Probe("flaky", rec, fail=2, meta=Meta(retry=2, delay=100))  # milliseconds
    rc, sched = run(graph_of([flaky, Probe("after", rec)], [("flaky", "after")]))
    assert rc == 0
    calls = rec.of("flaky")
    assert [c.result for c in calls] == ["failed", "failed", "changed"]
    for before, after in zip(calls, calls[1:], strict=False):
        assert after.start - before.end >= 0.1
    assert len(rec.applied("after")) == 1
    assert_after_deps(rec, [("flaky", "after")])
    assert sched.status[("probe", "flaky")].state == OK


def test_retry_delay_is_milliseconds_as_in_mgmt():
    assert scheduler_module.retry_wait(5000) == 5.0   # mgmt's retry1.yaml: 5 s, not 83 min
    assert scheduler_module.retry_wait(250) == 0.25
    assert scheduler_module.retry_wait(0) == 0.05     # never a spinning retry loop


def test_retries_exhausted_fails():
    rec = Recorder()
    rc, sched = run(graph_of([Probe("flaky", rec, fail=3, meta=Meta(retry=2, delay=10))]))
    assert rc == 1
    assert [c.result for c in rec.of("flaky")] == ["failed"] * 3
    assert sched.status[("probe", "flaky")].state == FAILED


def test_meta_noop_changes_nothing():
    rec = Recorder()
    rc, _ = run(graph_of([Probe("quiet", rec, meta=Meta(noop=True))]))
    assert rc == 0
    assert [c.apply for c in rec.of("quiet")] == [False]


# --- notify ---------------------------------------------------------------------------

def test_notify_sets_refresh_when_the_source_changed():
    rec = Recorder()
    resources = [Probe("src", rec), Probe("notified", rec), Probe("plain", rec)]
    rc, _ = run(graph_of(resources, pairs=[("src", "plain")], notify=[("src", "notified")]))
    assert rc == 0
    assert [c.refresh for c in rec.of("notified")] == [True]
    assert [c.refresh for c in rec.of("plain")] == [False]
    assert [c.refresh for c in rec.of("src")] == [False]


def test_no_refresh_when_the_source_was_in_state():
    rec = Recorder()
    resources = [Probe("src", rec, changes=0), Probe("notified", rec)]
    rc, _ = run(graph_of(resources, notify=[("src", "notified")]))
    assert rc == 0
    assert [c.refresh for c in rec.of("notified")] == [False]


# --- property: random DAGs ----------------------------------------------------------------

@st.composite
def dags(draw):
    n = draw(st.integers(1, 25))
    perm = draw(st.permutations(range(n)))  # names not in dependency order
    pairs = set()
    for j in range(1, n):
        for i in draw(st.sets(st.integers(0, j - 1), max_size=min(j, 3))):
            pairs.add((f"r{perm[i]:02d}", f"r{perm[j]:02d}"))
    return n, sorted(pairs)


class InertWatcher:
    """Stands in for the inotify watcher, which probes never use (they watch no
    path): the real one takes up to 200 ms to close, too slow for 30 runs."""

    def __init__(self, poke) -> None:
        self.watched: list = []

    def watch(self, key, paths) -> None:
        self.watched.append((key, list(paths)))

    def watch_many(self, watches) -> None:
        for key, paths in watches:
            self.watch(key, paths)

    def rearm(self, key) -> None:
        pass

    def unwatch(self, key) -> None:
        pass

    def close(self) -> None:
        pass


@settings(max_examples=30, deadline=None)
@given(dags())
def test_random_dag_every_resource_applied_once_after_its_dependencies(case):
    n, pairs = case
    rec = Recorder()
    resources = [Probe(f"r{i:02d}", rec) for i in range(n)]
    with mock.patch.object(scheduler_module, "FileWatcher", InertWatcher):
        rc, sched = run(graph_of(resources, pairs), workers=4, timeout=0.05)
    assert isinstance(sched.watcher, InertWatcher) and sched.watcher.watched == []
    assert rc == 0
    for res in resources:
        assert len(rec.applied(res.name)) == 1, f"{res.name}: {rec.of(res.name)}"
    assert_after_deps(rec, pairs)


# --- hot swap -------------------------------------------------------------------------------

def test_hot_swap_keeps_unchanged_restarts_changed_closes_removed():
    rec = Recorder()
    keep, change, remove = Probe("keep", rec), Probe("change", rec), Probe("remove", rec)
    bg = Background(graph_of([keep, change, remove]))
    try:
        # all three done (not only applied: their workers are back), so the swap retires
        # them at once; the new "change" starts after the swap, by which time it has
        # closed what it retires
        wait_for(lambda: any(s.ok == 3 and s.pending == 0 for s in bg.summaries), GUARD,
                 "all three done", POLL)
        keep2, change2, added = Probe("keep", rec), Probe("change", rec, version=2), Probe("added", rec)
        bg.sched.swap(graph_of([keep2, change2, added]))
        wait_for(lambda: rec.applied("added") and [c for c in rec.of("change") if c.instance == id(change2)],
                 GUARD, "the added and the changed resource to run", POLL)
        with rec.lock:
            closed_before_stop = list(rec.closed)
    finally:
        assert bg.stop() == 0
    assert ("remove", id(remove)) in closed_before_stop
    assert ("change", id(change)) in closed_before_stop
    assert ("keep", id(keep)) not in closed_before_stop
    # the unchanged resource: same instance kept, not re-applied, the new one never ran
    assert bg.sched.graph.resources[keep.key] is keep
    assert [c.instance for c in rec.of("keep")] == [id(keep)]
    assert [c.instance for c in rec.applied("change")] == [id(change), id(change2)]
    assert len(rec.applied("added")) == 1
    assert len(rec.of("remove")) == 1
    assert set(bg.sched.status) == {keep.key, change.key, added.key}


class Compared(Probe):
    """A probe that notes each comparison a swap makes of it."""

    compared: list[str] = []

    def same_as(self, other) -> bool:
        Compared.compared.append(self.name)
        return super().same_as(other)


def test_a_swap_compares_a_reloaded_instance_with_its_running_twin_once():
    """Issue 19: after a reload the loaded graph's instances are not the running
    ones; a swap keeps the running one and remembers the pair, so the next swaps
    (a collected change, 10,000 resources) do not compare each one again."""
    rec = Recorder()
    keep, other = Compared("keep", rec), Compared("other", rec)
    sched = Scheduler(Context(), workers=1)
    try:
        Compared.compared = []
        sched._swap(graph_of([keep, other]))
        reloaded = Compared("keep", rec)                     # equal, another instance
        sched._swap(graph_of([reloaded, Compared("other", rec, version=2)]))
        assert sorted(Compared.compared) == ["keep", "other"]
        assert sched.graph.resources[keep.key] is keep
        Compared.compared = []
        sched._swap(graph_of([reloaded, Compared("other", rec, version=3)]))   # the next change
        assert Compared.compared == ["other"] and sched.graph.resources[keep.key] is keep
        changed = Compared("keep", rec, version=2)
        sched._swap(graph_of([changed, Compared("other", rec, version=3)]))
        assert sched.graph.resources[keep.key] is changed
        Compared.compared = []
        sched._swap(graph_of([reloaded, Compared("other", rec, version=3)]))   # its twin is gone
        assert "keep" in Compared.compared and sched.graph.resources[keep.key] is reloaded
    finally:
        sched._shutdown()


def test_hot_swap_waits_for_the_old_worker():
    rec = Recorder()
    old = Probe("r", rec, sleep=0.3)
    bg = Background(graph_of([old]))
    try:
        wait_for(lambda: rec.seq >= 1, GUARD, "the old instance to start", POLL)  # it is inside check_apply
        new = Probe("r", rec, version=2)
        bg.sched.swap(graph_of([new]))
        wait_for(lambda: [c for c in rec.of("r") if c.instance == id(new)], GUARD, "the new instance to run", POLL)
        with rec.lock:
            closed = list(rec.closed)
    finally:
        bg.stop()
    (old_call,) = [c for c in rec.of("r") if c.instance == id(old)]
    (new_call,) = [c for c in rec.of("r") if c.instance == id(new)]
    assert new_call.seq_start > old_call.seq_end, "the new instance raced the old worker"
    assert ("r", id(old)) in closed


def test_swap_adding_an_edge_orders_the_new_dependant():
    rec = Recorder()
    a, b = Probe("a", rec), Probe("b", rec)
    bg = Background(graph_of([a, b]))
    try:
        wait_for(lambda: rec.applied("a") and rec.applied("b"), GUARD, "a and b applied", POLL)
        c = Probe("c", rec, sleep=0.05)
        bg.sched.swap(graph_of([Probe("a", rec), Probe("b", rec), c], [("c", "b")]))
        wait_for(lambda: len(rec.of("b")) == 2, GUARD, "b checked again", POLL)
    finally:
        bg.stop()
    # b got a new dependency: it is checked again, after c
    assert rec.of("b")[1].seq_start > rec.of("c")[0].seq_end
    assert [c.result for c in rec.of("b")] == ["changed", "in_state"]


# --- autogroup ----------------------------------------------------------------------------

class Batched(Probe):
    """A groupable probe: each ``check_apply_group`` call is recorded as one batch."""

    kind = "batched"
    GROUPABLE = True
    batches: list[list[str]] = []

    def __init__(self, *args, token: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.token = token

    def group_token(self):
        return self.token

    @classmethod
    def check_apply_group(cls, members, apply):
        cls.batches.append(sorted(m.name for m in members))
        return super().check_apply_group(members, apply)


@pytest.fixture
def batches():
    Batched.batches = []
    return Batched.batches


def test_ready_groupable_resources_run_in_one_batch_per_token(batches):
    rec = Recorder()
    resources = [Batched(n, rec) for n in ("a", "b", "c")] + [Batched("d", rec, token="x"),
                                                               Batched("e", rec, token="x")]
    rc, _ = run(graph_of(resources))
    assert rc == 0
    assert sorted(batches) == [["a", "b", "c"], ["d", "e"]]
    assert all([c.result for c in rec.of(n)] == ["changed"] for n in "abcde")


def test_autogroup_false_and_dependencies_keep_resources_apart(batches):
    rec = Recorder()
    resources = [Batched("a", rec), Batched("b", rec), Batched("c", rec),
                 Batched("solo", rec, meta=Meta(autogroup=False))]
    rc, _ = run(graph_of(resources, pairs=[("a", "c")]))
    assert rc == 0
    assert ["a", "b"] in batches  # c waits for a: not ready with it
    assert not any("solo" in batch for batch in batches)
    assert not any(batch == ["a", "c"] for batch in batches)
    assert_after_deps(rec, [("a", "c")])


def test_a_failing_member_fails_alone(batches):
    rec = Recorder()
    resources = [Batched("good", rec), Batched("bad", rec, fail=1), Batched("after_bad", rec)]
    rc, sched = run(graph_of(resources, pairs=[("bad", "after_bad")]))
    assert rc == 1
    assert ["bad", "good"] in batches
    assert sched.status[("batched", "good")].state == OK
    assert sched.status[("batched", "bad")].state == FAILED
    assert sched.status[("batched", "after_bad")].state == BLOCKED


def test_a_group_that_raises_fails_its_members_and_the_engine_goes_on(batches):
    rec = Recorder()

    class Broken(Batched):
        @classmethod
        def check_apply_group(cls, members, apply):
            raise KeyError("bug")

    resources = [Broken("a", rec), Broken("b", rec), Probe("other", rec)]
    rc, sched = run(graph_of(resources))
    assert rc == 1
    assert sched.status[("batched", "a")].error.startswith("internal error")
    assert sched.status[("probe", "other")].state == OK


def test_a_group_that_raises_a_resource_error_gives_it_to_each_member(batches):
    rec = Recorder()

    class Refused(Batched):
        @classmethod
        def check_apply_group(cls, members, apply):
            raise ResourceError("dpkg is locked")

    rc, sched = run(graph_of([Refused("a", rec), Refused("b", rec)]))
    assert rc == 1
    assert [sched.status[("batched", n)].error for n in "ab"] == ["dpkg is locked"] * 2


def test_a_resource_retired_while_it_runs_is_closed_when_the_engine_stops():
    rec = Recorder()
    slow = Probe("slow", rec, sleep=0.5)
    background = Background(graph_of([slow]))
    wait_for(lambda: background.sched.in_flight == 1 or rec.of("slow"), GUARD, "slow running", interval=POLL)
    background.sched.swap(graph_of([]))  # slow leaves the graph while its worker runs
    assert background.stop() == 0
    assert ("slow", id(slow)) in rec.closed


def test_resources_one_change_touched_are_dirty_together_so_dependencies_run_first():
    """A change to a file two resources watch (/etc/group: a user and its group)
    pokes both in one event: the user waits for the group instead of racing it."""
    rec = Recorder()
    group, user = Probe("group", rec, changes=0), Probe("user", rec, changes=0)
    background = Background(graph_of([group, user], pairs=[("group", "user")]))
    try:
        wait_for(lambda: len(rec.of("user")) == 1, GUARD, "the first pass", interval=POLL)
        for _ in range(20):
            runs = len(rec.of("user"))
            background.sched.poke_all({user.key, group.key})
            wait_for(lambda r=runs: len(rec.of("user")) == r + 1, GUARD, "the user checked again",
                     interval=POLL)
            assert rec.of("group")[-1].seq_end < rec.of("user")[-1].seq_start
    finally:
        background.stop()


def test_the_file_watcher_pokes_every_resource_of_a_change_at_once(tmp_path):
    from mgmtd.engine.watch import FileWatcher

    calls: list[set] = []
    watcher = FileWatcher(calls.append)
    try:
        shared = tmp_path / "group"
        shared.write_text("a\n")
        watcher.watch(("user", "u"), [str(shared)])
        watcher.watch(("group", "g"), [str(shared)])
        shared.write_text("b\n")
        wait_for(lambda: calls, GUARD, "a poke", interval=POLL)
        assert calls[0] == {("user", "u"), ("group", "g")}
    finally:
        watcher.close()
