"""``timer``: ticks every ``interval`` seconds (mgmt's timer).

After each tick the first check reports a change, so whatever depends on the
timer over a ``notify`` edge is refreshed; until the next tick it is in state.
A refresh of the timer itself restarts its interval (and counts as a change,
as in mgmt). The first tick comes one interval after the timer starts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from mgmtd.resources.base import YEAR, Field, FieldError, Meta, Resource


class TimerResource(Resource):
    kind = "timer"
    FIELDS = {
        "interval": Field((int,), None, required=True, doc="seconds between ticks, > 0", min=1, max=YEAR),
    }

    def __init__(self, name: str, params: dict[str, Any], meta: Meta | None = None) -> None:
        super().__init__(name, params, meta)
        self._lock = threading.Lock()
        self._ticks = 0      # written by the ticking thread
        self._seen = 0       # ticks already reported as a change
        self._wake = threading.Event()
        self._restart = False

    def validate(self) -> None:
        if self.interval is None:   # its range is checked with every field's, on construction
            raise FieldError("interval", "field 'interval' is required")

    def check_apply(self, apply: bool) -> bool:
        with self._lock:
            ticked = self._ticks != self._seen
            # a tick is observed, not applied: noop mode consumes it too, so
            # it is reported once rather than at every later check
            self._seen = self._ticks
        if not (ticked or self.refresh):
            return True
        if not apply:
            self.ctx.report("info", f"{self}: would notify its dependants")
            return False
        if self.refresh:
            with self._lock:
                self._restart = True
            self._wake.set()
        return False

    def start_watch(self, poke: Callable[[], None]) -> Callable[[], None] | None:
        stopping = threading.Event()

        def run() -> None:
            deadline = time.monotonic() + self.interval
            while True:
                woken = self._wake.wait(max(0.0, deadline - time.monotonic()))
                if stopping.is_set():
                    return
                if woken:
                    self._wake.clear()
                    with self._lock:
                        restart, self._restart = self._restart, False
                    if restart:
                        deadline = time.monotonic() + self.interval
                    continue
                with self._lock:
                    self._ticks += 1
                poke()
                # keep the rhythm, but never fire a burst to catch up after a stall
                deadline += self.interval
                if deadline <= time.monotonic():
                    deadline = time.monotonic() + self.interval

        thread = threading.Thread(target=run, name=f"tick-{self}", daemon=True)
        thread.start()

        def stop() -> None:
            stopping.set()
            self._wake.set()
            thread.join()

        return stop
