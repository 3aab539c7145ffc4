"""A stop asked for during a cluster round ends it at its next etcd call
(``observe.Stopping``), not after every endpoint has timed out in turn."""

from __future__ import annotations

import threading

import pytest

from mgmtd.cluster import etcdapi
from mgmtd.cluster.observe import Stopping, observe


class SlowApi:
    """Each member list times out; the test's stop comes during the first."""

    def __init__(self, stopping: threading.Event) -> None:
        self.stopping = stopping
        self.asked: list[str] = []

    def member_list(self, endpoint: str, timeout: float):
        self.asked.append(endpoint)
        self.stopping.set()   # SIGTERM arrives while this call waits
        raise etcdapi.EtcdApiError(f"{endpoint}: deadline exceeded")


class Store:
    def __init__(self, stopping: threading.Event, stop_at: str) -> None:
        self.stopping, self.stop_at = stopping, stop_at
        self.read: list[str] = []

    def _read(self, what: str):
        self.read.append(what)
        if what == self.stop_at:
            self.stopping.set()

    def leader(self):
        self._read("leader")
        return "me"

    def nomination(self, host):
        self._read("nomination")

    def ideal_size(self):
        self._read("ideal")

    def volunteers(self):
        self._read("volunteers")
        return ()

    def nominations(self):
        self._read("nominations")
        return ()


class OneMember:
    def member_list(self, endpoint: str, timeout: float):
        return 1, []


def test_a_stop_ends_the_member_lists_at_the_next_endpoint():
    stopping = threading.Event()
    api = SlowApi(stopping)
    with pytest.raises(Stopping):
        observe(api, None, [f"http://127.0.0.1:{port}" for port in (1, 2, 3)], "me", 0.0, stopping)
    assert api.asked == ["http://127.0.0.1:1"]


@pytest.mark.parametrize("stop_at", ["leader", "nomination", "ideal"])
def test_a_stop_ends_the_store_reads_at_the_next_one(stop_at):
    stopping = threading.Event()
    store = Store(stopping, stop_at)
    with pytest.raises(Stopping):
        observe(OneMember(), store, ["http://127.0.0.1:1"], "me", 0.0, stopping)
    assert store.read[-1] == stop_at


def test_without_a_stop_the_round_reads_everything():
    stopping = threading.Event()
    store = Store(stopping, stop_at="")
    snapshot = observe(OneMember(), store, ["http://127.0.0.1:1"], "me", 0.0, stopping)
    assert snapshot.reachable and store.read == ["leader", "nomination", "ideal", "volunteers", "nominations"]
