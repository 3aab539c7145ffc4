"""Each resource's run state in the scheduler, and the running totals the
node's summary and drawn view are made of.

The totals are kept up to date as states change (``Tally``), so a summary
costs the same with ten resources or a hundred thousand: walking every
resource at each summary (ten times a second while busy) made a converge of
N resources cost O(N^2)."""

from __future__ import annotations

from mgmtd.cluster.graphview import shown_state
from mgmtd.engine.gates import TokenBucket
from mgmtd.graph import Key
from mgmtd.resources.base import Resource

PENDING, OK, FAILED, BLOCKED = "pending", "ok", "failed", "blocked"


class Tally:
    """Counts by state, the failed ones, how many are dirty or wait for a
    retry, and each resource's drawn state (with a version that moves when
    one changes). Only the control thread touches it."""

    __slots__ = ("counts", "failed", "waiting", "shown", "version")

    def __init__(self) -> None:
        self.counts = {PENDING: 0, OK: 0, FAILED: 0, BLOCKED: 0}
        self.failed: dict[Key, Status] = {}
        self.waiting = 0                 # dirty or a retry due: work that is not done
        self.shown: dict[Key, str] = {}
        self.version = 0

    def add(self, status: Status) -> None:
        status._tally = self
        self.counts[status._state] += 1
        if status._state == FAILED:
            self.failed[status.key] = status
        self.waiting += status._waiting()
        self.shown[status.key] = status._shown()
        self.version += 1

    def remove(self, status: Status) -> None:
        if status._tally is not self:
            return
        status._tally = None
        self.counts[status._state] -= 1
        self.failed.pop(status.key, None)
        self.waiting -= status._waiting()
        self.shown.pop(status.key, None)
        self.version += 1


class Status:
    """One resource's state in the scheduler. ``state``, ``dirty``,
    ``retry_at`` and ``would_change`` keep the tally it belongs to (if any)
    up to date when set."""

    __slots__ = ("key", "_tally", "_state", "_dirty", "_retry_at", "_would_change",
                 "refresh", "retrying", "running", "attempts", "deadline", "timed_out",
                 "cancelling", "bucket", "limited_until", "error", "checks", "changes", "drift_at")

    def __init__(self, key: Key | None = None, attempts: int = 0) -> None:
        self.key = key
        self._tally: Tally | None = None
        self._state = PENDING
        self._dirty = True
        self._retry_at: float | None = None
        self._would_change = False          # noop: its last check found it out of state
        self.refresh = False
        self.retrying = False               # the next run is a retry (its timer fired)
        self.running: Resource | None = None  # the instance a worker is running now
        self.attempts = attempts            # failures counted against meta.retry (mgmt's MetaState)
        self.deadline: float | None = None  # meta.timeout of the run under way
        self.timed_out = False              # the run under way outran it: it fails when it returns
        self.cancelling = False             # its cancel() is under way: no new run until it is done
        self.bucket: TokenBucket | None = None   # meta.limit/burst; None = no limit
        self.limited_until: float | None = None  # no token until then: a "limit" timer is set
        self.error = ""
        self.checks = 0
        self.changes = 0
        self.drift_at: float | None = None  # an event came while it was in state: repair latency from then

    def _waiting(self) -> int:
        return 1 if self._dirty or self._retry_at is not None else 0

    def _shown(self) -> str:
        return shown_state(self._state, self._retry_at is not None, self._would_change)

    def _changed(self, was_waiting: int) -> None:
        tally = self._tally
        if tally is None:
            return
        tally.waiting += self._waiting() - was_waiting
        shown = self._shown()
        if tally.shown.get(self.key) != shown:
            tally.shown[self.key] = shown
            tally.version += 1

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        old = self._state
        if value == old:
            return
        self._state = value
        tally = self._tally
        if tally is not None:
            tally.counts[old] -= 1
            tally.counts[value] += 1
            if value == FAILED:
                tally.failed[self.key] = self
            elif old == FAILED:
                tally.failed.pop(self.key, None)
            self._changed(self._waiting())

    @property
    def dirty(self) -> bool:
        return self._dirty

    @dirty.setter
    def dirty(self, value: bool) -> None:
        if value != self._dirty:
            was = self._waiting()
            self._dirty = value
            self._changed(was)

    @property
    def retry_at(self) -> float | None:
        return self._retry_at

    @retry_at.setter
    def retry_at(self, value: float | None) -> None:
        was = self._waiting()
        self._retry_at = value
        self._changed(was)

    @property
    def would_change(self) -> bool:
        return self._would_change

    @would_change.setter
    def would_change(self, value: bool) -> None:
        if value != self._would_change:
            self._would_change = value
            self._changed(self._waiting())
