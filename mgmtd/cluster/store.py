"""The only code that knows what the cluster's keys hold (their paths are in
``keys.py``, exports' format in ``exported.py``): host records, volunteers,
nominations, the leader, the ideal size, join requests. Typed records in and
out; a value that cannot be read is reported as such, never raised."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mgmtd.cluster.backups import BackupRecord, parse_record
from mgmtd.cluster.generation import parse_generation
from mgmtd.cluster.keys import IdealSize, Keys, json_object, parse_ideal_size
from mgmtd.cluster.model import Nomination, Readable, Volunteer


class DuplicateHost(Exception):
    """Another running node already registered under this hostname."""


@dataclass(frozen=True)
class HostRecord:
    """``{ns}/hosts/{host}``, on the host's lease: who runs where, and what it reports."""

    host: str
    instance: str                 # unique per --prefix: who may take over a stale registration
    role: str                     # server | client
    pid: int
    version: str
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]
    engine: dict
    cluster: dict                 # what this node's last round found (ideal size, waiting...)

    def encode(self) -> str:
        return json.dumps({
            "host": self.host, "instance": self.instance, "role": self.role, "pid": self.pid,
            "version": self.version, "client_urls": list(self.client_urls),
            "peer_urls": list(self.peer_urls), "engine": self.engine, "cluster": self.cluster,
        }, sort_keys=True)


def encode_nomination(nomination: Nomination) -> str:
    return json.dumps({"host": nomination.host, "peer_urls": list(nomination.peer_urls),
                       "initial_cluster": nomination.initial_cluster, "since": nomination.since},
                      sort_keys=True)


def parse_nomination(host: str, raw: bytes | str | None) -> Nomination | Readable | None:
    """None when there is no key, UNREADABLE when its value is not a nomination."""
    if raw is None:
        return None
    value = json_object(raw)
    if value is None:
        return Readable.UNREADABLE
    try:
        return Nomination(host, tuple(str(u) for u in value.get("peer_urls", ())),
                          float(value.get("since", 0)), str(value.get("initial_cluster", "")))
    except (TypeError, ValueError):
        return Readable.UNREADABLE


def parse_volunteer(host: str, value: dict) -> Volunteer | None:
    peers, clients = value.get("peer_urls", ()), value.get("client_urls", ())
    if not isinstance(peers, list | tuple) or not isinstance(clients, list | tuple):
        return None
    return Volunteer(host, tuple(str(u) for u in peers), tuple(str(u) for u in clients))


def encode_volunteer(peer_urls: tuple[str, ...], client_urls: tuple[str, ...]) -> str:
    return json.dumps({"peer_urls": list(peer_urls), "client_urls": list(client_urls)}, sort_keys=True)


def initial_cluster(members, host: str, peer_urls: tuple[str, ...]) -> str:
    """etcd's --initial-cluster for a node joining ``members``."""
    parts = [f"{m.name}={url}" for m in members if m.name for url in m.peer_urls]
    parts += [f"{host}={url}" for url in peer_urls]
    return ",".join(parts)


class Store:
    """Reads and writes the cluster's keys through one etcd client."""

    def __init__(self, client, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    # --- reading ----------------------------------------------------------------------
    def json_prefix(self, prefix: str) -> dict[str, dict]:
        out = {}
        for value, meta in self.client.get_prefix(prefix):
            parsed = json_object(value)
            if parsed is not None:
                out[meta.key.decode().removeprefix(prefix)] = parsed
        return out

    def hosts(self) -> dict[str, dict]:
        return self.json_prefix(self.keys.hosts)

    def leader(self) -> str:
        raw = self.client.get(self.keys.leader)[0]
        return raw.decode(errors="replace") if raw else ""

    def ideal_size(self) -> IdealSize:
        return parse_ideal_size(self.client.get(self.keys.ideal_size)[0])

    def nomination(self, host: str) -> Nomination | Readable | None:
        return parse_nomination(host, self.client.get(self.keys.nomination(host))[0])

    def nominations(self) -> tuple[Nomination, ...]:
        out = []
        for value, meta in self.client.get_prefix(self.keys.nominated):
            host = meta.key.decode().removeprefix(self.keys.nominated)
            parsed = parse_nomination(host, value)
            if isinstance(parsed, Nomination):
                out.append(parsed)
        return tuple(sorted(out, key=lambda n: n.host))

    def volunteers(self) -> tuple[Volunteer, ...]:
        found = (parse_volunteer(host, v) for host, v in sorted(self.json_prefix(self.keys.volunteers).items()))
        return tuple(v for v in found if v is not None)

    # --- writing ----------------------------------------------------------------------
    def register(self, record: HostRecord, lease) -> None:
        """Takes ``{ns}/hosts/{host}`` when it is free or already this instance's
        (a restart); another running instance under the same name is refused."""
        key, value = self.keys.host(record.host), record.encode()
        txn = self.client.transactions
        ok, responses = self.client.transaction(
            compare=[txn.create(key) == 0],
            success=[txn.put(key, value, lease=lease)],
            failure=[txn.get(key)],
        )
        if ok:
            return
        current = responses[0][0][0] if responses and responses[0] else None
        holder = json_object(current) or {}
        if holder.get("instance") not in (None, record.instance):
            urls = holder.get("client_urls", [])
            raise DuplicateHost(
                f"hostname {record.host!r} is already registered by a running node "
                f"(pid {holder.get('pid')}, client URLs {','.join(urls) if isinstance(urls, list) else urls}); "
                "every node needs its own --hostname")
        self.client.put(key, value, lease=lease)

    def update_registration(self, record: HostRecord, lease, previous: str) -> bool:
        """Rewrites this node's record in one write, only while the key still
        holds ``previous`` (what this node last wrote on this lease). False
        when it does not: ``register`` then decides."""
        key, txn = self.keys.host(record.host), self.client.transactions
        ok, _ = self.client.transaction(compare=[txn.value(key) == previous],
                                        success=[txn.put(key, record.encode(), lease=lease)], failure=[])
        return ok

    def volunteer(self, host: str, peer_urls: tuple[str, ...], client_urls: tuple[str, ...], lease) -> None:
        self.client.put(self.keys.volunteer(host), encode_volunteer(peer_urls, client_urls), lease=lease)

    def campaign(self, host: str, lease) -> None:
        """Takes the leader key if nobody holds it."""
        txn, key = self.client.transactions, self.keys.leader
        self.client.transaction(compare=[txn.create(key) == 0], success=[txn.put(key, host, lease=lease)],
                                failure=[])

    def resign(self, host: str) -> None:
        txn, key = self.client.transactions, self.keys.leader
        self.client.transaction(compare=[txn.value(key) == host], success=[txn.delete(key)], failure=[])

    def nominate(self, nomination: Nomination, only_if_missing: bool = False) -> None:
        key, value = self.keys.nomination(nomination.host), encode_nomination(nomination)
        if only_if_missing:
            self.client.put_if_not_exists(key, value)
        else:
            self.client.put(key, value)

    def unnominate(self, host: str) -> None:
        self.client.delete(self.keys.nomination(host))

    def put_ideal_size_if_missing(self, size: int) -> None:
        self.client.put_if_not_exists(self.keys.ideal_size, str(size))

    def set_ideal_size(self, size: int) -> None:
        self.client.put(self.keys.ideal_size, str(size))

    # --- backups and the restore generation --------------------------------------------
    def backups(self) -> list[BackupRecord]:
        found = (parse_record(value) for value, _ in self.client.get_prefix(self.keys.backups))
        return sorted((r for r in found if r is not None), key=lambda r: (r.time, r.id))

    def put_backup(self, record: BackupRecord) -> None:
        self.client.put(self.keys.backup(record.id), record.encode())

    def delete_backup(self, backup_id: str) -> None:
        self.client.delete(self.keys.backup(backup_id))

    def backup_request(self) -> str:
        """The id of a pending ``mgmtctl backup now`` ("" when none)."""
        raw = self.client.get(self.keys.backup_request)[0]
        return raw.decode(errors="replace").strip() if raw else ""

    def request_backup(self, request: str) -> None:
        self.client.put(self.keys.backup_request, request)

    def clear_backup_request(self, request: str) -> None:
        txn, key = self.client.transactions, self.keys.backup_request
        self.client.transaction(compare=[txn.value(key) == request], success=[txn.delete(key)], failure=[])

    def drop_backup_request(self) -> None:
        self.client.delete(self.keys.backup_request)

    def generation(self) -> int:
        return parse_generation(self.client.get(self.keys.generation)[0])

    def set_generation(self, generation: int) -> None:
        self.client.put(self.keys.generation, str(generation))
