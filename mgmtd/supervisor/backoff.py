"""Restart delays for children that keep dying: exponential, capped, reset
once the child has run properly again. The curve is tenacity's."""

from __future__ import annotations

from types import SimpleNamespace

from tenacity import wait_exponential


class Backoff:
    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.wait = wait_exponential(multiplier=first, min=first, max=cap)
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return float(self.wait(SimpleNamespace(attempt_number=self.failures)))

    def reset(self) -> None:
        self.failures = 0
