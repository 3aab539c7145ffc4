"""This node's side of the cluster, one round at a time: its lease, host
registration and volunteering, the leader election, its nomination, and (on
the leader) one planner round. Process control stays with the supervisor."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from etcd3.leases import Lease

from mgmtd import __version__, log
from mgmtd.backoff import first_line
from mgmtd.cluster import etcdapi, planner
from mgmtd.cluster.access import Access, AccessKeeper, is_permission_denied
from mgmtd.cluster.actions import ActionRunner
from mgmtd.cluster.client import connect
from mgmtd.cluster.keys import IdealSize, Keys, json_object, parse_ideal_size
from mgmtd.cluster.observe import HealthTracker, member_list_from, observe

LOG = log.get("cluster")

LEASE_TTL = 5


class DuplicateHost(Exception):
    """Another running node already registered under this hostname."""


@dataclass
class Round:
    """What one round saw: the supervisor acts on it."""

    members: list[etcdapi.MemberInfo] = field(default_factory=list)
    nomination: dict | None = None
    is_leader: bool = False
    leader: str = ""
    ideal_size: int = 0             # what this node plans with: the last valid size, 0 if none
    ideal_problem: str = ""         # what is wrong with the key, "" when nothing
    waiting: str = ""               # the leader's planner: why it holds back a change
    changed_membership: bool = False
    # the planner wants a change etcd has not allowed yet, or a learner is on its
    # way: look again soon rather than at the idle pace
    change_pending: bool = False
    below_ideal: bool = False
    lost_quorum: str = ""


class IdealSizeFollower:
    """Follows ``{ns}/cluster/ideal-size``. A missing or bad value never changes
    the membership: the last valid size stays in force (None while none was seen,
    and the planner then changes nothing). The leader warns once per change of
    the problem, not every round; a new leader warns again."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.last_valid: int | None = None
        self.logged = ""

    def update(self, reading: IdealSize, leading: bool) -> tuple[int | None, str]:
        if reading.size is not None:
            self.last_valid = reading.size
            problem = ""
        elif self.last_valid is not None:
            problem = f"{self.key} {reading.describe()}: keeping the last valid size {self.last_valid}"
        else:
            problem = (f"{self.key} {reading.describe()}, and no valid size was seen: "
                       "no membership change until one is set")
        if leading and problem != self.logged:
            if problem:
                LOG.warning("%s (mgmtctl set ideal-cluster-size N fixes it)", problem)
            else:
                LOG.info("%s is valid again: %d", self.key, self.last_valid)
        self.logged = problem if leading else ""
        return self.last_valid, problem


@dataclass
class Identity:
    host: str
    instance: str                   # unique per --prefix: who may take over a stale registration
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]
    may_serve: bool


class ClusterMembership:
    def __init__(self, identity: Identity, keys: Keys, grace_period: float,
                 learner_deadline: float, endpoints: Callable[[], list[str]] | None = None,
                 access: Access | None = None) -> None:
        self.endpoints = endpoints   # where the lease keeper connects
        self.me = identity
        self.keys = keys
        self.grace_period = grace_period
        self.learner_deadline = learner_deadline
        self.lease = None
        self.lease_client = None
        self.registered = ""
        self.tracker = HealthTracker()
        self.ideal = IdealSizeFollower(keys.ideal_size)
        self.last_nomination: dict | None = None
        # what the last round found about the ideal size and the plan, published in this
        # node's host record for ``mgmtctl status``
        self.report: dict = {}
        self.runner: ActionRunner | None = None
        self.access = AccessKeeper(access, identity.host) if access is not None else None
        self.keeper_stop = threading.Event()
        self.keeper = threading.Thread(target=self._keep_alive, name="lease", daemon=True)
        self.keeper.start()

    def _keep_alive(self) -> None:
        """Refreshes the lease on its own clock and its own connection: the main
        loop may be busy, or between clients, for longer than the TTL (waiting
        for etcd to start or stop), and a lapsed lease would give away this
        node's registration and leadership."""
        client = None
        while not self.keeper_stop.wait(LEASE_TTL / 5):
            lease = self.lease
            if lease is None or self.endpoints is None:
                continue
            try:
                if client is None:
                    client = connect(list(self.endpoints()), timeout=LEASE_TTL / 5)
                list(client.refresh_lease(lease.id))
            except Exception as err:  # try another connection next time
                LOG.debug("background lease refresh failed: %s", err)
                if client is not None:
                    client.close()
                client = None
        if client is not None:
            client.close()

    def rebind(self, client) -> None:
        """Keeps the lease across a new client (new endpoints), so that the keys on
        it, leadership above all, do not change hands because of a reconnect."""
        if self.lease is not None:
            self.lease = Lease(self.lease.id, LEASE_TTL, etcd_client=client)
            self.lease_client = client
        self.registered = ""

    # --- lease-bound keys -------------------------------------------------------
    def _ensure_lease(self, client) -> None:
        if self.lease is not None and self.lease_client is client:
            # a connection error propagates: the lease may well be alive, and a new
            # one would hand leadership to someone else when the old one expires
            refreshed = list(self.lease.refresh())
            if refreshed and refreshed[0].TTL > 0:
                return
            LOG.info("lease %x expired: registering again", self.lease.id)
        self.lease = client.lease(LEASE_TTL)
        self.lease_client = client
        self.registered = ""

    def register(self, client, role: str, engine: dict) -> None:
        self._ensure_lease(client)
        value = json.dumps({
            "host": self.me.host, "instance": self.me.instance, "role": role, "pid": os.getpid(),
            "version": __version__, "client_urls": list(self.me.client_urls),
            "peer_urls": list(self.me.peer_urls), "engine": engine, "cluster": self.report,
        }, sort_keys=True)
        if value == self.registered:
            return
        key = self.keys.host(self.me.host)
        txn = client.transactions
        # take the key only when it is free or already ours (same instance: a restart)
        ok, responses = client.transaction(
            compare=[txn.create(key) == 0],
            success=[txn.put(key, value, lease=self.lease)],
            failure=[txn.get(key)],
        )
        if not ok:
            current = responses[0][0][0] if responses and responses[0] else None
            holder = json_object(current) or {}
            if holder.get("instance") not in (None, self.me.instance):
                raise DuplicateHost(
                    f"hostname {self.me.host!r} is already registered by a running node "
                    f"(pid {holder.get('pid')}, client URLs {','.join(holder.get('client_urls', []))}); "
                    "every node needs its own --hostname")
            client.put(key, value, lease=self.lease)
        self.registered = value
        if self.me.may_serve:
            client.put(self.keys.volunteer(self.me.host), json.dumps({
                "peer_urls": list(self.me.peer_urls), "client_urls": list(self.me.client_urls)},
                sort_keys=True), lease=self.lease)

    def campaign(self, client, serving: bool) -> str:
        """Only a node that runs etcd stands for leader (a voter is the natural
        place to plan from); one that stops serving resigns."""
        txn = client.transactions
        key = self.keys.leader
        if serving:
            try:
                client.transaction(compare=[txn.create(key) == 0],
                                   success=[txn.put(key, self.me.host, lease=self.lease)], failure=[])
            except Exception as err:
                if not is_permission_denied(err):
                    raise
                LOG.debug("not standing for leader yet: the leader has not granted this server root")
        value = client.get(key)[0]
        holder = value.decode() if value else ""
        if not serving and holder == self.me.host:
            # only the holder asks: with RBAC a client may not write the key
            client.transaction(compare=[txn.value(key) == self.me.host], success=[txn.delete(key)],
                               failure=[])
            return ""
        return holder

    def nominate_self(self, client, members: list[etcdapi.MemberInfo]) -> None:
        """The bootstrapping node nominates itself, so that every server holds a
        nomination and losing it always means "stop serving"."""
        from mgmtd.cluster.actions import nomination_value
        initial = ",".join(f"{m.name}={u}" for m in members if m.name for u in m.peer_urls)
        client.put_if_not_exists(self.keys.nomination(self.me.host),
                                 nomination_value(self.me.host, self.me.peer_urls, initial, time.time()))

    def read_ideal_size(self, client, default: int | None) -> IdealSize:
        """The key's value; the bootstrapping node (``default`` given) writes its
        size when the key does not exist yet."""
        raw = client.get(self.keys.ideal_size)[0]
        if raw is None and default is not None and parse_ideal_size(str(default)).size is not None:
            client.put_if_not_exists(self.keys.ideal_size, str(default))
            raw = str(default).encode()
        return parse_ideal_size(raw)

    # --- one round ----------------------------------------------------------------
    def round(self, client, endpoints: list[str], role: str, engine: dict,
              bootstrap_ideal: int | None) -> Round:
        self.register(client, role, engine)
        leader = self.campaign(client, role == "server")
        endpoint, members = member_list_from(endpoints)
        out = Round(members=members, leader=leader, is_leader=leader == self.me.host)
        raw = client.get(self.keys.nomination(self.me.host))[0]
        out.nomination = json_object(raw)
        if raw and out.nomination is None:
            # unreadable is not "gone": starting or stopping etcd on it would be a guess
            LOG.warning("nomination of %s is not a JSON object: keeping the last one read", self.me.host)
            out.nomination = self.last_nomination
        self.last_nomination = out.nomination
        ideal, out.ideal_problem = self.ideal.update(self.read_ideal_size(client, bootstrap_ideal),
                                                     leading=out.is_leader)
        out.ideal_size = ideal or 0
        out.below_ideal = sum(1 for m in members if not m.is_learner) < out.ideal_size
        if out.is_leader:
            if self.runner is None or self.runner.client is not client:
                failed = self.runner.failed_hosts if self.runner else {}
                self.runner = ActionRunner(client, self.keys)
                self.runner.failed_hosts = failed
            now = time.time()
            observed = observe(
                client=client, keys=self.keys, members=members, tracker=self.tracker, now=now,
                self_host=self.me.host, ideal_size=ideal,
                failed_hosts=self.runner.recent_failures(now), grace_period=self.grace_period,
                learner_deadline=self.learner_deadline)
            actions = planner.plan(observed)
            out.waiting = "; ".join(a.reason for a in actions if isinstance(a, planner.Wait))
            lost = [a for a in actions if isinstance(a, planner.LostQuorum)]
            if lost:
                out.lost_quorum = f"{lost[0].healthy}/{lost[0].voters} voters healthy"
            out.changed_membership = self.runner.run(actions, endpoint, members, now)
            out.change_pending = any(planner.is_membership_change(a) for a in actions) or any(
                m.is_learner for m in members)
            if self.access is not None:
                servers = {m.name for m in members if m.name} | {n.host for n in observed.nominations}
                try:
                    self.access.round(client, endpoint, servers, now)
                except Exception as err:  # auth is looked after again next round
                    LOG.warning("cannot update etcd users and roles yet: %s", first_line(err))
        else:
            self.tracker = HealthTracker()  # a future leader starts its own grace periods
            if self.access is not None:
                self.access.lost_leadership()
        self.report = {"ideal_size": ideal, "ideal_problem": out.ideal_problem}
        if out.is_leader:
            self.report["waiting"] = out.waiting
        return out

    def withdraw(self, client) -> None:
        self.keeper_stop.set()
        if self.lease is not None:
            try:
                client.timeout = 1.0  # without quorum a revoke cannot succeed: do not hang the stop
                self.lease.revoke()
            except Exception as err:
                LOG.debug("lease revoke failed: %s", err)
        self.lease = None
