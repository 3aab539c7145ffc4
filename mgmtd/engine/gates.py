"""What a resource must get before its check/apply runs, beyond its
dependencies: a token of its rate limit (``meta.limit``/``meta.burst``).
Pure bookkeeping, driven by the scheduler's control thread and clock."""

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
