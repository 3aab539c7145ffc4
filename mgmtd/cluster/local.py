"""``decide_local(assessment, local) -> LocalStep``: what this node does about
its own etcd this round, on every node (the leader's membership plan is
``planner.plan``). Pure; the supervisor carries the step out.

The rules, each pinned down by a test:

* etcd knows no user for this node (RBAC): ask the leader for one.
* The cluster cannot be read: do nothing (quorum may come back; guessing could
  only hurt).
* A node that bootstrapped the cluster nominates itself once, so that every
  server holds a nomination and losing it always means "stop serving".
* Nominated and not serving (and allowed to serve): start etcd, joining the
  members named in the nomination.
* Serving, not nominated and not in the member list: the cluster removed this
  node; stop etcd, wipe its member data and go on as a client.
"""

from __future__ import annotations

from dataclasses import dataclass

from mgmtd.cluster.model import Assessment


@dataclass(frozen=True)
class LocalState:
    host: str
    serving: bool          # this node's etcd should run
    bootstrapped: bool     # it started the cluster and has not nominated itself yet
    may_serve: bool        # not --no-server


@dataclass(frozen=True)
class Nothing:
    pass


@dataclass(frozen=True)
class AskToJoin:
    pass


@dataclass(frozen=True)
class NominateSelf:
    initial_cluster: str


@dataclass(frozen=True)
class StartEtcd:
    initial_cluster: str


@dataclass(frozen=True)
class StopServing:
    pass


LocalStep = Nothing | AskToJoin | NominateSelf | StartEtcd | StopServing


def decide_local(assessment: Assessment, local: LocalState) -> LocalStep:
    if assessment.permission_denied:
        return AskToJoin()
    if not assessment.reachable:
        return Nothing()
    nomination = assessment.nomination
    if local.serving and local.bootstrapped and nomination is None:
        initial = ",".join(f"{m.name}={u}" for m in assessment.members if m.name for u in m.peer_urls)
        return NominateSelf(initial)
    if not local.serving and nomination is not None and local.may_serve:
        return StartEtcd(nomination.initial_cluster)
    if local.serving and nomination is None and local.host not in assessment.member_names:
        return StopServing()
    return Nothing()
