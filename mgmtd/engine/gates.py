"""What a resource must get before its check/apply runs, beyond its
dependencies: a token of its rate limit (``meta.limit``/``meta.burst``) and a
slot of each of its semaphores (``meta.sema``). Pure bookkeeping, driven by
the scheduler's control thread and clock."""

from __future__ import annotations

import math


class TokenBucket:
    """mgmt's ``limit`` (runs per second) and ``burst`` (runs at once): the
    bucket holds up to ``burst`` tokens, starts full, and gains ``limit``
    tokens a second. A run takes one token; a run that finds none waits."""

    def __init__(self, limit: float, burst: int, now: float) -> None:
        if not (limit > 0 and burst > 0):
            raise ValueError(f"a token bucket needs limit > 0 and burst > 0, not {limit}, {burst}")
        self.limit = limit
        self.burst = burst
        self.tokens = float(burst)
        self.at = now

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.limit)
            self.at = now

    def take(self, now: float) -> float:
        """Takes a token and returns 0.0, or takes nothing and returns the
        seconds until one is there."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.limit


def limited(limit: float) -> bool:
    """True when ``meta.limit`` asks for a rate limit (mgmt's default, .inf, does not)."""
    return not math.isinf(limit)


SEMA_SEP = ":"


def sema_size(sema_id: str) -> int:
    """mgmt's ``SemaSize``: the count after the last ``:`` when it is an
    integer > 0 (``"mylock:3"`` -> 3), else 1. The whole string names the
    semaphore: ``"foo"`` and ``"foo:1"`` are two semaphores of one slot."""
    head, sep, tail = sema_id.rpartition(SEMA_SEP)
    if sep and tail.isascii() and tail.isdigit() and int(tail) > 0:
        return int(tail)
    return 1


class Semaphores:
    """The named counting semaphores every resource of one engine shares. The
    control thread takes all of a run's semaphores at once or none (so no run
    ever holds some while it waits for others: no deadlock, whatever the
    order), and gives them back when the run's worker returns."""

    def __init__(self) -> None:
        self.held: dict[str, int] = {}

    def available(self, ids: tuple[str, ...]) -> bool:
        if not ids:
            return True
        return all(self.held.get(i, 0) < sema_size(i) for i in set(ids))

    def acquire(self, ids: tuple[str, ...]) -> None:
        for i in sorted(set(ids)):
            self.held[i] = self.held.get(i, 0) + 1

    def release(self, ids: tuple[str, ...]) -> None:
        for i in sorted(set(ids)):
            left = self.held.get(i, 0) - 1
            if left > 0:
                self.held[i] = left
            else:
                self.held.pop(i, None)
