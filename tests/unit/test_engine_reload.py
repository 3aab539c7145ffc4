"""An edit that lands between the engine's first load of the graph and the
moment its file watch is on is not lost (issue 13's class of bug: an update
during work in flight must never be marked done by the older work)."""

from __future__ import annotations

import signal
import threading

from mgmtd.engine import main as engine_main
from mgmtd.engine.reload import GraphReloader
from tests.harness import one_file_graph, wait_for


def test_an_edit_before_the_watch_is_on_is_applied(tmp_path, monkeypatch):
    target = tmp_path / "out"
    graph = one_file_graph(tmp_path / "g.yaml", target, "first")
    original_start = GraphReloader.start

    def late_start(reloader: GraphReloader) -> None:
        one_file_graph(tmp_path / "g.yaml", target, "second")   # the edit, just before the watch
        original_start(reloader)

    monkeypatch.setattr(GraphReloader, "start", late_start)
    monkeypatch.setattr(signal, "signal", lambda *args: None)   # not the main thread
    engine = engine_main.Engine(engine_main.EngineOptions(hostname="h1", graph_file=graph))
    runner = threading.Thread(target=engine.run, daemon=True)
    runner.start()
    try:
        wait_for(lambda: target.exists() and target.read_text() == "second", 10,
                 "the edit made before the watch to be applied")
    finally:
        engine.scheduler.stop()
        runner.join(timeout=10)
    assert not runner.is_alive()
