"""The Collector's hand-over of the cluster's exports to the engine: each
watch response on the collect thread; an error, or a hand-over that failed,
starts again from a fresh read of every export (issue 19)."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

from mgmtd.engine.collect import Collector
from tests.harness import wait_for

PREFIX = "/mgmtd/exported/"


def value(content: str) -> bytes:
    return json.dumps({"host": "h2", "kind": "file", "name": "x",
                       "params": {"path": "/srv/x", "content": content}, "meta": {}}).encode()


def response(content: str) -> SimpleNamespace:
    """A watch response with one put of h2's file export."""
    return SimpleNamespace(events=[SimpleNamespace(key=f"{PREFIX}h2/file/x".encode(), value=value(content))])


class FakeEtcd:
    """Reads nothing; keeps each watch's callback for the test to call, as
    the etcd client's thread would."""

    def __init__(self) -> None:
        self.callbacks: list = []
        self.cancelled: list[int] = []
        self.kvs: dict[str, bytes] = {}

    def get_prefix_response(self, prefix: str):
        kvs = [SimpleNamespace(key=k.encode(), value=v) for k, v in self.kvs.items()]
        return SimpleNamespace(kvs=kvs, header=SimpleNamespace(revision=7))

    def add_watch_prefix_callback(self, prefix: str, callback, start_revision: int) -> int:
        assert prefix == PREFIX and start_revision == 8
        self.callbacks.append(callback)
        return len(self.callbacks)

    def cancel_watch(self, watch_id: int) -> None:
        self.cancelled.append(watch_id)


class Recorder:
    """on_change: the content of x in each hand-over, and the thread it ran on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.contents: list[str | None] = []
        self.threads: list[str] = []
        self.fail_next = False

    def __call__(self, exports) -> None:
        with self.lock:
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("the engine failed to take it")
            self.contents.append(exports[0].params["content"] if exports else None)
            self.threads.append(threading.current_thread().name)


def started() -> tuple[Collector, FakeEtcd, Recorder]:
    etcd, recorder = FakeEtcd(), Recorder()
    connection = SimpleNamespace(endpoints=("http://127.0.0.1:1",), get=lambda: etcd)
    collector = Collector(connection, "/mgmtd", recorder)
    collector.want(True)
    collector.start()
    wait_for(lambda: etcd.callbacks, 10, "the watch")
    assert recorder.contents == [None]   # the first read (no exports) was handed over
    recorder.contents.clear()
    recorder.threads.clear()
    return collector, etcd, recorder


def test_a_change_is_handed_over_on_the_collect_thread():
    collector, etcd, recorder = started()
    try:
        etcd.callbacks[0](response("one"))   # as the etcd client's thread calls it
        wait_for(lambda: recorder.contents == ["one"], 10, "the hand-over")
        assert recorder.threads == ["collect"]
    finally:
        collector.stop()


def test_an_error_restarts_the_watch_from_a_fresh_read():
    collector, etcd, recorder = started()
    try:
        etcd.kvs[f"{PREFIX}h2/file/x"] = value("one")   # written while the watch was broken
        etcd.callbacks[0](RuntimeError("stream broken"))
        wait_for(lambda: recorder.contents == ["one"], 10, "the fresh read handed over")
        assert len(etcd.callbacks) == 2 and etcd.cancelled == [1]
    finally:
        collector.stop()


def test_a_failed_hand_over_is_made_again_from_a_fresh_read():
    collector, etcd, recorder = started()
    try:
        recorder.fail_next = True
        etcd.kvs[f"{PREFIX}h2/file/x"] = value("one")
        etcd.callbacks[0](response("one"))   # the engine fails to take it: the thread restarts
        wait_for(lambda: recorder.contents == ["one"], 10, "the hand-over made again")
        assert len(etcd.callbacks) == 2
    finally:
        collector.stop()


def test_a_collector_not_wanted_reads_nothing_and_a_new_want_hands_over_afresh():
    etcd, recorder = FakeEtcd(), Recorder()
    connection = SimpleNamespace(endpoints=("http://127.0.0.1:1",), get=lambda: etcd)
    collector = Collector(connection, "/mgmtd", recorder)
    collector.start()
    try:
        etcd.kvs[f"{PREFIX}h2/file/x"] = value("one")
        collector.want(True)
        wait_for(lambda: recorder.contents == ["one"], 10, "the first read handed over")
        collector.want(False)
        wait_for(lambda: etcd.cancelled == [1], 10, "the watch cancelled")
        # wanted again with nothing changed: the engine forgot the exports when the
        # watch stopped, so the fresh read is handed over all the same
        collector.want(True)
        wait_for(lambda: recorder.contents == ["one", "one"], 10, "the fresh read handed over")
        assert len(etcd.callbacks) == 2
    finally:
        collector.stop()
