"""Golden cases for the pure steps of a cluster round (``assess`` and
``decide_local``; the planner has its own in test_planner.py): inputs as JSON
in tests/unit/cases/, built into the production types, the result compared with
what the case expects. A case is a sentence of behaviour: its ``name`` says it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mgmtd.cluster.assess import Settings, assess
from mgmtd.cluster.etcdapi import EndpointStatus, MemberInfo
from mgmtd.cluster.keys import parse_ideal_size
from mgmtd.cluster.local import LocalState, decide_local
from mgmtd.cluster.model import (
    Assessment,
    Member,
    Nomination,
    Outcome,
    Readable,
    RemovalCause,
    RemoveMember,
    Result,
    Snapshot,
)

CASES = Path(__file__).parent / "cases"
SETTINGS = Settings(grace_period=10.0, learner_deadline=30.0)
HOST = "a"


def load(name: str) -> list[dict]:
    return json.loads((CASES / name).read_text())


def member_info(raw: dict) -> MemberInfo:
    return MemberInfo(raw["id"], raw.get("name", ""), tuple(raw.get("peer_urls", ())),
                      tuple(raw.get("client_urls", ())), raw.get("is_learner", False))


def member(raw: dict) -> Member:
    return Member(raw["id"], raw.get("name", ""), tuple(raw.get("peer_urls", ())),
                  tuple(raw.get("client_urls", ())), raw.get("is_learner", False), raw.get("healthy", True),
                  raw.get("unhealthy_since"), raw.get("caught_up", False))


def status(raw: dict | None) -> EndpointStatus | None:
    if raw is None:
        return None
    return EndpointStatus("", raw["member_id"], raw["leader_id"], raw["raft_index"], 1, "3.4")


def nomination(raw: dict | str | None) -> Nomination | Readable | None:
    if raw is None:
        return None
    if raw == "unreadable":
        return Readable.UNREADABLE
    return Nomination(raw["host"], tuple(raw["peer_urls"]), raw["since"], raw.get("initial_cluster", ""))


def assessment(raw: dict | None) -> Assessment | None:
    if raw is None:
        return None
    return Assessment(
        now=raw.get("now", 0.0), self_host=HOST, ideal_size=raw.get("ideal_size"),
        members=tuple(member(m) for m in raw.get("members", ())), volunteers=(), nominations=(),
        failed_hosts=frozenset(h for h, _ in raw.get("failures", ())), grace_period=10.0, learner_deadline=30.0,
        reachable=raw.get("reachable", True), permission_denied=raw.get("permission_denied", False),
        leader=raw.get("leader", ""), is_leader=raw.get("leader", "") == HOST,
        nomination=nomination(raw.get("nomination")),
        failures=tuple((h, t) for h, t in raw.get("failures", ())))


def snapshot(raw: dict) -> Snapshot:
    statuses = raw.get("statuses")
    return Snapshot(
        now=raw["now"], self_host=HOST, reachable=raw.get("reachable", True), error=raw.get("error", ""),
        members=tuple(member_info(m) for m in raw.get("members", ())),
        statuses=tuple(status(s) for s in statuses) if statuses is not None else None,
        leader=raw.get("leader", ""), nomination=nomination(raw.get("nomination")),
        ideal=parse_ideal_size(raw["ideal"]) if "ideal" in raw else None)


def outcome(raw: dict) -> Outcome:
    remove = raw["remove"]
    return Outcome(RemoveMember(remove["member_id"], remove["host"], RemovalCause[remove["cause"]]),
                   Result[raw["result"]])


def as_json(value):
    """The result as the cases write it."""
    if isinstance(value, tuple | list):
        return [as_json(v) for v in value]
    if isinstance(value, frozenset):
        return sorted(value)
    if hasattr(value, "__dataclass_fields__"):
        return {k: as_json(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


def matches(expected, actual) -> bool:
    """Every key the case names has that value; the rest is free."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(matches(v, actual.get(k)) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            matches(e, a) for e, a in zip(expected, actual, strict=True))
    return expected == actual


@pytest.mark.parametrize("case", load("assess.json"), ids=lambda c: c["name"])
def test_assess(case):
    result = assess(assessment(case.get("previous")), snapshot(case["snapshot"]),
                    tuple(outcome(o) for o in case.get("outcomes", ())), SETTINGS, "ideal-size")
    got = as_json(result)
    got["quorum_lost"] = result.quorum_lost
    assert matches(case["expect"], got), json.dumps(got, indent=1)


@pytest.mark.parametrize("case", load("local.json"), ids=lambda c: c["name"])
def test_decide_local(case):
    local = LocalState(HOST, **case["local"])
    step = decide_local(assessment(case["assessment"]), local)
    got = {"step": type(step).__name__, **as_json(step)}
    assert got == case["expect"]
