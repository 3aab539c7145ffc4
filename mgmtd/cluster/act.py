"""``act(api, store, assessment, actions) -> outcomes``: carries out the leader's
plan (etcd's member API over gRPC, nominations through the store). No
decisions: each action's fate comes back as a typed ``Outcome`` that the next
round's ``assess`` reads. etcd's own answers are the only text looked at:
those that mean "not yet" are told apart from real failures."""

from __future__ import annotations

from collections.abc import Callable

from mgmtd.backoff import first_line
from mgmtd.cluster.etcdapi import EtcdApi
from mgmtd.cluster.model import (
    Action,
    AddLearner,
    Assessment,
    Nomination,
    Outcome,
    Promote,
    RemoveMember,
    Result,
    Unnominate,
    is_membership_change,
)
from mgmtd.cluster.store import Store, initial_cluster

# etcd's answers that only mean "not yet": the next round tries again
TRANSIENT = ("unhealthy cluster", "not in sync", "too many learner", "learner member which is in sync",
             "member not found", "context deadline exceeded", "leader changed")

RECOVERY = ("To recover: bring the stopped voters back (start mgmtd on their nodes with the same "
            "--prefix); if they are gone for good, restore the newest backup on the node that holds it "
            "with 'mgmtctl restore BACKUP' ('mgmtctl backups' lists them; see docs/operations.md).")


def act(api: EtcdApi, store: Store, assessment: Assessment, actions: tuple[Action, ...],
        before_change: Callable[[Action, Store], None] | None = None) -> tuple[Outcome, ...]:
    """``before_change(action, store)`` runs before each membership change (the
    supervisor backs up there, through this round's store); it must not raise
    and must be quick."""
    endpoint = assessment.raft_leader_url or assessment.endpoint
    outcomes = []
    for action in actions:
        if not is_membership_change(action) and not isinstance(action, Unnominate):
            continue  # Wait and LostQuorum are reports, not acts
        if before_change is not None and is_membership_change(action):
            before_change(action, store)
        try:
            detail = _one(api, store, assessment, endpoint, action)
        except Exception as err:  # etcd refused or did not answer: the next round plans again from what is
            text = first_line(err)
            result = Result.NOT_YET if any(t in text for t in TRANSIENT) else Result.FAILED
            outcomes.append(Outcome(action, result, text))
            continue
        outcomes.append(Outcome(action, Result.DONE, detail))
    return tuple(outcomes)


def _one(api: EtcdApi, store: Store, assessment: Assessment, endpoint: str, action: Action) -> str:
    if isinstance(action, AddLearner):
        added = api.member_add(endpoint, list(action.peer_urls), learner=True)
        store.nominate(Nomination(action.host, action.peer_urls, assessment.now,
                                  initial_cluster(assessment.members, action.host, action.peer_urls)))
        return f"added {action.host} as a learner (id {added.id:x}) and nominated it"
    if isinstance(action, Promote):
        api.member_promote(endpoint, action.member_id)
        return f"promoted {action.host} (id {action.member_id:x}) to voter"
    if isinstance(action, RemoveMember):
        api.member_remove(endpoint, action.member_id)
        if action.host:
            store.unnominate(action.host)
        return f"removed member {action.host or '(never started)'} (id {action.member_id:x}): {action.reason}"
    if isinstance(action, Unnominate):
        store.unnominate(action.host)
        return f"withdrew the nomination of {action.host}: {action.reason}"
    raise TypeError(f"not an act: {action!r}")
