"""Publishes this host's ``@@`` resources under ``{ns}/exported/{host}/``.

Exports are not on a lease: they outlive their host being down (``mgmtctl
forget HOST`` removes them for good). An unchanged export is never rewritten,
so restarting the exporter does not make collectors see it flap."""

from __future__ import annotations

import json
import threading

from mgmtd import log
from mgmtd.backoff import Backoff, first_line
from mgmtd.cluster.client import Connection
from mgmtd.cluster.keys import Keys
from mgmtd.resources.base import Resource

LOG = log.get("engine.export")


def export_value(res: Resource, host: str) -> str:
    params = {k: v for k, v in res.params.items() if v is not None}
    meta = {k: getattr(res.meta, k) for k in ("noop", "retry", "delay", "poll", "autoedge")}
    return json.dumps({"kind": res.kind, "name": res.name, "host": host, "params": params,
                       "meta": meta}, sort_keys=True)


class ExportPublisher:
    def __init__(self, connection: Connection, host: str, namespace: str) -> None:
        self.connection = connection
        self.host = host
        self.keys = Keys(namespace)
        self.desired: dict[str, str] | None = None
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.synced = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="exports", daemon=True)

    def publish(self, exports: list[Resource]) -> None:
        self.desired = {self.keys.export(self.host, r.kind, r.name): export_value(r, self.host)
                        for r in exports}
        self.synced.clear()
        self.wake.set()

    def poke(self) -> None:
        self.wake.set()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)

    def _loop(self) -> None:
        backoff = Backoff(first=0.1, cap=5.0)
        while not self.stopping.is_set():
            self.wake.wait()
            self.wake.clear()
            if self.stopping.is_set() or self.desired is None or self.synced.is_set():
                continue
            try:
                self._sync(self.desired)
                self.synced.set()
                backoff.reset()
            except Exception as err:  # etcd down or moving: try again, quietly at first
                delay = backoff.next_delay()
                LOG.log(backoff.level(), "cannot publish exports yet: %s", first_line(err))
                self.stopping.wait(delay)
                self.wake.set()

    def _sync(self, desired: dict[str, str]) -> None:
        if not desired and not self.connection.endpoints:
            return
        client = self.connection.get()
        prefix = self.keys.exports_of(self.host)
        current = {meta.key.decode(): value.decode() for value, meta in client.get_prefix(prefix)}
        for key in current.keys() - desired.keys():
            client.delete(key)
            LOG.info("withdrew export %s", key.removeprefix(prefix))
        for key, value in desired.items():
            if current.get(key) != value:
                client.put(key, value)
                LOG.info("exported %s", key.removeprefix(prefix))
