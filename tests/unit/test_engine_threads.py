"""python3-etcd3's watch thread dying on a closed channel (the engine replaced
its client) is one debug line, not a traceback on the engine's stderr (a
traceback failed test_cluster once on a fresh clone)."""

from __future__ import annotations

import threading

from mgmtd.engine.main import quiet_watch_thread_deaths


def die(name: str) -> None:
    def boom() -> None:
        raise ValueError("Cannot invoke RPC: Channel closed!")

    thread = threading.Thread(target=boom, name=name)
    thread.start()
    thread.join(timeout=10)


def test_a_watch_thread_dying_on_a_closed_channel_prints_no_traceback(capfd, monkeypatch):
    monkeypatch.setattr(threading, "excepthook", quiet_watch_thread_deaths)
    die("etcd3_watch_7f82da4bbc50")
    assert "Traceback" not in capfd.readouterr().err
    die("some-other-thread")   # anything else is still reported in full
    assert "Traceback" in capfd.readouterr().err
