"""The leader's membership planner (DESIGN.md section 3).

``plan(assessment)`` is a pure function: it looks at one assessment of the etcd member
list, member health, volunteers and nominations and returns what the loop should do
next. It proposes at most one membership change (add learner, promote, remove) per
call, because etcd only tolerates one change in flight and the loop waits for each
change to settle before it plans again. Nomination cleanups (``Unnominate``) may
come along with it: they only delete keys and never touch the member list.

Decisions worth knowing (the tests pin each one down):

* Quorum means strictly more than half of the voters answered the last probe. A
  member whose name is still "" has never started, so it never counts as healthy.
* With quorum lost the result is exactly ``[LostQuorum(...)]``: no change, and no
  cleanup either, since etcd accepts no writes then and guessing could only hurt.
* A nomination is kept while its host is a member (voter or learner): that is how
  a node knows it should run etcd. A nomination matching no member is stale and is
  removed; its host is not re-added in the same round so that it first sees the
  nomination vanish and wipes its old member data.
* A learner in flight blocks every other change, including repair. It is promoted
  when it is started, healthy and caught up; it is removed when it has no
  nomination, its volunteer is gone, it is no longer needed (voters already at the
  ideal size) or, not being ready, its nomination is older than the deadline.
* The leader's own voter is never removed while healthy (shrinking always finds
  another voter). When it is dead past the grace period it is removed like any
  other dead voter, but only after the other dead ones: it is not serving anyway,
  and the node rejoins afresh once it sees its nomination gone.
* An ``ideal_size`` below 1 is read as 1: the cluster never shrinks to nothing.
* An unknown ``ideal_size`` (None: the leader never read a valid one) changes no
  membership at all, repair included: the result is the cleanups and a ``Wait``
  saying why. Guessing a size could shrink a healthy cluster.
"""

from __future__ import annotations

from collections.abc import Iterable

from mgmtd.cluster.model import (
    Action,
    AddLearner,
    Assessment,
    LostQuorum,
    Member,
    Nomination,
    Promote,
    RemovalCause,
    RemoveMember,
    Unnominate,
    Volunteer,
    Wait,
    has_majority,
    is_membership_change,
)

__all__ = ["Action", "AddLearner", "LostQuorum", "Promote", "RemoveMember", "Unnominate", "Wait",
           "has_majority", "is_membership_change", "plan", "quorum_ok"]

IDEAL_SIZE_UNKNOWN = "no valid ideal cluster size known: no membership change until one is set"

def is_started(member: Member) -> bool:
    return member.name != ""


def is_healthy(member: Member) -> bool:
    # A member that never started has no known health, whatever the probe said.
    return member.healthy and is_started(member)


def voters(members: Iterable[Member]) -> list[Member]:
    return [m for m in members if not m.is_learner]


def quorum_ok(members: Iterable[Member]) -> bool:
    """True when strictly more than half of the voters are healthy."""
    vs = voters(members)
    return has_majority(sum(is_healthy(m) for m in vs), len(vs))


def plan(assessment: Assessment) -> list[Action]:
    members = sorted(assessment.members, key=lambda m: m.id)
    current = voters(members)
    healthy = sum(is_healthy(m) for m in current)
    if not has_majority(healthy, len(current)):
        return [LostQuorum(healthy=healthy, voters=len(current))]

    actions: list[Action] = [
        Unnominate(n.host, "no member matches this nomination") for n in _stale_nominations(assessment, members)
    ]
    if assessment.ideal_size is None:
        return [*actions, Wait(IDEAL_SIZE_UNKNOWN)]
    learners = [m for m in members if m.is_learner]
    if learners:
        step = _plan_learners(assessment, learners, len(current), healthy)
    else:
        step = _plan_voters(assessment, members, current, healthy)
    if step is not None:
        actions.append(step)
    return actions


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return not set(a).isdisjoint(b)


def _is_member(host: str, peer_urls: tuple[str, ...], members: Iterable[Member]) -> bool:
    return any(m.name == host or _overlaps(m.peer_urls, peer_urls) for m in members)


def _stale_nominations(assessment: Assessment, members: list[Member]) -> list[Nomination]:
    stale = [n for n in assessment.nominations if not _is_member(n.host, n.peer_urls, members)]
    return sorted(stale, key=lambda n: n.host)


def _nomination_of(assessment: Assessment, member: Member) -> Nomination | None:
    # A learner that has not started has no name yet: its peer URLs identify it.
    matches = [
        n
        for n in assessment.nominations
        if (is_started(member) and n.host == member.name) or _overlaps(n.peer_urls, member.peer_urls)
    ]
    return min(matches, key=lambda n: n.host, default=None)


def _host_of(assessment: Assessment, member: Member) -> str:
    if is_started(member):
        return member.name
    nomination = _nomination_of(assessment, member)
    return nomination.host if nomination else ""


def _is_ready(learner: Member) -> bool:
    return is_healthy(learner) and learner.caught_up


def _learner_removal_cause(assessment: Assessment, learner: Member, voter_count: int) -> RemovalCause | None:
    nomination = _nomination_of(assessment, learner)
    if nomination is None:
        return RemovalCause.NO_NOMINATION
    if not any(v.host == nomination.host for v in assessment.volunteers):
        return RemovalCause.VOLUNTEER_GONE
    if voter_count >= max(1, assessment.ideal_size):
        return RemovalCause.NOT_NEEDED
    if not _is_ready(learner) and assessment.now - nomination.since > assessment.learner_deadline:
        return RemovalCause.LEARNER_DEADLINE
    return None


def _plan_learners(assessment: Assessment, learners: list[Member], voter_count: int,
                   healthy: int) -> Action | None:
    for learner in learners:
        cause = _learner_removal_cause(assessment, learner, voter_count)
        if cause is not None:
            return RemoveMember(learner.id, _host_of(assessment, learner), cause)
    # More than one learner means someone else added one: keep the most advanced.
    keep = min(learners, key=lambda m: (not _is_ready(m), m.id))
    extra = [m for m in learners if m is not keep]
    if extra:
        return RemoveMember(extra[0].id, _host_of(assessment, extra[0]), RemovalCause.EXTRA_LEARNER)
    host = _host_of(assessment, keep)
    if not is_healthy(keep):
        return Wait(f"learner {host} is starting")
    if not keep.caught_up:
        return Wait(f"learner {host} is catching up ({keep.progress:.0%} of the leader's log)")
    if not has_majority(healthy + 1, voter_count + 1):
        return Wait(f"promoting {host} would leave healthy voters without a majority")
    return Promote(keep.id, host)


def _is_dead(assessment: Assessment, member: Member) -> bool:
    return (
        not is_healthy(member)
        and member.unhealthy_since is not None
        and assessment.now - member.unhealthy_since > assessment.grace_period
    )


def _removal_keeps_quorum(member: Member, current: list[Member], healthy: int) -> bool:
    return has_majority(healthy - is_healthy(member), len(current) - 1)


def _plan_voters(assessment: Assessment, members: list[Member], current: list[Member],
                 healthy: int) -> Action | None:
    ideal = max(1, assessment.ideal_size)
    dead = [m for m in current if _is_dead(assessment, m)]
    # Remove before add (as etcd advises): a dead voter still counts towards the quorum
    # size, so replacing it first would briefly need more healthy voters, not fewer.
    # The leader's own member goes last, so a leader with a broken local etcd repairs
    # the others first.
    dead.sort(key=lambda m: (m.name == assessment.self_host, m.name, m.id))
    for member in dead:
        if _removal_keeps_quorum(member, current, healthy):
            return RemoveMember(member.id, _host_of(assessment, member), RemovalCause.DEAD)
    if dead:
        return Wait("a dead voter cannot be removed without losing quorum")

    if len(current) > ideal:
        others = [m for m in current if m.name != assessment.self_host]
        others.sort(key=lambda m: (is_healthy(m), m.name, m.id))
        for member in others:
            if _removal_keeps_quorum(member, current, healthy):
                return RemoveMember(member.id, _host_of(assessment, member), RemovalCause.ABOVE_IDEAL)
        return Wait("shrinking now would lose quorum")

    if len(current) < ideal:
        candidate = _pick_volunteer(assessment, members)
        if candidate is None:
            return Wait(f"{len(current)}/{ideal} voters and no eligible volunteer")
        return AddLearner(candidate.host, candidate.peer_urls)
    return None


def _pick_volunteer(assessment: Assessment, members: list[Member]) -> Volunteer | None:
    nominated = {n.host for n in assessment.nominations}
    eligible = [
        v
        for v in assessment.volunteers
        if v.peer_urls and v.host not in nominated and not _is_member(v.host, v.peer_urls, members)
    ]
    return min(eligible, key=lambda v: (v.host in assessment.failed_hosts, v.host), default=None)
