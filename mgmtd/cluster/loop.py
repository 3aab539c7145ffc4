"""One cluster round, top to bottom (DESIGN.md section 3):

    snapshot   = observe(api, store, endpoints)             I/O: raw facts
    assessment = assess(previous, snapshot, outcomes)       pure
    actions    = plan(assessment)            on the leader  pure
    step       = decide_local(assessment, local)            pure
    announce this node (lease, host record, candidacy)      I/O
    outcomes   = act(api, store, assessment, actions)       I/O, typed results

The local step (start or stop etcd...) is handed back to the supervisor, which
owns the etcd child. The last assessment and decision are kept: the host
record publishes them for ``mgmtctl status``, and the next round reads the
outcomes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mgmtd import __version__, log
from mgmtd.backoff import first_line
from mgmtd.cluster.access import Access, AccessKeeper
from mgmtd.cluster.act import RECOVERY, act
from mgmtd.cluster.assess import Settings, assess
from mgmtd.cluster.client import connect
from mgmtd.cluster.etcdapi import EtcdApi
from mgmtd.cluster.keys import Keys
from mgmtd.cluster.local import LocalState, LocalStep, decide_local
from mgmtd.cluster.model import Assessment, Decision, Nomination, Outcome, Result
from mgmtd.cluster.observe import observe
from mgmtd.cluster.planner import plan
from mgmtd.cluster.presence import Identity, Presence
from mgmtd.cluster.store import DuplicateHost, HostRecord, Store

LOG = log.get("cluster")

JOIN_RETRY = 5.0    # seconds between requests for this node's etcd user


@dataclass(frozen=True)
class Round:
    assessment: Assessment
    decision: Decision
    step: LocalStep


class ClusterLoop:
    def __init__(self, identity: Identity, keys: Keys, settings: Settings, endpoints: list[str],
                 fallback: Callable[[], list[str]], api: EtcdApi, access: Access | None = None,
                 pid: int = 0) -> None:
        self.me = identity
        self.api = api                    # member calls and probes, with this node's TLS files
        self.keys = keys
        self.settings = settings
        self.endpoints = list(endpoints)
        self.fallback = fallback          # every endpoint ever known, and the seeds
        self.access = access
        self.keeper = AccessKeeper(access, identity.host) if access is not None else None
        self.pid = pid
        self.presence = Presence(identity, lambda: self.endpoints, api.tls)
        self.client = None
        self.client_endpoints: tuple[str, ...] = ()
        self.previous: Assessment | None = None
        self.decision = Decision()        # the last round's plan and what became of it
        self.join_asked_at: float | None = None
        self.before_change: Callable[[object, Store], None] | None = None   # the supervisor's backup

    # --- the round --------------------------------------------------------------------
    def round(self, local: LocalState, engine: dict) -> Round:
        began = time.monotonic()
        store = self._store()
        snapshot = observe(self.api, store, self.endpoints, self.me.host, time.time())
        observed = time.monotonic()
        assessment = assess(self.previous, snapshot, self.decision.outcomes, self.settings,
                            self.keys.ideal_size)
        report_changes(self.previous, assessment, self.endpoints, self.keys.ideal_size)
        actions = tuple(plan(assessment)) if assessment.is_leader else ()
        step = decide_local(assessment, local)
        outcomes: tuple[Outcome, ...] = ()
        if assessment.reachable:
            self.endpoints = own_first(assessment.voter_endpoints, self.me.client_urls) or self.endpoints
            try:
                self.presence.announce(store, self._record(assessment, Decision(actions), local, engine),
                                       local.serving, assessment.leader)
            except DuplicateHost:
                raise
            except Exception as err:  # etcd moving under us: the next round looks again
                LOG.debug("cannot announce this node yet: %s", first_line(err))
            outcomes = act(self.api, store, assessment, actions, self.before_change) if actions else ()
            self._log_outcomes(outcomes)
            self._look_after_access(store, assessment)
        else:
            self._drop_client()
            self.endpoints = merge(self.endpoints, self.fallback())
        self.previous = assessment
        self.decision = Decision(actions, outcomes)
        # what a round costs as the cluster grows (bench/scale.py reads the leader's)
        LOG.debug("round: %.1f ms (observe %.1f ms), leader %s, %d volunteers",
                  (time.monotonic() - began) * 1000, (observed - began) * 1000,
                  "yes" if assessment.is_leader else "no", len(assessment.volunteers))
        return Round(assessment, self.decision, step)

    def _record(self, assessment: Assessment, decision: Decision, local: LocalState, engine: dict) -> HostRecord:
        cluster: dict = {"ideal_size": assessment.ideal_size, "ideal_problem": assessment.ideal_problem}
        if assessment.is_leader:
            cluster["waiting"] = decision.waiting or self._not_yet()
        return HostRecord(self.me.host, self.me.instance, "server" if local.serving else "client", self.pid,
                          __version__, self.me.client_urls, self.me.peer_urls, engine, cluster)

    def _not_yet(self) -> str:
        """What etcd refused last round for now, as a reason to wait."""
        return "; ".join(f"{type(o.action).__name__}: etcd says not yet ({o.detail})"
                         for o in self.decision.outcomes if o.result is Result.NOT_YET)

    def _log_outcomes(self, outcomes: tuple[Outcome, ...]) -> None:
        for outcome in outcomes:
            name = type(outcome.action).__name__
            if outcome.result is Result.DONE:
                level = logging.WARNING if name == "RemoveMember" else logging.INFO
                LOG.log(level, "%s", outcome.detail)
            else:
                level = logging.DEBUG if outcome.result is Result.NOT_YET else logging.WARNING
                LOG.log(level, "%s: not done yet: %s", name, outcome.detail)

    # --- access (TLS + RBAC) ----------------------------------------------------------------
    def _look_after_access(self, store: Store, assessment: Assessment) -> None:
        if self.keeper is None:
            return
        if not assessment.is_leader:
            self.keeper.lost_leadership()
            return
        servers = set(assessment.member_names) | {n.host for n in assessment.nominations}
        try:
            self.keeper.round(store.client, assessment.raft_leader_url or assessment.endpoint, servers,
                              assessment.now)
        except Exception as err:  # auth is looked after again next round
            LOG.warning("cannot update etcd users and roles yet: %s", first_line(err))

    def ask_to_join(self) -> str:
        """etcd knows no user for this node yet: ask the leader for one (again
        every few seconds, a request can be lost with a leader). Returns an
        error to report, or ""."""
        now = time.monotonic()
        if self.join_asked_at is not None and now - self.join_asked_at < JOIN_RETRY:
            return ""
        try:
            self.access.request_join(self.endpoints, self.me.host)
        except Exception as err:
            LOG.warning("%s", first_line(err)[:200])
            return first_line(err)[:200]
        if self.join_asked_at is None:
            LOG.info("etcd has no user for %s yet: asked the cluster's leader for one", self.me.host)
        self.join_asked_at = now
        return ""

    def nominate_self(self, initial_cluster: str) -> bool:
        """The bootstrapping node nominates itself, so that every server holds a
        nomination and losing it always means "stop serving". False when etcd
        did not take it (the next round tries again)."""
        nomination = Nomination(self.me.host, self.me.peer_urls, time.time(), initial_cluster)
        return self._write("nominate this node", lambda store: store.nominate(nomination, only_if_missing=True))

    def set_ideal_size_if_missing(self, size: int) -> bool:
        """The size a new cluster is born with; an existing key is left alone."""
        return self._write("write the ideal size", lambda store: store.put_ideal_size_if_missing(size))

    def _write(self, what: str, write: Callable[[Store], None]) -> bool:
        store = self._store()
        if store is None:
            return False
        try:
            write(store)
        except Exception as err:  # etcd restarting or moving: the next round tries again
            LOG.debug("cannot %s yet: %s", what, first_line(err))
            return False
        return True

    # --- the connection ---------------------------------------------------------------------
    def store(self) -> Store | None:
        """The store on the current endpoints (None when no client can be made)."""
        return self._store()

    def _store(self) -> Store | None:
        endpoints = tuple(self.endpoints)
        if self.client is None or endpoints != self.client_endpoints:
            self._drop_client()
            try:
                self.client = connect(list(endpoints), timeout=3.0, tls=self.api.tls)
            except Exception as err:
                LOG.debug("cannot connect to %s: %s", ",".join(endpoints), err)
                return None
            self.client_endpoints = endpoints
            self.presence.rebind(self.client)
        return Store(self.client, self.keys)

    def _drop_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def drop_endpoints(self, urls: tuple[str, ...], instead: list[str]) -> None:
        self.endpoints = [u for u in self.endpoints if u not in urls] or list(instead)

    def close(self) -> None:
        if self.client is not None:
            self.presence.withdraw(self.client)
            self.client.close()
            self.client = None


def report_changes(before: Assessment | None, now: Assessment, endpoints: list[str], ideal_key: str) -> None:
    """What a round found that the last did not, said once: the cluster out of
    reach or back, quorum lost or back, a bad ideal size (by the leader only; a
    new leader says it again), an unreadable nomination."""
    was_reachable = before is None or before.reachable
    if not now.reachable and was_reachable and not now.permission_denied:
        LOG.warning("cannot reach the cluster at %s: %s", ",".join(endpoints), now.error[:200])
    elif now.reachable and not was_reachable:
        LOG.info("the cluster is reachable again")
    lost_before = before.quorum_lost if before is not None else ""
    if now.quorum_lost and now.quorum_lost != lost_before:
        LOG.error("quorum lost: %s; no membership change is made. %s", now.quorum_lost, RECOVERY)
    elif lost_before and not now.quorum_lost and now.reachable:
        LOG.warning("quorum is back")
    leading_before = before is not None and before.is_leader
    problem_before = before.ideal_problem if leading_before else ""
    if now.is_leader and now.ideal_problem != problem_before:
        if now.ideal_problem:
            LOG.warning("%s (mgmtctl set ideal-cluster-size N fixes it)", now.ideal_problem)
        elif problem_before:
            LOG.info("%s is valid again: %d", ideal_key, now.ideal_size)
    if now.nomination_unreadable and not (before is not None and before.nomination_unreadable):
        LOG.warning("nomination of %s is not a JSON object: keeping the last one read", now.self_host)


def own_first(voter_endpoints: tuple[str, ...], own: tuple[str, ...]) -> list[str]:
    """The voters' client URLs, this node's own first: a server talks to its
    own etcd (no hop, and it answers to the last: a stop revokes the lease at
    once even when the other members are already gone)."""
    mine = [u for u in voter_endpoints if u in own]
    return mine + [u for u in voter_endpoints if u not in mine]


def merge(*lists) -> list[str]:
    out: list[str] = []
    for items in lists:
        for item in items:
            if item not in out:
                out.append(item)
    return out
