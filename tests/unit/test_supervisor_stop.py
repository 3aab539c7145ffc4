"""A supervisor's stop (CI, 2026-11-28): a farewell to the cluster that never
returns must not keep this node's etcd running."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from mgmtd.supervisor import node
from mgmtd.supervisor.config import NodeConfig


def test_a_farewell_that_hangs_still_stops_etcd(tmp_path, monkeypatch):
    monkeypatch.setattr(node, "LEAVE_TIMEOUT", 0.2)
    sup = node.Supervisor(NodeConfig(hostname="h1", prefix=str(tmp_path)))
    never = threading.Event()
    stopped: list[str] = []
    sup.loop = SimpleNamespace(close=lambda: never.wait(30))   # a client stuck in a call
    sup.local = SimpleNamespace(process=SimpleNamespace(stop=lambda: stopped.append("etcd")))
    began = time.monotonic()
    try:
        sup.shutdown()
    finally:
        never.set()
    assert stopped == ["etcd"]
    assert time.monotonic() - began < 10


def test_a_farewell_that_returns_comes_before_etcd_stops(tmp_path):
    sup = node.Supervisor(NodeConfig(hostname="h1", prefix=str(tmp_path)))
    order: list[str] = []
    sup.loop = SimpleNamespace(close=lambda: order.append("lease revoked"))
    sup.recovery = SimpleNamespace(at_stop=lambda: order.append("revision noted"))
    sup.local = SimpleNamespace(process=SimpleNamespace(stop=lambda: order.append("etcd stopped")))
    sup.shutdown()
    assert order == ["lease revoked", "revision noted", "etcd stopped"]
