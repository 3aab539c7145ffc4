"""Issue 13.3: ``{ns}/cluster/ideal-size`` is parsed by one function, and a
missing or bad value never changes the membership."""

from __future__ import annotations

import logging

import pytest

from mgmtd.cluster.assess import Settings, assess
from mgmtd.cluster.keys import (
    MAX_IDEAL_SIZE,
    MIN_IDEAL_SIZE,
    IdealSizeProblem,
    Keys,
    parse_ideal_size,
)
from mgmtd.cluster.loop import report_changes
from mgmtd.cluster.model import Snapshot
from mgmtd.cluster.planner import Wait, is_membership_change, plan
from tests.unit.test_planner import dead, learner, nom, obs, voter

KEY = Keys().ideal_size
SETTINGS = Settings(grace_period=10.0, learner_deadline=30.0)


class IdealSizeFollower:
    """The rounds of one node, as far as the ideal size goes: each reading is a
    snapshot that ``assess`` turns into the size in force (and the problem), and
    ``report_changes`` says what changed; ``leading`` says whether this node
    holds the leader key."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.previous = None

    def update(self, reading, leading: bool) -> tuple[int | None, str]:
        snapshot = Snapshot(now=1000.0, self_host="a", leader="a" if leading else "b", ideal=reading)
        assessment = assess(self.previous, snapshot, (), SETTINGS, self.key)
        report_changes(self.previous, assessment, [], self.key)
        self.previous = assessment
        return assessment.ideal_size, assessment.ideal_problem


@pytest.mark.parametrize(("raw", "size"), [
    (b"3", 3), (b"1", 1), (b"9", 9), (b" 3", 3), (b"3\n", 3), (b"\t5 \r\n", 5), (b"03", 3),
    (b"+3", 3), ("3", 3), (" 7 ", 7),
])
def test_good_values(raw, size):
    parsed = parse_ideal_size(raw)
    assert parsed.size == size and parsed.problem is None and parsed.describe() == ""


@pytest.mark.parametrize(("raw", "problem"), [
    (None, IdealSizeProblem.MISSING),
    (b"banana", IdealSizeProblem.NOT_A_WHOLE_NUMBER),
    (b"", IdealSizeProblem.NOT_A_WHOLE_NUMBER),
    (b"   ", IdealSizeProblem.NOT_A_WHOLE_NUMBER),
    (b"3.0", IdealSizeProblem.NOT_A_WHOLE_NUMBER),
    (b"3 3", IdealSizeProblem.NOT_A_WHOLE_NUMBER),
    (b"3_0", IdealSizeProblem.NOT_A_WHOLE_NUMBER),     # int() would take it
    (b"1e3", IdealSizeProblem.NOT_A_WHOLE_NUMBER),
    (b"0x3", IdealSizeProblem.NOT_A_WHOLE_NUMBER),
    ("３".encode(), IdealSizeProblem.NOT_A_WHOLE_NUMBER),  # int() would take a full-width digit
    (b"\xff\xfe3", IdealSizeProblem.NOT_TEXT),
    (b"0", IdealSizeProblem.OUT_OF_RANGE),
    (b"-1", IdealSizeProblem.OUT_OF_RANGE),
    (b"-0", IdealSizeProblem.OUT_OF_RANGE),
    (str(MAX_IDEAL_SIZE + 1).encode(), IdealSizeProblem.OUT_OF_RANGE),
    (b"99999999999999999999", IdealSizeProblem.OUT_OF_RANGE),
    (b"9" * 100_000, IdealSizeProblem.OUT_OF_RANGE),      # beyond int()'s digit limit
    ("0", IdealSizeProblem.OUT_OF_RANGE),
])
def test_bad_values_give_no_size_and_a_reason(raw, problem):
    parsed = parse_ideal_size(raw)
    assert parsed.size is None and parsed.problem is problem
    text = parsed.describe()
    assert text and "\n" not in text and len(text) < 120, text
    if problem is not IdealSizeProblem.MISSING:
        assert f"{MIN_IDEAL_SIZE} to {MAX_IDEAL_SIZE}" in text or "text" in text


def test_reason_names_the_value():
    assert "'banana'" in parse_ideal_size(b"banana").describe()
    assert "missing" in parse_ideal_size(None).describe()


# --- the leader: last valid size, one warning per change --------------------------------
def test_follower_keeps_the_last_valid_size(caplog):
    follower = IdealSizeFollower(KEY)
    assert follower.update(parse_ideal_size(b"3"), leading=True) == (3, "")
    size, problem = follower.update(parse_ideal_size(b"banana"), leading=True)
    assert size == 3 and "banana" in problem and "keep" in problem
    size, problem = follower.update(parse_ideal_size(None), leading=True)
    assert size == 3 and "missing" in problem
    assert follower.update(parse_ideal_size(b"5"), leading=True) == (5, "")


def test_follower_without_a_valid_size_knows_none():
    follower = IdealSizeFollower(KEY)
    size, problem = follower.update(parse_ideal_size(b"banana"), leading=True)
    assert size is None and "no membership change" in problem


def test_warning_once_per_change_of_the_problem(caplog):
    caplog.set_level(logging.DEBUG, logger="mgmtd")
    follower = IdealSizeFollower(KEY)
    readings = [b"3", b"banana", b"banana", b"banana", None, None, b"banana", b"3", b"3"]
    for raw in readings:
        follower.update(parse_ideal_size(raw), leading=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings          # banana, missing, banana again
    assert "banana" in warnings[0] and "missing" in warnings[1]
    assert sum("valid again" in r.getMessage() for r in caplog.records) == 1


def test_only_the_leader_warns_and_a_new_leader_warns_again(caplog):
    caplog.set_level(logging.DEBUG, logger="mgmtd")
    follower = IdealSizeFollower(KEY)
    follower.update(parse_ideal_size(b"3"), leading=False)
    follower.update(parse_ideal_size(b"x"), leading=False)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert follower.update(parse_ideal_size(b"x"), leading=True)[0] == 3  # a follower remembered 3
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


# --- the planner: no membership change from a bad or missing size ----------------------------
SITUATIONS = {
    "at size": (voter(1, "a"), voter(2, "b"), voter(3, "c")),
    "above a shrunk size": (voter(1, "a"), voter(2, "b"), voter(3, "c"), voter(4, "d")),
    "below size": (voter(1, "a"),),
    "dead voter": (voter(1, "a"), voter(2, "b"), voter(3, "c"), dead(4, "d")),
    "ready learner": (voter(1, "a"), voter(2, "b"), learner(3, "c", caught_up=True)),
}


@pytest.mark.parametrize("situation", sorted(SITUATIONS))
@pytest.mark.parametrize("raw", [None, b"banana", b"0", b"-3", b"3.0", b"\xff", b"10000000000"])
def test_bad_size_from_the_start_changes_no_membership(situation, raw):
    """A leader that never saw a valid size: Wait, with a reason to show."""
    size, _ = IdealSizeFollower(KEY).update(parse_ideal_size(raw), leading=True)
    assert size is None
    actions = plan(obs(SITUATIONS[situation], "abcdef", (nom("c"),), ideal=size))
    assert not [a for a in actions if is_membership_change(a)], actions
    waits = [a for a in actions if isinstance(a, Wait)]
    assert waits and "ideal cluster size" in waits[0].reason


@pytest.mark.parametrize("raw", [None, b"banana", b"0", b"-1", b"1.5", b"\xff", b"10000000000"])
def test_bad_size_after_a_good_one_plans_with_the_good_one(raw):
    follower = IdealSizeFollower(KEY)
    follower.update(parse_ideal_size(b"3"), leading=True)
    size, _ = follower.update(parse_ideal_size(raw), leading=True)
    members = (voter(1, "a"), voter(2, "b"), voter(3, "c"))
    # the old code read these as 1 (or 10000000000): shrink (or grow)
    assert plan(obs(members, "abcdef", ideal=size)) == []
