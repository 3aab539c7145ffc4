"""What the supervisor and its engine child tell each other: one JSON object
per line (membership on the engine's stdin, state and stats on its stdout)."""

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


# upper bounds (seconds) of the latency histograms, both sides: a repair or an
# etcd round trip takes milliseconds on a quiet node, seconds on a busy one
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)


@dataclass(frozen=True)
class Buckets:
    """A latency histogram: how many observations fell in each bucket of
    LATENCY_BUCKETS (not cumulative; the last one is above every bound), and
    their sum in seconds."""

    counts: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS) + 1)
    sum: float = 0.0

    @classmethod
    def from_raw(cls, raw: dict) -> Buckets:
        counts = tuple(int(c) for c in raw.get("counts", ()))
        if len(counts) != len(LATENCY_BUCKETS) + 1:
            raise ValueError("histogram with the wrong number of buckets")
        return cls(counts, float(raw.get("sum", 0.0)))


@dataclass(frozen=True)
class EngineStats:
    """The engine's counters since it started, sent about once a second when
    they changed (the supervisor serves them on /metrics)."""

    # (kind, apply, eventful, errorful, count): check/apply runs, as mgmt counts them
    checkapply: tuple[tuple[str, bool, bool, bool, int], ...] = ()
    failures: tuple[tuple[str, str, int], ...] = ()     # (kind, soft|hard, count): failed runs
    failing: tuple[tuple[str, str, int], ...] = ()      # (kind, soft|hard, resources failing now)
    resources: tuple[tuple[str, int], ...] = ()         # (kind, resources in the graph)
    graph_start: float = 0.0                            # unix time the running graph was swapped in
    repair: Buckets = Buckets()                         # drift event -> in state again
    exports: int = 0                                    # resources this node exports
    export_syncs: int = 0                               # times etcd was brought to this node's exports
    export_latency: Buckets = Buckets()                 # publish -> etcd holds the exports
    collected: int = 0                                  # collected resources in the graph
    collect_updates: int = 0                            # new sets of exports taken
    collect_latency: Buckets = Buckets()                # new exports read -> graph swapped

    def to_line(self) -> str:
        return json.dumps({"type": "stats", **asdict(self)}) + "\n"

    @classmethod
    def from_raw(cls, raw: dict) -> EngineStats:
        return cls(
            checkapply=tuple((str(k), bool(a), bool(e), bool(r), int(n)) for k, a, e, r, n in raw["checkapply"]),
            failures=tuple((str(k), str(f), int(n)) for k, f, n in raw["failures"]),
            failing=tuple((str(k), str(f), int(n)) for k, f, n in raw["failing"]),
            resources=tuple((str(k), int(n)) for k, n in raw["resources"]),
            graph_start=float(raw["graph_start"]), repair=Buckets.from_raw(raw["repair"]),
            exports=int(raw["exports"]), export_syncs=int(raw["export_syncs"]),
            export_latency=Buckets.from_raw(raw["export_latency"]), collected=int(raw["collected"]),
            collect_updates=int(raw["collect_updates"]),
            collect_latency=Buckets.from_raw(raw["collect_latency"]),
        )


def parse_line(line: str) -> Membership | EngineState | EngineStats | None:
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
        if kind == "stats":
            return EngineStats.from_raw(raw)
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    return None
