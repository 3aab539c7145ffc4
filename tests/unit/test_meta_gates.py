"""Meta params the scheduler enforces around a check/apply (mgmt's
``engine/metaparams.go``): ``timeout``, ``limit``/``burst`` and ``sema``."""

from __future__ import annotations

import math
import threading
import time

import pytest

from mgmtd.engine.gates import TokenBucket
from mgmtd.engine.scheduler import FAILED, OK
from mgmtd.resources.base import FieldError, Meta, Resource, ResourceError
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import load_text
from tests.harness import wait_for
from tests.unit.test_scheduler import GUARD, Background, Probe, Recorder, graph_of, run


class Stuck(Resource):
    """Its first ``stuck`` runs wait until cancelled (or, with ``deaf``, until
    ``release`` is set: a run that cannot be cut short); later runs succeed.
    Records (start, end) of every run and whether two ever overlapped."""

    kind = "stuck"

    def __init__(self, name: str, *, stuck: int = 1, deaf: bool = False, meta: Meta | None = None) -> None:
        super().__init__(name, {}, meta)
        self.stuck = stuck
        self.deaf = deaf
        self.cancelled = threading.Event()
        self.release = threading.Event()
        self.runs: list[tuple[float, float, str]] = []
        self.active = 0
        self.overlapped = False
        self.lock = threading.Lock()

    def check_apply(self, apply: bool) -> bool:
        with self.lock:
            self.active += 1
            self.overlapped |= self.active > 1
        start = time.monotonic()
        try:
            if self.stuck > 0:
                self.stuck -= 1
                (self.release if self.deaf else self.cancelled).wait(GUARD)
                self.cancelled.clear()
                self.runs.append((start, time.monotonic(), "cut"))
                raise ResourceError("cut short")
            self.runs.append((start, time.monotonic(), "ok"))
            return True
        finally:
            with self.lock:
                self.active -= 1

    def cancel(self) -> None:
        self.cancelled.set()


def test_timeout_fails_the_run_and_retry_runs_it_again():
    res = Stuck("s", meta=Meta(timeout=100, retry=1))
    rc, sched = run(graph_of([res]))
    assert rc == 0
    assert [what for *_, what in res.runs] == ["cut", "ok"]
    start, end, _ = res.runs[0]
    # cut short by the deadline, not by the guard; the deadline counts from the
    # dispatch, a little before the resource notes its start (seen: 0.0995 s)
    assert 0.08 <= end - start < GUARD / 2
    assert sched.status[res.key].state == OK


def test_timeout_without_retry_fails_with_its_own_message():
    res = Stuck("s", meta=Meta(timeout=50))
    rc, sched = run(graph_of([res]))
    assert rc == 1
    assert sched.status[res.key].state == FAILED
    assert sched.status[res.key].error == "timed out after 50 ms"


def test_a_run_that_ignores_cancel_stays_running_until_it_returns():
    """The deadline passes, the retry is due at once, yet the second run starts
    only after the first has returned: never two runs of one resource at once."""
    res = Stuck("s", deaf=True, meta=Meta(timeout=50, retry=1))
    timer = threading.Timer(0.5, res.release.set)
    timer.start()
    try:
        rc, sched = run(graph_of([res]))
    finally:
        timer.cancel()
    assert rc == 0
    assert [what for *_, what in res.runs] == ["cut", "ok"]
    assert res.runs[1][0] >= res.runs[0][1]
    assert not res.overlapped


# --- limit and burst --------------------------------------------------------------

def test_token_bucket_starts_full_and_refills_at_the_limit():
    bucket = TokenBucket(limit=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]   # the burst
    assert bucket.take(100.0) == pytest.approx(0.5)                     # then one per 1/limit s
    assert bucket.take(100.25) == pytest.approx(0.25)                   # waiting takes nothing
    assert bucket.take(100.5) == 0.0
    assert bucket.take(110.0) == 0.0                                    # refills to burst, no more
    assert [bucket.take(110.0) for _ in range(3)][-1] == pytest.approx(0.5)


@pytest.mark.parametrize(("meta", "col", "words"), [
    ("limit: 0.2", 14, "meta.limit 0.2 needs meta.burst > 0"),
    ("limit: 0.2\n      burst: 0", 14, "meta.limit 0.2 needs meta.burst > 0"),
    ("limit: 0\n      burst: 5", 14, "meta.limit must be > 0"),
])
def test_a_limit_without_burst_is_refused_where_it_is_written(meta, col, words):
    text = f"resources:\n  noop:\n  - name: n\n    meta:\n      {meta}\n"
    with pytest.raises(GraphError) as info:
        load_text(text, "g.yaml")
    assert f"g.yaml:5:{col}: noop[n]: {words}" in str(info.value)


def test_limit_defaults_and_mgmt_spellings_are_accepted():
    assert (Meta().limit, Meta().burst) == (math.inf, 0)
    for meta in ("limit: .inf", "limit: .inf\n      burst: 0", "limit: 0.2\n      burst: 5"):
        load_text(f"resources:\n  noop:\n  - name: n\n    meta:\n      {meta}\n", "g.yaml")
    with pytest.raises(FieldError, match="needs meta.burst"):
        Meta(limit=1.0)   # a collected export is checked too


def test_limit_delays_runs_without_dropping_them():
    """Poked as fast as it can run for a while, a resource limited to 5 runs a
    second (burst 1) runs about that often; the last poke still gets its run."""
    rec = Recorder()
    probe = Probe("p", rec, changes=0, meta=Meta(limit=5.0, burst=1))
    bg = Background(graph_of([probe]))
    try:
        wait_for(lambda: len(rec.of("p")) == 1, GUARD, "the first run")
        start = time.monotonic()
        while time.monotonic() - start < 1.5:
            bg.sched.poke(probe.key)
            time.sleep(0.01)
        window = time.monotonic() - start
        ran_in_window = len(rec.of("p")) - 1
        assert ran_in_window <= 1 + 5 * window + 2   # generous: never 150 runs
        assert ran_in_window >= 2                     # delayed, not starved
        last_poke = time.monotonic()
        bg.sched.poke(probe.key)
        wait_for(lambda: rec.of("p")[-1].start > last_poke, GUARD, "a run after the last poke")   # not dropped
    finally:
        assert bg.stop() == 0


# --- sema -------------------------------------------------------------------------

def most_at_once(calls) -> int:
    edges = sorted([(c.start, 1) for c in calls] + [(c.end, -1) for c in calls], key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def test_sema_size_as_mgmt_reads_it():
    from mgmtd.engine.gates import sema_size
    assert [sema_size(i) for i in ("mylock", "mylock:1", "otherlock:42", ":13", "a:b", "a:0", "a:-2",
                                   "a:2:3")] == [1, 1, 42, 13, 1, 1, 1, 3]


def test_semaphores_take_all_or_none():
    from mgmtd.engine.gates import Semaphores
    semas = Semaphores()
    assert semas.available(("a:1", "b:2"))
    semas.acquire(("a:1", "b:2"))
    assert not semas.available(("b:2", "a:1")) and semas.available(("b:2",))
    semas.acquire(("b:2",))
    assert not semas.available(("b:2",))
    semas.release(("a:1", "b:2"))
    semas.release(("b:2",))
    assert semas.held == {}


def test_one_slot_sema_serialises_independent_resources():
    rec = Recorder()
    probes = [Probe(n, rec, sleep=0.1, meta=Meta(sema=("mylock:1",))) for n in "abcd"]
    probes.append(Probe("free", rec, sleep=0.1))
    rc, _ = run(graph_of(probes), workers=8)
    assert rc == 0
    locked = [c for c in rec.calls if c.name != "free"]
    assert len(locked) == 4 and most_at_once(locked) == 1
    assert most_at_once(rec.calls) == 2   # the one without the sema runs beside them


def test_sema_with_two_slots_lets_two_run_at_once():
    rec = Recorder()
    probes = [Probe(n, rec, sleep=0.2, meta=Meta(sema=("pair:2",))) for n in "abcde"]
    rc, _ = run(graph_of(probes), workers=8)
    assert rc == 0
    assert most_at_once(rec.calls) == 2


@pytest.mark.parametrize(("sema", "words"), [
    ("['']", "a semaphore id is empty"),
    ("['42']", "'42' is not a semaphore id"),
    ("[3]", "semaphore ids are strings"),
    ("mylock", "must be list"),
])
def test_bad_sema_is_refused_where_it_is_written(sema, words):
    text = f"resources:\n  noop:\n  - name: n\n    meta:\n      sema: {sema}\n"
    with pytest.raises(GraphError) as info:
        load_text(text, "g.yaml")
    assert "g.yaml:5:13: noop[n]:" in str(info.value) and words in str(info.value)


def test_collected_sema_comes_back_as_written():
    meta = Meta(sema=["mylock:1", "other"])
    assert meta.sema == ("mylock:1", "other") and meta == Meta(sema=("mylock:1", "other"))
    with pytest.raises(FieldError, match="not a semaphore id"):
        Meta(sema=["7"])
