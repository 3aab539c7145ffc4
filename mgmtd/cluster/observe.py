"""Reads the cluster for the planner: etcd's member list, each member's health
(probed in parallel), volunteers, nominations and the ideal size. I/O only; the
decisions are the planner's."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mgmtd.cluster import etcdapi
from mgmtd.cluster.keys import Keys, json_object
from mgmtd.cluster.planner import Member, Nomination, Observed, Volunteer

# a learner this close to the leader's raft index may be promoted (etcd checks again)
CATCH_UP_RATIO = 0.9

# A member's health, one definition for the planner, the supervisor's quorum
# check and mgmtctl: it answers status and knows a raft leader. A member that
# answers without a leader is reachable but cut off from a majority (lost
# quorum, a partition): not the same as one that does not answer at all.
HEALTHY = "healthy"
NO_LEADER = "no-leader"        # answers, but knows no raft leader
UNREACHABLE = "unreachable"    # does not answer
UNSTARTED = "unstarted"        # added to etcd, never started (no name yet)


@dataclass
class HealthTracker:
    """Remembers since when each member has looked unhealthy (the grace period
    counts from there)."""

    since: dict[int, float] = field(default_factory=dict)

    def update(self, member_id: int, healthy: bool, now: float) -> float | None:
        if healthy:
            self.since.pop(member_id, None)
            return None
        return self.since.setdefault(member_id, now)

    def forget_others(self, ids: set[int]) -> None:
        for gone in set(self.since) - ids:
            del self.since[gone]


def member_list_from(endpoints: Sequence[str]) -> tuple[str, list[etcdapi.MemberInfo]]:
    """The member list from the first endpoint that answers; returns that endpoint too."""
    errors = []
    for endpoint in endpoints:
        try:
            _, members = etcdapi.member_list(endpoint, timeout=1.5)
            return endpoint, members
        except etcdapi.EtcdApiError as err:
            errors.append(str(err))
    raise etcdapi.EtcdApiError("no endpoint answered the member list: " + "; ".join(errors))


def probe(member: etcdapi.MemberInfo) -> etcdapi.EndpointStatus | None:
    if not member.name:
        return None
    for url in member.client_urls:
        try:
            return etcdapi.status(url, timeout=0.8)
        except etcdapi.EtcdApiError:
            continue
    return None


def health(member: etcdapi.MemberInfo, status: etcdapi.EndpointStatus | None) -> str:
    """``status`` is ``probe(member)``. A learner counts as healthy as soon as it
    answers: it is still catching up, and ``caught_up`` decides its promotion."""
    if not member.name:
        return UNSTARTED
    if status is None:
        return UNREACHABLE
    return HEALTHY if member.is_learner or status.leader_id != 0 else NO_LEADER


def probe_all(members: list[etcdapi.MemberInfo]) -> list[etcdapi.EndpointStatus | None]:
    if not members:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(members))) as pool:
        return list(pool.map(probe, members))


def read_json_prefix(client, prefix: str) -> dict[str, dict]:
    out = {}
    for value, meta in client.get_prefix(prefix):
        parsed = json_object(value)
        if parsed is not None:
            out[meta.key.decode().removeprefix(prefix)] = parsed
    return out


def observe(*, client, keys: Keys, members: list[etcdapi.MemberInfo], tracker: HealthTracker,
            now: float, self_host: str, ideal_size: int, failed_hosts: frozenset[str],
            grace_period: float, learner_deadline: float) -> Observed:
    statuses = probe_all(members)
    leader_index = max((s.raft_index for s in statuses if s is not None), default=0)
    planned = []
    for info, status in zip(members, statuses, strict=True):
        healthy = health(info, status) == HEALTHY
        caught_up = (info.is_learner and status is not None
                     and status.raft_index >= CATCH_UP_RATIO * leader_index)
        planned.append(Member(
            id=info.id, name=info.name, peer_urls=info.peer_urls, client_urls=info.client_urls,
            is_learner=info.is_learner, healthy=healthy,
            unhealthy_since=tracker.update(info.id, healthy, now), caught_up=caught_up,
        ))
    tracker.forget_others({m.id for m in members})
    volunteers = tuple(
        Volunteer(host, tuple(v.get("peer_urls", ())), tuple(v.get("client_urls", ())))
        for host, v in sorted(read_json_prefix(client, keys.volunteers).items())
    )
    nominations = tuple(
        Nomination(host, tuple(n.get("peer_urls", ())), float(n.get("since", 0)))
        for host, n in sorted(read_json_prefix(client, keys.nominated).items())
    )
    return Observed(
        now=now, self_host=self_host, ideal_size=ideal_size, members=tuple(planned),
        volunteers=volunteers, nominations=nominations, failed_hosts=failed_hosts,
        grace_period=grace_period, learner_deadline=learner_deadline,
    )
