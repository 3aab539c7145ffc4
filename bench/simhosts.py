"""Simulated hosts for bench/scale.py: what a real client node does against
etcd, run with mgmtd's own code, without an engine or an etcd of its own.

Per host, as the supervisor and the engine do it:
- a cluster round every TICK: ``observe`` (member list, leader, own
  nomination, ideal size), ``assess``, ``Presence.announce`` (refreshes the
  lease, writes the host record and the volunteer offer when they change);
- the lease keeper's refresh every LEASE_TTL/5 on another connection (here
  over one keep-alive stream per keeper channel, see ``SimFleet._keeper``);
- the engine's ``Collector`` (a prefix watch on every export) feeding the
  engine's ``select`` with one collect rule, and the host record's
  ``collected`` list as the engine reports it;
- the engine's state in the host record: "converging" from a change of the
  collected resources until CONVERGED_AFTER of quiet, then "converged";
- ``exports_per_host`` exported files that no collect rule picks (every
  collector still filters them on every change).

Connections: CHANNELS shared etcd clients for the rounds, as many for the
collectors' watches, KEEPER_CHANNELS for the lease refreshes, one EtcdApi
(a gRPC channel per voter) for the member lists. A real node has its own
connections; etcd sees the same requests either way, but N connections from
one Python process would measure this process."""

from __future__ import annotations

import heapq
import os
import queue
import threading
import time
import uuid

import grpc
from etcd3 import etcdrpc

from mgmtd import __version__
from mgmtd.cluster.assess import Settings, assess
from mgmtd.cluster.client import Connection, connect
from mgmtd.cluster.etcdapi import EtcdApi
from mgmtd.cluster.exported import Export, export_value
from mgmtd.cluster.keys import Keys
from mgmtd.cluster.observe import observe
from mgmtd.cluster.presence import LEASE_TTL, Identity, Presence
from mgmtd.cluster.store import HostRecord, Store
from mgmtd.engine.collect import Collector, matched, select
from mgmtd.engine.main import EngineOptions
from mgmtd.resources import KINDS
from mgmtd.supervisor.node import TICK
from mgmtd.yamlgraph.loader import CollectRule

CHANNELS = 8
KEEPER_CHANNELS = 2
WORKERS = 4                      # threads running the rounds
PROBE_HOST = "scale-exporter"
PROBE_DIR = "/srv/scale/collected/"
CONVERGED_AFTER = EngineOptions("x").converged_after
SETTINGS = Settings(grace_period=30.0, learner_deadline=60.0)   # mgmtd run's defaults do not matter here


def file_export(host: str, name: str, path: str, content: str) -> str:
    """An exported file's value, made as the engine makes it."""
    res = KINDS["file"](name, {"path": path, "content": content, "state": "exists"})
    return export_value(res, host)


class QuietPresence(Presence):
    """The real Presence, whose keeper thread the fleet runs for every host at once."""

    def _keep_alive(self) -> None:
        return


class SimHost:
    def __init__(self, index: int, keys: Keys, may_serve: bool) -> None:
        self.name = f"sim{index:04d}"
        self.keys = keys
        address = f"10.255.{index // 250}.{index % 250 + 1}"   # never dialled: never nominated
        self.identity = Identity(self.name, uuid.uuid4().hex, (f"http://{address}:2379",),
                                 (f"http://{address}:2380",), may_serve)
        self.presence = QuietPresence(self.identity, lambda: [], None)
        self.previous = None
        self.collected: tuple[str, ...] = ()
        self.seen: dict[str, float] = {}          # probe content -> when select first held it
        self.matched: list[Export] = []
        self.activity: float | None = None        # when the collected resources last changed
        self.reported: float | None = None        # the activity the last round reported
        self.state = ""                           # the engine state the last round reported
        self.ready = False
        self.collector: Collector | None = None

    def round(self, client, api: EtcdApi, endpoints: list[str]) -> None:
        store = Store(client, self.keys)
        if self.presence.lease_client is not client:
            self.presence.rebind(client)
        snapshot = observe(api, store, endpoints, self.name, time.time())
        assessment = assess(self.previous, snapshot, (), SETTINGS, self.keys.ideal_size)
        self.previous = assessment
        if not assessment.reachable:
            return
        # the engine reports "converging" from a change of its graph until it has
        # been quiet for converged_after, then "converged": two host-record writes
        # (at the real pace a round always falls within those seconds; when this
        # process lags, the first round after a change still reports it)
        activity = self.activity
        busy = activity is not None and (time.monotonic() - activity < CONVERGED_AFTER
                                         or activity != self.reported)
        engine = {"state": "converging" if busy else "converged", "resources": len(self.collected),
                  "ok": len(self.collected), "failed": 0, "collected": list(self.collected)}
        cluster = {"ideal_size": assessment.ideal_size, "ideal_problem": assessment.ideal_problem}
        record = HostRecord(self.name, self.identity.instance, "client", os.getpid(), __version__,
                            self.identity.client_urls, self.identity.peer_urls, engine, cluster)
        self.presence.announce(store, record, False, assessment.leader)
        self.reported, self.state = activity, engine["state"]

    def on_exports(self, exports: list[Export], rules: list[CollectRule]) -> None:
        now = time.monotonic()
        for export in exports:
            if export.key == (PROBE_HOST, "file", "elsewhere"):
                self.seen.setdefault(export.params.get("content"), now)
        # as the engine: a change among the exports its rules match is composed
        # and swapped in (then "converging"); any other change is not
        view = matched(rules, exports)
        if self.ready and view == self.matched:
            return
        self.matched = view
        if self.ready:
            self.activity = now
        chosen = select(rules, exports, self.name, [])
        for res in chosen.resources:
            content = res.params.get("content")
            if content is not None and content not in self.seen:
                self.seen[content] = now
        self.collected = tuple(sorted(k for keys in chosen.sources.values() for k in keys))
        self.ready = True


class SimFleet:
    def __init__(self, urls: list[str], keys: Keys, volunteers: float, exports_per_host: int) -> None:
        self.urls = urls
        self.keys = keys
        self.volunteers = volunteers
        self.exports_per_host = exports_per_host
        self.hosts: list[SimHost] = []
        self.api = EtcdApi(None)
        self.round_clients = [connect(urls, timeout=10, tls=None) for _ in range(CHANNELS)]
        self.watch_clients = [connect(urls, timeout=10, tls=None) for _ in range(CHANNELS)]
        self.tally_client = connect(urls, timeout=10, tls=None)
        self.keeper_clients = [connect(urls, timeout=LEASE_TTL / 5, tls=None) for _ in range(KEEPER_CHANNELS)]
        self.rules = [CollectRule("file", pattern=PROBE_DIR)]
        self.stopping = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.lock = threading.Lock()
        self.queues: list[list[tuple[float, int]]] = [[] for _ in range(WORKERS)]
        self.done = 0
        self.lapsed = 0                  # keep-alive answers that found no lease
        self.threads = [threading.Thread(target=self._rounds, args=(w,), daemon=True, name=f"rounds{w}")
                        for w in range(WORKERS)]
        self.threads += [threading.Thread(target=self._keeper, args=(k,), daemon=True, name=f"keeper{k}")
                         for k in range(KEEPER_CHANNELS)]
        for thread in self.threads:
            thread.start()

    @classmethod
    def empty(cls, client) -> _NoFleet:
        return _NoFleet(client)

    @staticmethod
    def settings() -> dict:
        return {"tick_seconds": TICK, "lease_ttl": LEASE_TTL, "keeper_period": LEASE_TTL / 5,
                "channels": CHANNELS, "keeper_channels": KEEPER_CHANNELS, "round_threads": WORKERS}

    # --- growing ------------------------------------------------------------------------
    def grow(self, size: int, deadline) -> None:
        """Adds hosts up to ``size``: their exports first, in one burst (each
        collector takes a burst of events in one go, as the engine's does),
        then their collectors and their rounds."""
        new = [SimHost(index, self.keys, int((index + 1) * self.volunteers) > int(index * self.volunteers))
               for index in range(len(self.hosts), size)]       # volunteers spread evenly
        for host in new:
            deadline.check("exporting for the new simulated hosts")
            for n in range(self.exports_per_host):
                self.round_clients[0].put(self.keys.export(host.name, "file", f"own{n}"), file_export(
                    host.name, f"own{n}", f"/srv/scale/own/{host.name}/{n}", f"{host.name}\n"))
        for host in new:
            deadline.check("starting the new simulated hosts")
            index = int(host.name.removeprefix("sim"))
            connection = Connection(self.urls, tls=None)
            connection.client = self.watch_clients[index % CHANNELS]   # shared: never closed by the collector
            host.collector = Collector(connection, self.keys.namespace,
                                       lambda exports, host=host: host.on_exports(exports, self.rules))
            host.collector.start()
            with self.lock:
                self.hosts.append(host)
                heapq.heappush(self.queues[index % WORKERS], (time.monotonic(), index))

    def collectors_ready(self) -> bool:
        return all(h.ready for h in self.hosts)

    # --- the rounds and the keeper ------------------------------------------------------
    def _rounds(self, worker: int) -> None:
        queue = self.queues[worker]
        while not self.stopping.is_set():
            self.running.wait()
            with self.lock:
                due = queue[0] if queue else None
            if due is None or due[0] > time.monotonic():
                self.stopping.wait(0.02 if due is None else min(0.05, due[0] - time.monotonic()))
                continue
            with self.lock:
                _, index = heapq.heappop(queue)
            host = self.hosts[index]
            try:
                host.round(self.round_clients[index % CHANNELS], self.api, self.urls)
            except Exception:  # a busy etcd: the real loop, too, tries again next round
                pass
            with self.lock:
                self.done += 1
                # the real supervisor waits TICK after a round, however long the round took
                heapq.heappush(queue, (time.monotonic() + TICK, index))

    def _keeper(self, k: int) -> None:
        """Every LEASE_TTL/5, one refresh of each host's lease, as the real keeper
        does; sent over one long keep-alive stream per keeper channel (the real
        keeper's python-etcd3 call opens a stream per refresh: etcd renews the
        same leases as often, minus a stream set-up each). One stream costs this
        process little, so a busy simulation never lets a lease lapse by itself."""
        client = self.keeper_clients[k]
        while not self.stopping.is_set():
            requests: queue.SimpleQueue = queue.SimpleQueue()

            def feed(requests=requests):
                while (lease_id := requests.get()) is not None:
                    yield etcdrpc.LeaseKeepAliveRequest(ID=lease_id)

            stream = client.leasestub.LeaseKeepAlive(feed(), credentials=client.call_credentials,
                                                     metadata=client.metadata)
            reader = threading.Thread(target=self._read_keepalives, args=(stream,), daemon=True)
            reader.start()
            while not self.stopping.wait(LEASE_TTL / 5) and reader.is_alive():
                for host in self.hosts[k::KEEPER_CHANNELS]:
                    if host.presence.lease is not None:
                        requests.put(host.presence.lease.id)
            requests.put(None)
            stream.cancel()
            reader.join(timeout=5)

    def _read_keepalives(self, stream) -> None:
        try:
            for answer in stream:
                if answer.TTL <= 0:
                    with self.lock:
                        self.lapsed += 1
        except grpc.RpcError:
            pass  # cancelled, or the stream broke: the keeper opens another

    def rounds_done(self) -> int:
        with self.lock:
            return self.done

    def lapses(self) -> int:
        with self.lock:
            return self.lapsed

    def pause_rounds(self) -> None:
        self.running.clear()

    def resume_rounds(self) -> None:
        self.running.set()

    # --- the export probe ---------------------------------------------------------------------
    def put_probe(self, client, content: str, collected: bool = True) -> None:
        """Changes the export every collector collects, or one that none does."""
        name = "probe" if collected else "elsewhere"
        path = f"{PROBE_DIR}probe" if collected else "/srv/scale/elsewhere"
        client.put(self.keys.export(PROBE_HOST, "file", name), file_export(PROBE_HOST, name, path, content))

    def all_converged(self) -> bool:
        """Every host's last round reported its last change, and converged since."""
        return all(h.reported == h.activity and h.state == "converged" for h in self.hosts)

    def all_saw(self, content: str) -> bool:
        return all(content in h.seen for h in self.hosts)

    def arrivals(self, content: str) -> list[float]:
        return [h.seen[content] for h in self.hosts]

    def stop(self) -> None:
        self.stopping.set()
        self.running.set()
        for host in self.hosts:
            host.collector.stopping.set()
            host.collector.restart.set()
        for host in self.hosts:
            host.collector.thread.join(timeout=5)
        for thread in self.threads:
            thread.join(timeout=10)
        for client in (*self.round_clients, *self.watch_clients, *self.keeper_clients, self.tally_client):
            client.close()
        self.api.close()


class _NoFleet:
    """No simulated hosts: the baseline window."""

    hosts: list = []

    def __init__(self, client) -> None:
        self.tally_client = client

    def rounds_done(self) -> int:
        return 0

    def lapses(self) -> int:
        return 0
