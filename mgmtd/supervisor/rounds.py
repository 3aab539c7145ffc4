"""The supervisor's cluster rounds: each round registers this node, reads the
cluster (and on the leader plans and acts, in ``membership``), then follows
what the cluster decided for this node: start etcd when nominated, stop it when
no longer a member, hand the engine the current membership. Also what to do
when the cluster does not answer: fall back on every endpoint ever known, say
plainly when quorum is lost, and ask for an etcd user when etcd knows none."""

from __future__ import annotations

import os
import shutil
import threading
import time

from mgmtd import log, protocol
from mgmtd.backoff import first_line
from mgmtd.cluster.access import Access, is_permission_denied
from mgmtd.cluster.actions import RECOVERY
from mgmtd.cluster.client import connect
from mgmtd.cluster.observe import HEALTHY, UNREACHABLE, UNSTARTED, health, member_list_from, probe_all
from mgmtd.cluster.planner import has_majority
from mgmtd.supervisor.config import NodeConfig
from mgmtd.supervisor.engine_process import EngineProcess
from mgmtd.supervisor.etcd_process import EtcdProcess, EtcdStartError
from mgmtd.supervisor.membership import ClusterMembership, DuplicateHost, Round
from mgmtd.supervisor.preflight import NodeState

LOG = log.get("supervisor")

JOIN_RETRY = 5.0    # seconds between requests for this node's etcd user


class ClusterRounds:
    """Mixed into the Supervisor, which owns these attributes and the etcd and
    engine children."""

    config: NodeConfig
    etcd: EtcdProcess
    engine: EngineProcess
    state: NodeState
    membership: ClusterMembership
    access: Access | None
    client: object
    client_endpoints: tuple[str, ...]
    cluster_endpoints: list[str]
    serving: bool
    bootstrapped: bool
    engine_state: protocol.EngineState
    sent_membership: protocol.Membership | None
    unreachable_since: float | None
    last_round: Round
    last_error: str
    quorum_lost: str
    join_asked_at: float | None
    stopping: threading.Event

    @property
    def data_dir(self) -> str:
        return os.path.join(self.config.prefix, "etcd")

    def _membership_moving(self) -> bool:
        """Round at the fast pace while the cluster changes: the leader while a
        change is due or under way, a volunteer while the cluster is below its
        ideal size (its nomination may come any moment)."""
        round_ = self.last_round
        volunteering = not self.serving and not self.config.no_server
        return (round_.changed_membership or round_.change_pending
                or (round_.nomination is not None and not self.serving)
                or (volunteering and round_.below_ideal))

    def _client(self):
        endpoints = tuple(self.cluster_endpoints)
        if self.client is None or endpoints != self.client_endpoints:
            if self.client is not None:
                self.client.close()
            self.client = connect(list(endpoints), timeout=3.0)
            self.client_endpoints = endpoints
            self.membership.rebind(self.client)
        return self.client

    def _cluster_round(self) -> bool:
        role = "server" if self.serving else "client"
        try:
            client = self._client()
            round_ = self.membership.round(client, self.cluster_endpoints, role,
                                           self.engine_state_dict(),
                                           self.config.ideal_cluster_size if self.bootstrapped else None)
        except DuplicateHost:
            raise
        except Exception as err:  # etcd unreachable or moving: keep going, say so once
            if self.access is not None and is_permission_denied(err):
                self._ask_to_join()
                return False
            self._unreachable(err)
            return False
        if self.unreachable_since is not None:
            LOG.info("the cluster is reachable again")
        if self.quorum_lost:
            LOG.warning("quorum is back")
        self.unreachable_since = None
        self.quorum_lost = ""
        self.last_round = round_
        if round_.lost_quorum:
            LOG.debug("quorum lost: %s", round_.lost_quorum)
        self._follow(round_)
        self._push_membership(round_)
        return True

    def _ask_to_join(self) -> None:
        """etcd knows no user for this node yet: ask the leader for one (again
        every few seconds, a request can be lost with a leader)."""
        now = time.monotonic()
        if self.join_asked_at is not None and now - self.join_asked_at < JOIN_RETRY:
            return
        try:
            self.access.request_join(self.cluster_endpoints, self.config.hostname)
        except Exception as err:
            self.last_error = _short(err)
            LOG.warning("%s", self.last_error)
            return
        if self.join_asked_at is None:
            LOG.info("etcd has no user for %s yet: asked the cluster's leader for one",
                     self.config.hostname)
        self.join_asked_at = now

    def _unreachable(self, err: Exception) -> None:
        now = time.monotonic()
        if self.unreachable_since is None:
            self.unreachable_since = now
            LOG.warning("cannot reach the cluster at %s: %s", ",".join(self.cluster_endpoints),
                        _short(err))
        self.last_error = _short(err)
        self._check_quorum()
        if self.client is not None:
            self.client.close()
            self.client = None
        # fall back on everything we ever knew, and the seeds
        self.cluster_endpoints = merge(self.cluster_endpoints, self.state.endpoints, self.config.seeds)

    def _check_quorum(self) -> None:
        """When the cluster does not answer, say plainly whether quorum is lost:
        members still answer status without quorum, so count who has a leader."""
        try:
            _, members = member_list_from(self.cluster_endpoints)
        except Exception:
            return  # nothing answers at all: "unreachable" says it
        voters = [m for m in members if not m.is_learner]
        states = [health(m, s) for m, s in zip(voters, probe_all(voters), strict=True)]
        healthy = states.count(HEALTHY)
        if has_majority(healthy, len(voters)):
            return
        reachable = sum(1 for s in states if s not in (UNREACHABLE, UNSTARTED))
        lost = f"{reachable} of {len(voters)} voters reachable, {healthy} with a leader"
        if lost != self.quorum_lost:
            LOG.error("quorum lost: %s; no membership change is made. %s", lost, RECOVERY)
        self.quorum_lost = lost

    def engine_state_dict(self) -> dict:
        return {"state": self.engine_state.state, "resources": self.engine_state.resources,
                "ok": self.engine_state.ok, "failed": self.engine_state.failed,
                "collected": list(self.engine_state.collected)}

    def _follow(self, round_: Round) -> None:
        """Starts or stops the local etcd as the cluster decided."""
        names = {m.name for m in round_.members if m.name}
        voters = [m for m in round_.members if not m.is_learner and m.name]
        endpoints = [u for m in voters for u in m.client_urls]
        self.state.remember(endpoints)
        if endpoints:
            self.cluster_endpoints = endpoints
        if self.serving and self.bootstrapped and round_.nomination is None:
            self.membership.nominate_self(self._client(), round_.members)
            self.bootstrapped = False
            return
        if not self.serving and round_.nomination is not None and not self.config.no_server:
            nomination = round_.nomination
            LOG.info("nominated: starting etcd to join %s", nomination.get("initial_cluster", ""))
            self._wipe_member_data()
            self.etcd.config = self._etcd_config(nomination.get("initial_cluster", ""), "existing")
            self.serving = True
            try:
                self._start_etcd(joining=True)
            except EtcdStartError as err:
                LOG.error("cannot start etcd as nominated: %s", err)
                self.etcd.kill()
            return
        if self.serving and round_.nomination is None and self.config.hostname not in names:
            self._stop_serving()

    def _stop_serving(self) -> None:
        LOG.warning("no longer a member of the cluster: stopping etcd and going on as a client")
        self.etcd.stop()
        self._wipe_member_data()
        self.serving = False
        self.cluster_endpoints = [u for u in self.cluster_endpoints
                                  if u not in self.config.advertised_clients] or list(self.config.seeds)

    def _wipe_member_data(self) -> None:
        if os.path.exists(self.data_dir):
            shutil.rmtree(self.data_dir)
            LOG.info("wiped old etcd member data in %s", self.data_dir)

    def _push_membership(self, round_: Round) -> None:
        voters = [m for m in round_.members if not m.is_learner and m.name]
        membership = protocol.Membership(
            endpoints=tuple(u for m in voters for u in m.client_urls),
            members=tuple(m.name for m in voters), leader=round_.leader,
            ideal_size=round_.ideal_size)
        if membership != self.sent_membership:
            self.sent_membership = membership
            self.engine.send(membership)

    def _start_etcd(self, joining: bool) -> None:
        self.etcd.start()
        # a learner answers status but not /health (it serves no linearizable reads)
        self.etcd.wait_ready(self.config.etcd_start_timeout, status_only=joining, stopping=self.stopping)
        LOG.info("etcd is ready at %s", self.etcd.client_url)


def merge(*lists) -> list[str]:
    out: list[str] = []
    for items in lists:
        for item in items:
            if item not in out:
                out.append(item)
    return out


def _short(err: Exception) -> str:
    return first_line(err)[:200]
