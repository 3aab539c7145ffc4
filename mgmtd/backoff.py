"""Delays for things that keep failing (a child that dies, an etcd that does
not answer): exponential, capped, reset once it works again. The curve is
tenacity's."""

from __future__ import annotations

import logging
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

    def level(self, quiet_failures: int = 4) -> int:
        """Log level for the latest failure: the first few are expected (etcd
        moving, a restart) and stay at debug; a lasting one is a warning."""
        return logging.DEBUG if self.failures <= quiet_failures else logging.WARNING


def first_line(err: BaseException) -> str:
    """One line for a log: a gRPC error's status and etcd's message rather than
    the first line of its multi-line repr."""
    details, code = getattr(err, "details", None), getattr(err, "code", None)
    if callable(details) and callable(code):
        return f"{code().name.lower().replace('_', ' ')}: {details()}"
    text = str(err)
    return text.splitlines()[0] if text else type(err).__name__
