"""Graph errors carry their place in the file, so the user can go straight there."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)   # one per resource is kept: small
class Location:
    file: str
    line: int = 0     # 1-based; 0 = unknown
    column: int = 0   # 1-based

    def __str__(self) -> str:
        if not self.line:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"

    def __reduce__(self) -> tuple:
        # pickled with the graph (mgmtd.yamlgraph.cache): a call, not the slots' state
        # set one by one, which costs 5x more to load
        return (Location, (self.file, self.line, self.column))


class GraphError(Exception):
    """One problem in a graph, printed as one line: ``file:line:col: what: message``."""

    def __init__(self, location: Location, message: str, subject: str = "") -> None:
        self.location = location
        self.message = message
        self.subject = subject
        super().__init__(str(self))

    def __str__(self) -> str:
        subject = f"{self.subject}: " if self.subject else ""
        return f"{self.location}: {subject}{self.message}"


@dataclass(frozen=True)
class GraphWarning:
    """Something in a graph that loads but deserves the user's attention (an
    mgmt field that mgmt itself ignores, say), printed like a GraphError."""

    location: Location
    message: str
    subject: str = ""

    def __str__(self) -> str:
        subject = f"{self.subject}: " if self.subject else ""
        return f"{self.location}: warning: {subject}{self.message}"
