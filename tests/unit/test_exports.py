"""ExportPublisher (issue 13 item 1): a publish that lands while a sync is in
flight is written by a later round, never marked synced by the older one."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from mgmtd.engine.exports import ExportPublisher
from mgmtd.resources.noop import NoopResource
from tests.harness import wait_for


class GatedEtcd:
    """An in-memory etcd whose first put waits until the test opens the gate."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.gate = threading.Event()
        self.in_put = threading.Event()
        self.puts = 0

    def get_prefix(self, prefix: str):
        return [(v.encode(), SimpleNamespace(key=k.encode())) for k, v in self.data.items()
                if k.startswith(prefix)]

    def put(self, key: str, value: str) -> None:
        self.puts += 1
        if self.puts == 1:
            self.in_put.set()
            assert self.gate.wait(10), "the test never opened the gate"
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def noops(*names: str) -> list[NoopResource]:
    return [NoopResource(name, {}) for name in names]


def exported_names(etcd: GatedEtcd) -> set[str]:
    return {key.rsplit("/", 1)[1] for key in etcd.data}


def test_a_publish_during_a_sync_in_flight_is_written_not_lost():
    etcd = GatedEtcd()
    connection = SimpleNamespace(endpoints=("http://127.0.0.1:1",), get=lambda: etcd)
    publisher = ExportPublisher(connection, "h1", "/mgmtd")
    publisher.start()
    try:
        publisher.publish(noops("old"))
        assert etcd.in_put.wait(10)            # the first sync is writing "old"...
        publisher.publish(noops("new"))        # ...when the graph changes
        etcd.gate.set()
        wait_for(lambda: publisher.synced and exported_names(etcd) == {"new"}, 10,
                 "etcd to hold the newest exports, not the ones in flight")
    finally:
        publisher.stop()


def test_publishing_the_same_exports_again_repairs_etcd():
    etcd = GatedEtcd()
    etcd.gate.set()
    connection = SimpleNamespace(endpoints=("http://127.0.0.1:1",), get=lambda: etcd)
    publisher = ExportPublisher(connection, "h1", "/mgmtd")
    publisher.start()
    try:
        publisher.publish(noops("a", "b"))
        wait_for(lambda: publisher.synced and exported_names(etcd) == {"a", "b"}, 10, "the first sync")
        etcd.data.clear()                      # lost behind our back (a restore, a hand delete)
        publisher.publish(noops("a", "b"))     # what SIGHUP does
        wait_for(lambda: publisher.synced and exported_names(etcd) == {"a", "b"}, 10, "the repair")
    finally:
        publisher.stop()
