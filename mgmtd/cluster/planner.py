"""The leader's membership planner (DESIGN.md section 3).

``plan(observed)`` is a pure function: it looks at one snapshot of the etcd member
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
from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    """One entry of etcd's member list, with the leader's latest probe of it."""

    id: int
    name: str  # == mgmtd hostname; "" while an added member has not started yet
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool
    healthy: bool
    unhealthy_since: float | None  # first probe that failed; None while healthy
    caught_up: bool  # learners: raft index close enough to the leader's to promote


@dataclass(frozen=True)
class Volunteer:
    """A live node offering to run etcd (``{ns}/volunteers/{host}``, on a lease)."""

    host: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]


@dataclass(frozen=True)
class Nomination:
    """``{ns}/nominated/{host}``, written by the leader when it adds the learner."""

    host: str
    peer_urls: tuple[str, ...]
    since: float


@dataclass(frozen=True)
class Observed:
    now: float
    self_host: str  # the planner runs on the leader; this is the leader's host
    ideal_size: int | None  # None: no valid size known, so no membership change
    members: tuple[Member, ...]
    volunteers: tuple[Volunteer, ...]
    nominations: tuple[Nomination, ...]
    failed_hosts: frozenset[str]  # nominations that recently missed their deadline
    grace_period: float  # how long a voter may stay unhealthy before removal
    learner_deadline: float  # how long a nominee has to start and catch up


@dataclass(frozen=True)
class AddLearner:
    """Add ``host`` as a learner; the loop then writes its nomination."""

    host: str
    peer_urls: tuple[str, ...]


@dataclass(frozen=True)
class Promote:
    member_id: int
    host: str


@dataclass(frozen=True)
class RemoveMember:
    """Remove a member; the loop also deletes the host's nomination."""

    member_id: int
    host: str  # "" when a never-started learner cannot be traced to a host
    reason: str


@dataclass(frozen=True)
class Unnominate:
    host: str
    reason: str


@dataclass(frozen=True)
class Wait:
    """Something needs doing but cannot be done safely yet."""

    reason: str


@dataclass(frozen=True)
class LostQuorum:
    """Fewer than a majority of voters are healthy: report, change nothing."""

    healthy: int
    voters: int


IDEAL_SIZE_UNKNOWN = "no valid ideal cluster size known: no membership change until one is set"

MembershipChange = AddLearner | Promote | RemoveMember
Action = AddLearner | Promote | RemoveMember | Unnominate | Wait | LostQuorum


def is_membership_change(action: Action) -> bool:
    return isinstance(action, MembershipChange)


def is_started(member: Member) -> bool:
    return member.name != ""


def is_healthy(member: Member) -> bool:
    # A member that never started has no known health, whatever the probe said.
    return member.healthy and is_started(member)


def voters(members: Iterable[Member]) -> list[Member]:
    return [m for m in members if not m.is_learner]


def has_majority(healthy: int, voter_count: int) -> bool:
    return voter_count >= 1 and 2 * healthy > voter_count


def quorum_ok(members: Iterable[Member]) -> bool:
    """True when strictly more than half of the voters are healthy."""
    vs = voters(members)
    return has_majority(sum(is_healthy(m) for m in vs), len(vs))


def plan(observed: Observed) -> list[Action]:
    members = sorted(observed.members, key=lambda m: m.id)
    current = voters(members)
    healthy = sum(is_healthy(m) for m in current)
    if not has_majority(healthy, len(current)):
        return [LostQuorum(healthy=healthy, voters=len(current))]

    actions: list[Action] = [
        Unnominate(n.host, "no member matches this nomination") for n in _stale_nominations(observed, members)
    ]
    if observed.ideal_size is None:
        return [*actions, Wait(IDEAL_SIZE_UNKNOWN)]
    learners = [m for m in members if m.is_learner]
    if learners:
        step = _plan_learners(observed, learners, len(current), healthy)
    else:
        step = _plan_voters(observed, members, current, healthy)
    if step is not None:
        actions.append(step)
    return actions


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return not set(a).isdisjoint(b)


def _is_member(host: str, peer_urls: tuple[str, ...], members: Iterable[Member]) -> bool:
    return any(m.name == host or _overlaps(m.peer_urls, peer_urls) for m in members)


def _stale_nominations(observed: Observed, members: list[Member]) -> list[Nomination]:
    stale = [n for n in observed.nominations if not _is_member(n.host, n.peer_urls, members)]
    return sorted(stale, key=lambda n: n.host)


def _nomination_of(observed: Observed, member: Member) -> Nomination | None:
    # A learner that has not started has no name yet: its peer URLs identify it.
    matches = [
        n
        for n in observed.nominations
        if (is_started(member) and n.host == member.name) or _overlaps(n.peer_urls, member.peer_urls)
    ]
    return min(matches, key=lambda n: n.host, default=None)


def _host_of(observed: Observed, member: Member) -> str:
    if is_started(member):
        return member.name
    nomination = _nomination_of(observed, member)
    return nomination.host if nomination else ""


def _is_ready(learner: Member) -> bool:
    return is_healthy(learner) and learner.caught_up


def _learner_removal_reason(observed: Observed, learner: Member, voter_count: int) -> str | None:
    nomination = _nomination_of(observed, learner)
    if nomination is None:
        return "learner has no nomination"
    if not any(v.host == nomination.host for v in observed.volunteers):
        return "learner's volunteer is gone"
    if voter_count >= max(1, observed.ideal_size):
        return "learner no longer needed: voters already at ideal size"
    if not _is_ready(learner) and observed.now - nomination.since > observed.learner_deadline:
        return "learner did not start and catch up before its deadline"
    return None


def _plan_learners(observed: Observed, learners: list[Member], voter_count: int, healthy: int) -> Action | None:
    for learner in learners:
        reason = _learner_removal_reason(observed, learner, voter_count)
        if reason is not None:
            return RemoveMember(learner.id, _host_of(observed, learner), reason)
    # More than one learner means someone else added one: keep the most advanced.
    keep = min(learners, key=lambda m: (not _is_ready(m), m.id))
    extra = [m for m in learners if m is not keep]
    if extra:
        return RemoveMember(extra[0].id, _host_of(observed, extra[0]), "only one learner at a time")
    host = _host_of(observed, keep)
    if not _is_ready(keep):
        return Wait(f"learner {host} is starting or catching up")
    if not has_majority(healthy + 1, voter_count + 1):
        return Wait(f"promoting {host} would leave healthy voters without a majority")
    return Promote(keep.id, host)


def _is_dead(observed: Observed, member: Member) -> bool:
    return (
        not is_healthy(member)
        and member.unhealthy_since is not None
        and observed.now - member.unhealthy_since > observed.grace_period
    )


def _removal_keeps_quorum(member: Member, current: list[Member], healthy: int) -> bool:
    return has_majority(healthy - is_healthy(member), len(current) - 1)


def _plan_voters(observed: Observed, members: list[Member], current: list[Member], healthy: int) -> Action | None:
    ideal = max(1, observed.ideal_size)
    dead = [m for m in current if _is_dead(observed, m)]
    # Remove before add (as etcd advises): a dead voter still counts towards the quorum
    # size, so replacing it first would briefly need more healthy voters, not fewer.
    # The leader's own member goes last, so a leader with a broken local etcd repairs
    # the others first.
    dead.sort(key=lambda m: (m.name == observed.self_host, m.name, m.id))
    for member in dead:
        if _removal_keeps_quorum(member, current, healthy):
            return RemoveMember(member.id, _host_of(observed, member), "unhealthy past grace period")
    if dead:
        return Wait("a dead voter cannot be removed without losing quorum")

    if len(current) > ideal:
        others = [m for m in current if m.name != observed.self_host]
        others.sort(key=lambda m: (is_healthy(m), m.name, m.id))
        for member in others:
            if _removal_keeps_quorum(member, current, healthy):
                return RemoveMember(member.id, _host_of(observed, member), "above ideal size")
        return Wait("shrinking now would lose quorum")

    if len(current) < ideal:
        candidate = _pick_volunteer(observed, members)
        if candidate is None:
            return Wait(f"{len(current)}/{ideal} voters and no eligible volunteer")
        return AddLearner(candidate.host, candidate.peer_urls)
    return None


def _pick_volunteer(observed: Observed, members: list[Member]) -> Volunteer | None:
    nominated = {n.host for n in observed.nominations}
    eligible = [
        v
        for v in observed.volunteers
        if v.peer_urls and v.host not in nominated and not _is_member(v.host, v.peer_urls, members)
    ]
    return min(eligible, key=lambda v: (v.host in observed.failed_hosts, v.host), default=None)
