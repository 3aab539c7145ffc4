"""What the supervisor and its engine child tell each other: one JSON object
per line (membership on the engine's stdin, state on its stdout)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Membership:
    endpoints: tuple[str, ...]            # client URLs of the current voters
    members: tuple[str, ...] = ()         # their names
    leader: str = ""                      # the mgmtd leader (election)
    ideal_size: int = 0

    def to_line(self) -> str:
        return json.dumps({"type": "membership", **asdict(self)}) + "\n"


@dataclass(frozen=True)
class EngineState:
    state: str                            # starting | converging | converged | failed
    resources: int = 0
    ok: int = 0
    failed: int = 0
    blocked: int = 0
    pending: int = 0
    errors: tuple[str, ...] = field(default=())
    graph_loaded: bool = False
    collected: tuple[str, ...] = field(default=())   # "host/kind/name" of the exports applied here

    def to_line(self) -> str:
        return json.dumps({"type": "state", **asdict(self)}) + "\n"


def parse_line(line: str) -> Membership | EngineState | None:
    """Returns the message on a line, or None for anything that is not one."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    kind = raw.pop("type", None)
    try:
        if kind == "membership":
            return Membership(
                endpoints=tuple(raw.get("endpoints", ())), members=tuple(raw.get("members", ())),
                leader=str(raw.get("leader", "")), ideal_size=int(raw.get("ideal_size", 0)),
            )
        if kind == "state":
            raw["errors"] = tuple(raw.get("errors", ()))
            raw["collected"] = tuple(raw.get("collected", ()))
            return EngineState(**raw)
    except (TypeError, ValueError):
        return None
    return None
