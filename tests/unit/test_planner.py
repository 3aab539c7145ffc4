"""Unit and property tests for the membership planner (DESIGN.md section 3)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgmtd.cluster.assess import remember_failures
from mgmtd.cluster.model import (
    AddLearner,
    Assessment,
    LostQuorum,
    Member,
    Nomination,
    Outcome,
    Promote,
    RemovalCause,
    RemoveMember,
    Result,
    Unnominate,
    Volunteer,
    Wait,
    is_membership_change,
)
from mgmtd.cluster.planner import plan, quorum_ok

NOW = 1000.0
GRACE = 10.0
DEADLINE = 30.0
HOSTS = ("a", "b", "c", "d", "e", "f", "g", "h")


def peer(host: str) -> tuple[str, ...]:
    return (f"http://{host}:2380",)


def client(host: str) -> tuple[str, ...]:
    return (f"http://{host}:2379",)


def voter(mid: int, host: str, healthy: bool = True, down_since: float | None = None) -> Member:
    if not healthy and down_since is None:
        down_since = NOW - 1
    return Member(mid, host, peer(host), client(host), False, healthy, down_since, True)


def dead(mid: int, host: str) -> Member:
    return voter(mid, host, healthy=False, down_since=NOW - GRACE - 1)


def learner(mid: int, host: str, started: bool = True, healthy: bool = True, caught_up: bool = False) -> Member:
    down_since = None if healthy and started else NOW - 1
    return Member(mid, host if started else "", peer(host), client(host), True, healthy, down_since, caught_up)


def vol(host: str) -> Volunteer:
    return Volunteer(host, peer(host), client(host))


def nom(host: str, since: float = NOW - 1) -> Nomination:
    return Nomination(host, peer(host), since)


def obs(
    members: tuple[Member, ...] = (),
    volunteers: tuple[str, ...] = (),
    nominations: tuple[Nomination, ...] = (),
    ideal: int = 3,
    self_host: str = "a",
    failed: frozenset[str] = frozenset(),
) -> Assessment:
    return Assessment(
        now=NOW,
        self_host=self_host,
        ideal_size=ideal,
        members=members,
        volunteers=tuple(vol(h) for h in volunteers),
        nominations=nominations,
        failed_hosts=failed,
        grace_period=GRACE,
        learner_deadline=DEADLINE,
    )


def changes(actions: list) -> list:
    return [a for a in actions if is_membership_change(a)]


# --- quorum -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("healthy", "total", "ok"),
    [
        (1, 1, True),
        (0, 1, False),
        (2, 2, True),
        (1, 2, False),
        (2, 3, True),
        (1, 3, False),
        (3, 4, True),
        (2, 4, False),
        (3, 5, True),
        (2, 5, False),
        (0, 0, False),
    ],
)
def test_quorum_ok_needs_strict_majority_of_voters(healthy: int, total: int, ok: bool) -> None:
    members = tuple(voter(i, HOSTS[i], healthy=i < healthy) for i in range(total))
    assert quorum_ok(members) is ok


def test_learners_do_not_count_towards_quorum() -> None:
    members = (voter(1, "a"), voter(2, "b", healthy=False), learner(3, "c", caught_up=True))
    assert not quorum_ok(members)
    assert quorum_ok((voter(1, "a"), learner(2, "b", healthy=False)))


def test_member_that_never_started_is_not_healthy() -> None:
    never_started = replace(voter(2, "b"), name="")
    assert not quorum_ok((voter(1, "a"), never_started))


# --- lost quorum ------------------------------------------------------------------


def test_lost_quorum_is_reported_and_nothing_else() -> None:
    o = obs(
        members=(voter(1, "a"), dead(2, "b"), dead(3, "c")),
        volunteers=("a", "d", "e"),
        nominations=(nom("z"),),
    )
    assert plan(o) == [LostQuorum(healthy=1, voters=3)]


def test_two_voters_one_down_is_lost_quorum() -> None:
    o = obs(members=(voter(1, "a"), voter(2, "b", healthy=False)), ideal=1)
    assert plan(o) == [LostQuorum(healthy=1, voters=2)]


def test_no_voters_is_lost_quorum() -> None:
    assert plan(obs()) == [LostQuorum(healthy=0, voters=0)]
    assert plan(obs(members=(learner(1, "b", caught_up=True),))) == [LostQuorum(0, 0)]


def test_unknown_health_voter_does_not_rescue_quorum() -> None:
    ghost = replace(voter(2, "b"), name="")  # healthy flag set but never started
    assert plan(obs(members=(voter(1, "a"), ghost, dead(3, "c")))) == [LostQuorum(1, 3)]


# --- grow -------------------------------------------------------------------------


def test_grow_one_to_three_step_by_step() -> None:
    vols = ("a", "b", "c")
    a = voter(1, "a")
    assert plan(obs((a,), vols)) == [AddLearner("b", peer("b"))]
    # added, nomination written, not started yet
    o = obs((a, learner(2, "b", started=False, healthy=False)), vols, (nom("b"),))
    assert plan(o) == [Wait("learner b is starting")]
    o = obs((a, replace(learner(2, "b"), progress=0.71)), vols, (nom("b"),))
    assert plan(o) == [Wait("learner b is catching up (71% of the leader's log)")]
    o = obs((a, learner(2, "b", caught_up=True)), vols, (nom("b"),))
    assert plan(o) == [Promote(2, "b")]
    b = voter(2, "b")
    assert plan(obs((a, b), vols, (nom("b"),))) == [AddLearner("c", peer("c"))]
    o = obs((a, b, learner(3, "c", caught_up=True)), vols, (nom("b"), nom("c")))
    assert plan(o) == [Promote(3, "c")]
    assert plan(obs((a, b, voter(3, "c")), vols, (nom("b"), nom("c")))) == []


def test_grow_picks_volunteers_in_host_order() -> None:
    assert plan(obs((voter(1, "a"),), ("e", "a", "d", "c"))) == [AddLearner("c", peer("c"))]


def test_grow_tries_failed_hosts_last_but_still_tries_them() -> None:
    o = obs((voter(1, "a"),), ("a", "b", "c"), failed=frozenset({"b"}))
    assert plan(o) == [AddLearner("c", peer("c"))]
    o = obs((voter(1, "a"),), ("a", "b"), failed=frozenset({"b"}))
    assert plan(o) == [AddLearner("b", peer("b"))]


def test_grow_skips_members_by_name_and_by_peer_url() -> None:
    renamed = replace(voter(2, "b"), name="old-b")  # same peer URL, other name
    o = obs((voter(1, "a"), renamed), ("a", "b"), ideal=5)
    assert plan(o) == [Wait("2/5 voters and no eligible volunteer")]


def test_grow_skips_volunteer_without_peer_urls() -> None:
    o = replace(obs((voter(1, "a"),)), volunteers=(Volunteer("b", (), client("b")), vol("c")))
    assert plan(o) == [AddLearner("c", peer("c"))]


def test_grow_without_volunteer_waits() -> None:
    assert plan(obs((voter(1, "a"),), ("a",))) == [Wait("1/3 voters and no eligible volunteer")]


def test_grow_proceeds_with_unhealthy_voter_within_grace() -> None:
    o = obs((voter(1, "a"), voter(2, "b"), voter(3, "c", healthy=False)), ("a", "b", "d"), ideal=5)
    assert plan(o) == [AddLearner("d", peer("d"))]


# --- ideal size 1 and self protection ---------------------------------------------


def test_ideal_one_keeps_single_voter() -> None:
    assert plan(obs((voter(1, "a"),), ("a", "b", "c"), ideal=1)) == []


def test_ideal_below_one_is_treated_as_one() -> None:
    assert plan(obs((voter(1, "a"),), ("a", "b"), ideal=0)) == []
    assert changes(plan(obs((voter(1, "a"), voter(2, "b")), ideal=0))) == [
        RemoveMember(2, "b", RemovalCause.ABOVE_IDEAL)
    ]


@pytest.mark.parametrize("self_host", ["a", "b"])
def test_shrink_to_one_never_removes_the_leader(self_host: str) -> None:
    o = obs((voter(1, "a"), voter(2, "b")), ("a", "b"), ideal=1, self_host=self_host)
    (change,) = plan(o)
    assert isinstance(change, RemoveMember) and change.host != self_host


def test_leader_not_removed_even_when_first_by_name_and_unhealthy_within_grace() -> None:
    members = (voter(1, "a", healthy=False), voter(2, "b"), voter(3, "c"), voter(4, "d"))
    assert plan(obs(members, ideal=3, self_host="a")) == [RemoveMember(2, "b", RemovalCause.ABOVE_IDEAL)]


# --- shrink -----------------------------------------------------------------------


def test_shrink_five_to_three_one_at_a_time() -> None:
    members = tuple(voter(i + 1, h) for i, h in enumerate("abcde"))
    assert plan(obs(members, "abcde")) == [RemoveMember(2, "b", RemovalCause.ABOVE_IDEAL)]
    members = tuple(m for m in members if m.name != "b")
    assert plan(obs(members, "abcde")) == [RemoveMember(3, "c", RemovalCause.ABOVE_IDEAL)]
    members = tuple(m for m in members if m.name != "c")
    assert plan(obs(members, "abcde")) == []


def test_shrink_prefers_unhealthy_voters() -> None:
    members = (voter(1, "a"), voter(2, "b"), voter(3, "c"), voter(4, "d", healthy=False))
    assert plan(obs(members)) == [RemoveMember(4, "d", RemovalCause.ABOVE_IDEAL)]


def test_shrink_waits_when_removing_a_healthy_voter_would_lose_quorum() -> None:
    members = (voter(1, "a", healthy=False), voter(2, "b"), voter(3, "c"))
    assert plan(obs(members, ideal=2)) == [Wait("shrinking now would lose quorum")]


def test_shrink_with_one_of_four_unhealthy() -> None:
    # 4 voters, 1 unhealthy within grace: removing it is fine (3/3 healthy) ...
    members = (voter(1, "a"), voter(2, "b"), voter(3, "c"), voter(4, "d", healthy=False))
    assert plan(obs(members, ideal=2)) == [RemoveMember(4, "d", RemovalCause.ABOVE_IDEAL)]
    # ... but with two unhealthy (lost quorum) nothing is removed at all.
    members = (voter(1, "a"), voter(2, "b"), voter(3, "c", healthy=False), voter(4, "d", False))
    assert plan(obs(members, ideal=2)) == [LostQuorum(2, 4)]


def test_shrink_with_three_of_five_healthy_removes_an_unhealthy_one() -> None:
    members = (
        voter(1, "a"),
        voter(2, "b"),
        voter(3, "c"),
        voter(4, "d", False),
        voter(5, "e", False),
    )
    assert plan(obs(members, ideal=3)) == [RemoveMember(4, "d", RemovalCause.ABOVE_IDEAL)]


# --- repair -----------------------------------------------------------------------


def test_repair_removes_dead_voter_then_adds_replacement() -> None:
    vols = ("a", "b", "d")
    members = (voter(1, "a"), voter(2, "b"), dead(3, "c"))
    assert plan(obs(members, vols)) == [RemoveMember(3, "c", RemovalCause.DEAD)]
    assert plan(obs(members[:2], vols)) == [AddLearner("d", peer("d"))]


def test_unhealthy_within_grace_is_not_removed() -> None:
    members = (voter(1, "a"), voter(2, "b"), voter(3, "c", healthy=False, down_since=NOW - GRACE))
    assert plan(obs(members, ("a", "b", "d"))) == []


def test_unhealthy_without_timestamp_is_not_dead() -> None:
    members = (voter(1, "a"), voter(2, "b"), replace(voter(3, "c", False), unhealthy_since=None))
    assert plan(obs(members, ("a", "b", "d"))) == []


def test_remove_dead_before_growing() -> None:
    members = (voter(1, "a"), voter(2, "b"), dead(3, "c"))
    assert plan(obs(members, "abdef", ideal=5)) == [RemoveMember(3, "c", RemovalCause.DEAD)]


def test_dead_leader_is_removed_after_other_dead_voters() -> None:
    members = (dead(1, "a"), dead(2, "b"), voter(3, "c"), voter(4, "d"), voter(5, "e"))
    assert changes(plan(obs(members, ideal=5))) == [RemoveMember(2, "b", RemovalCause.DEAD)]
    members = (dead(1, "a"), voter(3, "c"), voter(4, "d"), voter(5, "e"))
    assert changes(plan(obs(members, ideal=5))) == [RemoveMember(1, "a", RemovalCause.DEAD)]


def test_dead_voter_waits_while_a_learner_is_in_flight() -> None:
    members = (voter(1, "a"), voter(2, "b"), dead(3, "c"), learner(4, "d"))
    assert plan(obs(members, "abd", (nom("d"),), ideal=4)) == [
        Wait("learner d is catching up (0% of the leader's log)")]
    members = (*members[:3], learner(4, "d", caught_up=True))
    assert plan(obs(members, "abd", (nom("d"),), ideal=4)) == [Promote(4, "d")]


# --- learners ---------------------------------------------------------------------


def test_learner_past_deadline_is_removed() -> None:
    members = (voter(1, "a"), learner(2, "b", started=False, healthy=False))
    late = nom("b", since=NOW - DEADLINE - 1)
    assert plan(obs(members, "ab", (late,))) == [
        RemoveMember(2, "b", RemovalCause.LEARNER_DEADLINE)
    ]
    on_time = nom("b", since=NOW - DEADLINE)
    assert plan(obs(members, "ab", (on_time,))) == [Wait("learner b is starting")]


def test_started_learner_not_caught_up_past_deadline_is_removed() -> None:
    members = (voter(1, "a"), learner(2, "b"))
    late = nom("b", since=NOW - DEADLINE - 1)
    assert changes(plan(obs(members, "ab", (late,)))) == [
        RemoveMember(2, "b", RemovalCause.LEARNER_DEADLINE)
    ]


def test_ready_learner_past_deadline_is_still_promoted() -> None:
    members = (voter(1, "a"), learner(2, "b", caught_up=True))
    assert plan(obs(members, "ab", (nom("b", since=0.0),))) == [Promote(2, "b")]


@pytest.mark.parametrize(("healthy", "caught_up"), [(False, True), (True, False), (False, False)])
def test_learner_promoted_only_when_healthy_and_caught_up(healthy: bool, caught_up: bool) -> None:
    members = (voter(1, "a"), learner(2, "b", healthy=healthy, caught_up=caught_up))
    assert changes(plan(obs(members, "ab", (nom("b"),)))) == []


def test_unstarted_learner_is_never_promoted() -> None:
    ghost = replace(learner(2, "b", caught_up=True), name="")
    assert changes(plan(obs((voter(1, "a"), ghost), "ab", (nom("b"),)))) == []


def test_learner_without_nomination_is_removed() -> None:
    members = (voter(1, "a"), learner(2, "b", started=False, healthy=False))
    assert plan(obs(members, "ab")) == [RemoveMember(2, "", RemovalCause.NO_NOMINATION)]
    members = (voter(1, "a"), learner(2, "b", caught_up=True))
    assert plan(obs(members, "ab")) == [RemoveMember(2, "b", RemovalCause.NO_NOMINATION)]


def test_learner_whose_volunteer_is_gone_is_removed() -> None:
    members = (voter(1, "a"), learner(2, "b", started=False, healthy=False))
    assert plan(obs(members, "a", (nom("b"),))) == [RemoveMember(2, "b", RemovalCause.VOLUNTEER_GONE)]


def test_learner_no_longer_needed_is_removed() -> None:
    members = (voter(1, "a"), voter(2, "b"), learner(3, "c", caught_up=True))
    assert plan(obs(members, "abc", (nom("c"),), ideal=2)) == [
        RemoveMember(3, "c", RemovalCause.NOT_NEEDED)
    ]


def test_learner_blocks_every_other_change() -> None:
    members = (*(voter(i + 1, h) for i, h in enumerate("abcde")), learner(9, "f"))
    vols = "abcdef"
    assert plan(obs(members, vols, (nom("f"),), ideal=7)) == [
        Wait("learner f is catching up (0% of the leader's log)")]


def test_two_learners_keep_the_ready_one() -> None:
    members = (voter(1, "a"), learner(2, "b"), learner(3, "c", caught_up=True))
    o = obs(members, "abc", (nom("b"), nom("c")), ideal=5)
    assert plan(o) == [RemoveMember(2, "b", RemovalCause.EXTRA_LEARNER)]


# --- nominations ------------------------------------------------------------------


def test_stale_nomination_is_removed_and_voter_nominations_kept() -> None:
    members = (voter(1, "a"), voter(2, "b"), voter(3, "c"))
    o = obs(members, "abc", (nom("b"), nom("c"), nom("z"), nom("y")))
    assert plan(o) == [
        Unnominate("y", "no member matches this nomination"),
        Unnominate("z", "no member matches this nomination"),
    ]


def test_nomination_of_unstarted_learner_is_kept() -> None:
    members = (voter(1, "a"), learner(2, "b", started=False, healthy=False))
    assert plan(obs(members, "ab", (nom("b"),))) == [Wait("learner b is starting")]


def test_host_with_stale_nomination_is_not_readded_in_the_same_round() -> None:
    o = obs((voter(1, "a"),), "ab", (nom("b"),))
    assert plan(o) == [
        Unnominate("b", "no member matches this nomination"),
        Wait("1/3 voters and no eligible volunteer"),
    ]
    assert plan(obs((voter(1, "a"),), "ab")) == [AddLearner("b", peer("b"))]


def test_cleanup_comes_with_a_membership_change() -> None:
    o = obs((voter(1, "a"),), "abc", (nom("b"),))
    assert plan(o) == [
        Unnominate("b", "no member matches this nomination"),
        AddLearner("c", peer("c")),
    ]


# --- invariants, checked independently of the planner's own code -----------------


def _healthy(m: Member) -> bool:
    return m.healthy and m.name != ""


def _is_dead(o: Assessment, m: Member) -> bool:
    return not _healthy(m) and m.unhealthy_since is not None and o.now - m.unhealthy_since > o.grace_period


def _majority(healthy: int, total: int) -> bool:
    return total >= 1 and 2 * healthy > total


def _eligible(o: Assessment) -> list[Volunteer]:
    nominated = {n.host for n in o.nominations}
    return [
        v
        for v in o.volunteers
        if v.peer_urls
        and v.host not in nominated
        and not any(m.name == v.host or set(m.peer_urls) & set(v.peer_urls) for m in o.members)
    ]


def check_invariants(o: Assessment, actions: list) -> None:
    """The safety rules of DESIGN.md section 3, restated without the planner's helpers."""
    vs = [m for m in o.members if not m.is_learner]
    ls = [m for m in o.members if m.is_learner]
    h = sum(_healthy(m) for m in vs)
    by_id = {m.id: m for m in o.members}

    def removal_safe(m: Member) -> bool:
        return _majority(h - _healthy(m), len(vs) - 1)

    if not _majority(h, len(vs)):
        assert actions == [LostQuorum(h, len(vs))]
        return
    assert not any(isinstance(a, LostQuorum) for a in actions)

    found = changes(actions)
    assert len(found) <= 1, actions
    waits = [a for a in actions if isinstance(a, Wait)]
    assert len(waits) + len(found) <= 1, actions
    unnominated = [a.host for a in actions if isinstance(a, Unnominate)]
    assert len(unnominated) == len(set(unnominated))
    for host in unnominated:
        (n,) = [n for n in o.nominations if n.host == host]
        assert not any(m.name == host or set(m.peer_urls) & set(n.peer_urls) for m in o.members)

    dead_vs = [m for m in vs if _is_dead(o, m)]
    ideal = max(1, o.ideal_size)
    if len(ls) == 1:
        _check_single_learner(o, ls[0], len(vs), found)
    if not found:
        # Doing nothing is only right when nothing can be done safely.
        if not ls:
            assert not any(removal_safe(m) for m in dead_vs)
            if not dead_vs and len(vs) > ideal:
                assert not any(removal_safe(m) for m in vs if m.name != o.self_host)
            if not dead_vs and len(vs) < ideal:
                assert not _eligible(o)
        return
    (change,) = found

    if ls:
        assert isinstance(change, Promote | RemoveMember), "no add while a learner is in flight"
        assert by_id[change.member_id].is_learner, "only the learner may change"
    elif dead_vs:
        assert isinstance(change, RemoveMember), "remove the dead before anything else"
        assert by_id[change.member_id] in dead_vs
        if any(m.name != o.self_host for m in dead_vs):
            assert by_id[change.member_id].name != o.self_host

    match change:
        case AddLearner(host=host, peer_urls=urls):
            assert not ls and not dead_vs and len(vs) < ideal
            eligible = _eligible(o)
            assert Volunteer(host, urls, client(host)) in eligible
            if host in o.failed_hosts:
                assert all(v.host in o.failed_hosts for v in eligible)
        case Promote(member_id=mid):
            m = by_id[mid]
            assert m.is_learner and m.name != "" and m.healthy and m.caught_up
            assert len(ls) == 1 and len(vs) < ideal
            assert _majority(h + 1, len(vs) + 1)
        case RemoveMember(member_id=mid):
            m = by_id[mid]
            if not m.is_learner:
                assert len(vs) >= 2, "never remove the last voter"
                assert removal_safe(m), "removal must keep quorum"
                assert not (m.name == o.self_host and _healthy(m)), "healthy leader removed"
                assert dead_vs or len(vs) > ideal
                if not dead_vs and any(not _healthy(v) for v in vs if v.name != o.self_host):
                    assert not _healthy(m), "shrinking removes unhealthy voters first"


def _check_single_learner(o: Assessment, learner: Member, voter_count: int, found: list) -> None:
    (n,) = [n for n in o.nominations if learner.name == n.host or set(n.peer_urls) & set(learner.peer_urls)] or [
        None
    ]
    ready = _healthy(learner) and learner.caught_up
    must_go = (
        n is None
        or n.host not in {v.host for v in o.volunteers}
        or voter_count >= max(1, o.ideal_size)
        or (not ready and o.now - n.since > o.learner_deadline)
    )
    if must_go:
        assert found and isinstance(found[0], RemoveMember) and found[0].member_id == learner.id
    elif ready:
        assert found == [Promote(learner.id, learner.name)]
    else:
        assert not found, "a learner within its deadline is left alone"


def _subset(draw: st.DrawFn, items: list[str]) -> set[str]:
    return set(draw(st.lists(st.sampled_from(items), unique=True))) if items else set()


def _often(draw: st.DrawFn, one_in: int) -> bool:
    """True except one time in ``one_in``: keeps most drawn clusters in quorum."""
    return draw(st.integers(1, one_in)) > 1


@st.composite
def observed_states(draw: st.DrawFn) -> Assessment:
    """Random snapshots, mostly plausible (healthy quorum, few learners), sometimes odd."""
    hosts = draw(st.permutations(HOSTS))[: draw(st.integers(0, 7))]
    ids = draw(st.lists(st.integers(1, 10**6), min_size=len(hosts), max_size=len(hosts), unique=True))
    times = st.sampled_from([None, NOW - 100, NOW - GRACE - 1, NOW - GRACE, NOW - 1, NOW])
    members = []
    for mid, host in zip(ids, hosts, strict=True):
        is_learner = not _often(draw, 5)
        started = draw(st.booleans()) if is_learner else _often(draw, 10)
        healthy = _often(draw, 6)
        members.append(
            Member(
                id=mid,
                name=host if started else "",
                peer_urls=peer(host),
                client_urls=client(host),
                is_learner=is_learner,
                healthy=healthy,
                unhealthy_since=draw(times) if not healthy or not _often(draw, 10) else None,
                caught_up=draw(st.booleans()),
            )
        )
    others = [h for h in HOSTS if h not in hosts]
    nominated = {h for h in hosts if _often(draw, 4)} | _subset(draw, others)
    nominations = tuple(
        Nomination(h, peer(h), draw(st.sampled_from([0.0, NOW - DEADLINE - 1, NOW - 5, NOW])))
        for h in sorted(nominated)
    )
    volunteers = {h for h in hosts if _often(draw, 5)} | _subset(draw, others)
    return Assessment(
        now=NOW,
        self_host=draw(st.sampled_from(hosts or HOSTS)) if _often(draw, 5) else "zz",
        ideal_size=draw(st.integers(1, 7)),
        members=tuple(members),
        volunteers=tuple(vol(h) for h in sorted(volunteers)),
        nominations=nominations,
        failed_hosts=frozenset(_subset(draw, list(HOSTS))),
        grace_period=GRACE,
        learner_deadline=DEADLINE,
    )


@settings(max_examples=500, deadline=None)
@given(observed_states())
def test_plan_respects_invariants(o: Assessment) -> None:
    check_invariants(o, plan(o))


@settings(max_examples=200, deadline=None)
@given(observed_states(), st.randoms(use_true_random=False))
def test_plan_is_deterministic_and_ignores_input_order(o: Assessment, rnd) -> None:
    def shuffled(items: tuple) -> tuple:
        items = list(items)
        rnd.shuffle(items)
        return tuple(items)

    other = replace(
        o,
        members=shuffled(o.members),
        volunteers=shuffled(o.volunteers),
        nominations=shuffled(o.nominations),
    )
    assert plan(o) == plan(other) == plan(o)


def test_observed_and_actions_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        obs().ideal_size = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        AddLearner("b", peer("b")).host = "c"  # type: ignore[misc]


# --- simulation ---------------------------------------------------------------------

SIM_DEADLINE = 3.0


@dataclass
class Cluster:
    """A toy etcd cluster that applies the planner's actions like the loop would."""

    members: dict[int, Member]
    volunteers: set[str]
    bad: set[str]  # hosts whose etcd never starts
    nominations: dict[str, Nomination] = field(default_factory=dict)
    failures: tuple[tuple[str, float], ...] = ()   # kept by production's remember_failures
    now: float = 0.0
    next_id: int = 100

    def observe(self, ideal: int) -> Assessment:
        return Assessment(
            now=self.now,
            self_host="a",
            ideal_size=ideal,
            members=tuple(self.members.values()),
            volunteers=tuple(vol(h) for h in sorted(self.volunteers)),
            nominations=tuple(self.nominations.values()),
            failed_hosts=frozenset(h for h, _ in self.failures),
            grace_period=GRACE,
            learner_deadline=SIM_DEADLINE,
        )

    def voters(self) -> list[Member]:
        return [m for m in self.members.values() if not m.is_learner]

    def apply(self, actions: list) -> None:
        # every act succeeds here; what a success means for the next round is production's to say
        self.failures = remember_failures(
            self.failures, tuple(Outcome(a, Result.DONE) for a in actions if is_membership_change(a)), self.now)
        for action in actions:
            match action:
                case Unnominate(host=host):
                    del self.nominations[host]
                case AddLearner(host=host, peer_urls=urls):
                    self.members[self.next_id] = Member(
                        self.next_id, "", urls, client(host), True, False, self.now, False
                    )
                    self.next_id += 1
                    self.nominations[host] = Nomination(host, urls, self.now)
                case Promote(member_id=mid):
                    self.members[mid] = replace(self.members[mid], is_learner=False)
                case RemoveMember(member_id=mid, host=host):
                    del self.members[mid]
                    self.nominations.pop(host, None)
        self.now += 1
        # Learners that can run start one round after the add and catch up one later.
        for mid, m in self.members.items():
            host = m.peer_urls[0].removeprefix("http://").removesuffix(":2380")
            if m.is_learner and host not in self.bad:
                if m.name == "":
                    self.members[mid] = replace(m, name=host, healthy=True, unhealthy_since=None)
                else:
                    self.members[mid] = replace(m, caught_up=True)

    def step(self, ideal: int) -> None:
        o = self.observe(ideal)
        actions = plan(o)
        check_invariants(o, actions)
        assert not any(isinstance(a, LostQuorum) for a in actions)
        self.apply(actions)
        assert quorum_ok(tuple(self.members.values()))
        assert sum(m.is_learner for m in self.members.values()) <= 1


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    others = list(HOSTS[1 : draw(st.integers(1, len(HOSTS)))])
    initial = ["a", *sorted(_subset(draw, others))]
    n_dead = draw(st.integers(0, (len(initial) - 1) // 2))
    dead_hosts = set(draw(st.permutations(initial[1:]))[:n_dead])
    down = -GRACE - 1  # the simulation's clock starts at 0
    members = {
        i: replace(dead(i, h), unhealthy_since=down) if h in dead_hosts else voter(i, h)
        for i, h in enumerate(initial, start=1)
    }
    joiners = _subset(draw, [h for h in others if h not in initial])
    bad = _subset(draw, sorted(joiners))
    volunteers = set(initial) - dead_hosts | joiners
    nominations = {h: nom(h, since=0.0) for h in initial if h != "a" and h not in dead_hosts}
    return Cluster(members, volunteers, bad, nominations)


def converge(cluster: Cluster, ideal: int) -> None:
    good = len(cluster.volunteers - cluster.bad)
    target = min(ideal, good)
    bound = 4 + int(GRACE) + 2 * len(HOSTS) + (len(cluster.bad) + target) * int(SIM_DEADLINE + 4)
    for _ in range(bound):
        vs = cluster.voters()
        if len(vs) == target and all(m.healthy for m in vs):
            break
        cluster.step(ideal)
    vs = cluster.voters()
    assert len(vs) == target, (ideal, good, vs)
    assert all(m.healthy and m.name in cluster.volunteers - cluster.bad for m in vs)
    assert "a" in {m.name for m in vs}, "the leader's own member survives"
    settled = {m.id for m in vs}
    for _ in range(2 * int(SIM_DEADLINE + 4)):
        cluster.step(ideal)
        assert {m.id for m in cluster.voters()} == settled, "voters changed after convergence"


def crash_one_voter(cluster: Cluster) -> None:
    """A healthy non-leader voter dies and stops volunteering (its lease runs out)."""
    victim = max((m for m in cluster.voters() if m.name != "a"), key=lambda m: m.name)
    cluster.members[victim.id] = replace(victim, healthy=False, unhealthy_since=cluster.now)
    cluster.volunteers.discard(victim.name)


@settings(max_examples=200, deadline=None)
@given(clusters(), st.integers(1, 7), st.integers(1, 7), st.booleans())
def test_simulation_converges_and_stays_safe(cluster: Cluster, ideal: int, later: int, crash: bool) -> None:
    converge(cluster, ideal)
    if crash and len(cluster.voters()) >= 3:
        crash_one_voter(cluster)
    converge(cluster, later)  # ideal size changed at runtime, maybe repairing a crash
