"""Meta params the scheduler enforces around a check/apply (mgmt's
``engine/metaparams.go``): ``timeout``, ``limit``/``burst`` and ``sema``."""

from __future__ import annotations

import threading
import time

from mgmtd.engine.scheduler import FAILED, OK
from mgmtd.resources.base import Meta, Resource, ResourceError
from tests.unit.test_scheduler import GUARD, graph_of, run


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
    assert 0.1 <= end - start < GUARD / 2   # cut short by the deadline, not by the guard
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
