"""This node's presence in the cluster: its lease, and the keys on it (host
record, volunteer offer, the leader key while it leads). The lease is kept
alive on its own thread and connection, so a busy round never lets it lapse."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from etcd3.leases import Lease

from mgmtd import log
from mgmtd.cluster.access import is_permission_denied
from mgmtd.cluster.client import connect
from mgmtd.cluster.store import HostRecord, Store
from mgmtd.tls import TLSFiles

LOG = log.get("cluster")

LEASE_TTL = 5


@dataclass(frozen=True)
class Identity:
    host: str
    instance: str                   # unique per --prefix: who may take over a stale registration
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]
    may_serve: bool


class Presence:
    def __init__(self, identity: Identity, endpoints: Callable[[], list[str]], tls: TLSFiles | None) -> None:
        self.me = identity
        self.endpoints = endpoints   # where the keeper connects
        self.tls = tls
        self.lease: Lease | None = None
        self.lease_client = None
        self.registered = ""
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
            if lease is None:
                continue
            try:
                if client is None:
                    client = connect(list(self.endpoints()), timeout=LEASE_TTL / 5, tls=self.tls)
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

    def announce(self, store: Store, record: HostRecord, serving: bool, leader: str) -> None:
        """Registers (when the record changed or the lease is new), offers to
        serve, and stands for leader (only a node that runs etcd does; one that
        stopped serving resigns)."""
        self._ensure_lease(store.client)
        value = record.encode()
        if value != self.registered:
            # a change of this node's own record (its engine's state...) is one
            # write; the checked registration and the volunteer offer, which never
            # changes, only on a new lease or when the key no longer holds our record
            # (every host writes on every export change: three writes each was most
            # of etcd's write load, see docs/clustering.md "Scale")
            updated = bool(self.registered) and store.update_registration(record, self.lease, self.registered)
            if not updated:
                store.register(record, self.lease)
            self.registered = value
            if not updated and self.me.may_serve:
                store.volunteer(self.me.host, self.me.peer_urls, self.me.client_urls, self.lease)
        if serving and not leader:
            try:
                store.campaign(self.me.host, self.lease)
            except Exception as err:
                if not is_permission_denied(err):
                    raise
                LOG.debug("not standing for leader yet: the leader has not granted this server root")
        elif not serving and leader == self.me.host:
            store.resign(self.me.host)   # only the holder asks: with RBAC a client may not write the key

    def withdraw(self, client) -> None:
        self.keeper_stop.set()
        if self.lease is not None:
            try:
                client.timeout = 1.0  # without quorum a revoke cannot succeed: do not hang the stop
                self.lease.revoke()
            except Exception as err:
                LOG.debug("lease revoke failed: %s", err)
        self.lease = None
