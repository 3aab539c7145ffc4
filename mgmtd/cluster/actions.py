"""Carries out the planner's actions against etcd (the member API over
gRPC, nominations through the KV store)."""

from __future__ import annotations

import json
import logging

from mgmtd import log
from mgmtd.backoff import first_line
from mgmtd.cluster import etcdapi, planner
from mgmtd.cluster.keys import Keys

LOG = log.get("cluster")

# etcd's answers that only mean "not yet": the loop tries again on its next round
TRANSIENT = ("unhealthy cluster", "not in sync", "too many learner", "learner member which is in sync",
             "member not found", "context deadline exceeded", "leader changed")


def nomination_value(host: str, peer_urls: tuple[str, ...], initial_cluster: str, since: float) -> str:
    return json.dumps({"host": host, "peer_urls": list(peer_urls), "initial_cluster": initial_cluster,
                       "since": since}, sort_keys=True)


def initial_cluster(members: list[etcdapi.MemberInfo], host: str, peer_urls: tuple[str, ...]) -> str:
    """etcd's --initial-cluster for a node joining ``members``."""
    parts = [f"{m.name}={url}" for m in members if m.name for url in m.peer_urls]
    parts += [f"{host}={url}" for url in peer_urls]
    return ",".join(parts)


def raft_leader_endpoint(endpoint: str, members: list[etcdapi.MemberInfo]) -> str:
    """Membership changes go to etcd's raft leader itself: etcd 3.4 forwards a
    promote that reaches a follower without the caller's user ("auth: user name
    is empty"), and a follower refuses a removal while it is not connected to
    every peer."""
    try:
        leader_id = etcdapi.status(endpoint).leader_id
    except etcdapi.EtcdApiError:
        return endpoint
    for member in members:
        if member.id == leader_id and member.client_urls:
            return member.client_urls[0]
    return endpoint


class ActionRunner:
    def __init__(self, client, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.failed_hosts: dict[str, float] = {}
        self.lost_quorum_logged = False

    def recent_failures(self, now: float, memory: float = 120.0) -> frozenset[str]:
        for host, when in list(self.failed_hosts.items()):
            if now - when > memory:
                del self.failed_hosts[host]
        return frozenset(self.failed_hosts)

    def run(self, actions: list[planner.Action], endpoint: str, members: list[etcdapi.MemberInfo],
            now: float) -> bool:
        """Returns True when a membership change was made."""
        changed = False
        if any(planner.is_membership_change(a) for a in actions):
            endpoint = raft_leader_endpoint(endpoint, members)
        for action in actions:
            try:
                changed |= self._one(action, endpoint, members, now)
            except Exception as err:  # etcd refused or did not answer: the next round plans again from what is
                text = first_line(err)
                level = logging.DEBUG if any(t in text for t in TRANSIENT) else logging.WARNING
                LOG.log(level, "%s: not done yet: %s", type(action).__name__, text)
        if not any(isinstance(a, planner.LostQuorum) for a in actions):
            self.lost_quorum_logged = False
        return changed

    def _one(self, action: planner.Action, endpoint: str, members: list[etcdapi.MemberInfo],
             now: float) -> bool:
        if isinstance(action, planner.AddLearner):
            added = etcdapi.member_add(endpoint, list(action.peer_urls), learner=True)
            value = nomination_value(action.host, action.peer_urls,
                                     initial_cluster(members, action.host, action.peer_urls), now)
            self.client.put(self.keys.nomination(action.host), value)
            LOG.info("added %s as a learner (id %x) and nominated it", action.host, added.id)
            return True
        if isinstance(action, planner.Promote):
            etcdapi.member_promote(endpoint, action.member_id)
            LOG.info("promoted %s (id %x) to voter", action.host, action.member_id)
            return True
        if isinstance(action, planner.RemoveMember):
            etcdapi.member_remove(endpoint, action.member_id)
            if action.host:
                self.client.delete(self.keys.nomination(action.host))
                if "deadline" in action.reason or "unhealthy" in action.reason:
                    # its volunteer key may outlive it by a lease: do not pick it again at once
                    self.failed_hosts[action.host] = now
            LOG.warning("removed member %s (id %x): %s", action.host or "(never started)",
                        action.member_id, action.reason)
            return True
        if isinstance(action, planner.Unnominate):
            self.client.delete(self.keys.nomination(action.host))
            LOG.info("withdrew the nomination of %s: %s", action.host, action.reason)
            return False
        if isinstance(action, planner.LostQuorum):
            if not self.lost_quorum_logged:
                LOG.error("quorum lost: %d of %d voters healthy; no membership change will be made. %s",
                          action.healthy, action.voters, RECOVERY)
                self.lost_quorum_logged = True
            return False
        if isinstance(action, planner.Wait):
            LOG.debug("waiting: %s", action.reason)
        return False


RECOVERY = ("To recover: bring the stopped voters back (start mgmtd on their nodes with the same "
            "--prefix); if they are gone for good, restore from a snapshot on one node with "
            "'etcdctl snapshot restore' and start the others afresh (see docs/operations.md).")
