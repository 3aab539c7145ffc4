"""``assess(previous, snapshot, outcomes, settings) -> Assessment``: the one
place where a round's raw facts become judgements. Pure: health and since when
a member has been unhealthy, learner catch-up, quorum, the ideal size in force
(the last valid one), this node's nomination (the last readable one), and the
hosts that failed recently (from what the last round's actions did, never
from message text)."""

from __future__ import annotations

from dataclasses import dataclass

from mgmtd.cluster.etcdapi import EndpointStatus, MemberInfo
from mgmtd.cluster.model import (
    Assessment,
    Member,
    Outcome,
    Quorum,
    Readable,
    RemoveMember,
    Result,
    Snapshot,
)

# A learner this close to the leader's raft index may be promoted (etcd checks again)
CATCH_UP_RATIO = 0.9
# How long a host removed for failing is tried after the other volunteers
FAILURE_MEMORY = 120.0

# A member's health, one definition for the planner, the supervisor's quorum
# check and mgmtctl: it answers status and knows a raft leader. A member that
# answers without a leader is reachable but cut off from a majority (lost
# quorum, a partition): not the same as one that does not answer at all.
HEALTHY = "healthy"
NO_LEADER = "no-leader"        # answers, but knows no raft leader
UNREACHABLE = "unreachable"    # does not answer
UNSTARTED = "unstarted"        # added to etcd, never started (no name yet)


@dataclass(frozen=True)
class Settings:
    grace_period: float
    learner_deadline: float


def health(member: MemberInfo, status: EndpointStatus | None) -> str:
    """``status`` is the member's probe. A learner counts as healthy as soon as
    it answers: it is still catching up, and its raft index decides its promotion."""
    if not member.name:
        return UNSTARTED
    if status is None:
        return UNREACHABLE
    return HEALTHY if member.is_learner or status.leader_id != 0 else NO_LEADER


def quorum_of(members: tuple[MemberInfo, ...], statuses: tuple[EndpointStatus | None, ...]) -> Quorum:
    states = [health(m, s) for m, s in zip(members, statuses, strict=True) if not m.is_learner]
    return Quorum(voters=len(states), healthy=states.count(HEALTHY),
                  reachable=sum(1 for s in states if s not in (UNREACHABLE, UNSTARTED)))


def remember_failures(previous: tuple[tuple[str, float], ...], outcomes: tuple[Outcome, ...],
                      now: float) -> tuple[tuple[str, float], ...]:
    """Hosts removed because they failed (dead, or a learner past its deadline),
    with when; forgotten after FAILURE_MEMORY. Their volunteer key may outlive
    them by a lease: they are not picked again at once."""
    failures = dict(previous)
    for outcome in outcomes:
        action = outcome.action
        if (outcome.result is Result.DONE and isinstance(action, RemoveMember)
                and action.host and action.cause.failed):
            failures[action.host] = now
    return tuple(sorted((h, t) for h, t in failures.items() if now - t <= FAILURE_MEMORY))


def _members(previous: Assessment | None, snapshot: Snapshot) -> tuple[Member, ...]:
    before = {m.id: m for m in previous.members} if previous is not None else {}
    statuses = snapshot.statuses
    probed = statuses is not None
    if not probed:
        statuses = (None,) * len(snapshot.members)
    top = max((s.raft_index for s in statuses if s is not None), default=0)
    out = []
    for info, status in zip(snapshot.members, statuses, strict=True):
        healthy = probed and health(info, status) == HEALTHY
        if healthy or not probed:
            since = None
        else:
            # the grace period counts from the first probe that failed, as this node saw it
            earlier = before.get(info.id)
            since = earlier.unhealthy_since if earlier is not None and earlier.unhealthy_since else snapshot.now
        caught_up = info.is_learner and status is not None and status.raft_index >= CATCH_UP_RATIO * top
        progress = min(1.0, status.raft_index / top) if status is not None and top else 0.0
        out.append(Member(id=info.id, name=info.name, peer_urls=info.peer_urls, client_urls=info.client_urls,
                          is_learner=info.is_learner, healthy=healthy, unhealthy_since=since,
                          caught_up=caught_up, progress=progress))
    return tuple(out)


def _raft_leader_url(snapshot: Snapshot) -> str:
    """Membership changes go to etcd's raft leader itself: etcd 3.4 forwards a
    promote that reaches a follower without the caller's user, and a follower
    refuses a removal while it is not connected to every peer."""
    if snapshot.statuses is None:
        return ""
    leader_ids = {s.leader_id for s in snapshot.statuses if s is not None and s.leader_id}
    for member in snapshot.members:
        if member.id in leader_ids and member.client_urls:
            return member.client_urls[0]
    return ""


def _ideal(previous: Assessment | None, snapshot: Snapshot, key: str) -> tuple[int | None, str]:
    last = previous.ideal_size if previous is not None else None
    reading = snapshot.ideal
    if reading is None:          # not read this round (the cluster did not answer)
        return last, previous.ideal_problem if previous is not None else ""
    if reading.size is not None:
        return reading.size, ""
    if last is not None:
        return last, f"{key} {reading.describe()}: keeping the last valid size {last}"
    return None, f"{key} {reading.describe()}, and no valid size was seen: no membership change until one is set"


def assess(previous: Assessment | None, snapshot: Snapshot, outcomes: tuple[Outcome, ...],
           settings: Settings, ideal_key: str = "ideal-size") -> Assessment:
    if not snapshot.reachable:
        # nothing new from the KV store: keep what was known, add what the probes say
        base = previous or Assessment(now=snapshot.now, self_host=snapshot.self_host, ideal_size=None,
                                      members=(), volunteers=(), nominations=(), failed_hosts=frozenset(),
                                      grace_period=settings.grace_period,
                                      learner_deadline=settings.learner_deadline)
        quorum = (quorum_of(snapshot.members, snapshot.statuses)
                  if snapshot.statuses is not None and snapshot.members else None)
        return Assessment(
            now=snapshot.now, self_host=snapshot.self_host, ideal_size=base.ideal_size,
            members=base.members, volunteers=(), nominations=(), failed_hosts=base.failed_hosts,
            grace_period=settings.grace_period, learner_deadline=settings.learner_deadline,
            reachable=False, error=snapshot.error, permission_denied=snapshot.permission_denied,
            leader="", is_leader=False, quorum=quorum, ideal_problem=base.ideal_problem,
            nomination=base.nomination, failures=base.failures)
    failures = remember_failures(previous.failures if previous is not None else (), outcomes, snapshot.now)
    ideal_size, ideal_problem = _ideal(previous, snapshot, ideal_key)
    nomination = snapshot.nomination
    unreadable = nomination is Readable.UNREADABLE
    if unreadable:
        # unreadable is not "gone": starting or stopping etcd on it would be a guess
        nomination = previous.nomination if previous is not None else None
    is_leader = snapshot.leader == snapshot.self_host
    return Assessment(
        now=snapshot.now, self_host=snapshot.self_host, ideal_size=ideal_size,
        members=_members(previous if is_leader else None, snapshot),
        volunteers=snapshot.volunteers, nominations=snapshot.nominations,
        failed_hosts=frozenset(h for h, _ in failures), grace_period=settings.grace_period,
        learner_deadline=settings.learner_deadline, reachable=True, endpoint=snapshot.endpoint,
        leader=snapshot.leader, is_leader=is_leader,
        quorum=quorum_of(snapshot.members, snapshot.statuses) if snapshot.statuses is not None else None,
        ideal_problem=ideal_problem, nomination=nomination, nomination_unreadable=unreadable,
        failures=failures, raft_leader_url=_raft_leader_url(snapshot),
    )
