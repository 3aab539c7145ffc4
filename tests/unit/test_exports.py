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


class RecordingEtcd(GatedEtcd):
    """An in-memory etcd that logs the order of its calls, with the gate open."""

    def __init__(self) -> None:
        super().__init__()
        self.gate.set()
        self.calls: list[str] = []
        self.fail_next_get = False

    def get_prefix(self, prefix: str):
        self.calls.append("get")
        if self.fail_next_get:
            self.fail_next_get = False
            raise ConnectionError("etcd went away")
        return super().get_prefix(prefix)

    def put(self, key: str, value: str) -> None:
        self.calls.append("put " + key.rsplit("/", 1)[1])
        super().put(key, value)

    def delete(self, key: str) -> None:
        self.calls.append("delete " + key.rsplit("/", 1)[1])
        super().delete(key)


def synced_to(publisher: ExportPublisher, etcd: RecordingEtcd, names: set[str]) -> None:
    wait_for(lambda: publisher.synced and exported_names(etcd) == names, 10, f"etcd to hold {names}")


def test_a_change_is_written_before_etcd_is_read_back_and_a_hand_deletion_still_repaired():
    etcd = RecordingEtcd()
    connection = SimpleNamespace(endpoints=("http://127.0.0.1:1",), get=lambda: etcd)
    publisher = ExportPublisher(connection, "h1", "/mgmtd")
    publisher.start()
    try:
        publisher.publish(noops("a", "b"))
        synced_to(publisher, etcd, {"a", "b"})
        assert etcd.calls[0] == "get"           # nothing known yet: read first, rewrite nothing unchanged
        etcd.calls.clear()
        publisher.publish(noops("a", "c"))      # b withdrawn, c added: written at once, then read back
        synced_to(publisher, etcd, {"a", "c"})
        assert etcd.calls == ["delete b", "put c", "get"]
        etcd.calls.clear()
        etcd.data.pop(next(k for k in etcd.data if k.endswith("/a")))   # deleted by hand
        publisher.publish(noops("a", "c"))      # unchanged graph: the read-back repairs a
        synced_to(publisher, etcd, {"a", "c"})
        assert etcd.calls == ["get", "put a"]
    finally:
        publisher.stop()


def test_after_a_failed_sync_the_next_reads_etcd_before_writing():
    etcd = RecordingEtcd()
    connection = SimpleNamespace(endpoints=("http://127.0.0.1:1",), get=lambda: etcd)
    publisher = ExportPublisher(connection, "h1", "/mgmtd")
    publisher.start()
    try:
        publisher.publish(noops("a"))
        synced_to(publisher, etcd, {"a"})
        etcd.calls.clear()
        etcd.fail_next_get = True
        etcd.data["/mgmtd/exported/h1/noop/z"] = "left by someone"   # what the failed sync never saw
        publisher.publish(noops("a", "b"))
        synced_to(publisher, etcd, {"a", "b"})
        # the failed round wrote b, then its read failed; the retry knew nothing and read first
        assert etcd.calls == ["put b", "get", "get", "delete z"]
    finally:
        publisher.stop()


def test_changes_in_a_row_are_written_as_they_come_and_read_back_once_they_stop():
    """Issue 19: the read-back of a written change waits until no newer publish
    came for ``read_back_after``: a run of changes costs one write each, and
    the read (with its etcd work) comes once they stop, not while collectors
    take each change."""
    etcd = RecordingEtcd()
    connection = SimpleNamespace(endpoints=("http://127.0.0.1:1",), get=lambda: etcd)
    publisher = ExportPublisher(connection, "h1", "/mgmtd", read_back_after=60)
    publisher.start()
    try:
        publisher.publish(noops("a"))
        synced_to(publisher, etcd, {"a"})        # nothing known: read at once
        etcd.calls.clear()
        publisher.publish(noops("a", "b"))
        wait_for(lambda: exported_names(etcd) == {"a", "b"}, 10, "b written")
        publisher.publish(noops("a", "b", "c"))
        wait_for(lambda: exported_names(etcd) == {"a", "b", "c"}, 10, "c written")
        assert etcd.calls == ["put b", "put c"] and not publisher.synced
        publisher.read_back_after = 0.05
        publisher.publish(noops("a", "c"))     # the last of the run: read back after the pause
        synced_to(publisher, etcd, {"a", "c"})
        assert etcd.calls == ["put b", "put c", "delete b", "get"]
    finally:
        publisher.stop()


def test_a_reload_waits_for_its_exports_to_be_sent_not_written():
    """Issue 19: the reloading thread waits until the exports thread sends the
    newest exports (its next work would hold the interpreter the sending needs),
    but not for etcd's answer, nor past the timeout."""
    etcd = GatedEtcd()
    connection = SimpleNamespace(endpoints=("http://127.0.0.1:1",), get=lambda: etcd)
    publisher = ExportPublisher(connection, "h1", "/mgmtd")
    publisher.publish(noops("a"))
    publisher.wait_sending(0.01)               # no thread yet: only the timeout ends the wait
    assert not publisher.sending.is_set()
    publisher.start()
    try:
        publisher.wait_sending(10)
        assert publisher.sending.is_set()
        assert etcd.in_put.wait(10) and not etcd.data   # etcd has not answered: still waiting at the gate
    finally:
        etcd.gate.set()
        publisher.stop()
