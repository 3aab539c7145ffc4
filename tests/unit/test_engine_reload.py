"""An edit that lands between the engine's first load of the graph and the
moment its file watch is on is not lost (issue 13's class of bug: an update
during work in flight must never be marked done by the older work)."""

from __future__ import annotations

import hashlib
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


def test_a_reload_caches_the_new_graph_as_loaded_after_its_exports_went_out(tmp_path, monkeypatch):
    """Issue 19: a reload of a changed file parses it without the cache (it
    would miss) and writes the cache only after the exports were handed to
    their thread: the next start still finds the graph as loaded, not as the
    compose changed it (--no-autoedges rewrites each resource's meta)."""
    from mgmtd.yamlgraph import cache
    from mgmtd.yamlgraph.loader import load_file

    monkeypatch.setattr(cache, "WORTH_CACHING_ON_RELOAD", 2)   # this graph's two resources

    graph = tmp_path / "g.yaml"
    prefix = tmp_path / "state"

    def write(content: str) -> bytes:
        graph.write_text(f'graph: g\nresources:\n  file:\n  - name: "@@x"\n    path: "{tmp_path}/x"\n'
                         f'    content: "{content}"\n  - name: local\n    path: "{tmp_path}/local"\n'
                         f'    content: "{content}"\n')
        return graph.read_bytes()

    write("first")
    engine = engine_main.Engine(engine_main.EngineOptions(
        hostname="h1", graph_file=str(graph), prefix=str(prefix), no_autoedges=True))
    order: list[str] = []
    published = engine.exports.publish
    engine.exports.publish = lambda exports: (order.append("publish"), published(exports))[1]
    written = cache.write
    try:
        cache.write = lambda *args: (order.append("cache"), written(*args))[1]
        assert engine.load(initial=True)
        assert order == ["cache", "publish"]   # the first load goes through the cache as before
        order.clear()
        data = write("second")
        assert engine.load(initial=False)
    finally:
        cache.write = written
    assert order == ["publish", "cache"]
    kept = cache.read(str(prefix / "cache"), cache.graph_key(str(graph), hashlib.sha256(data).digest()))
    plain = load_file(str(graph))
    assert [(r.key, r.params, r.meta) for r in kept.resources] == \
        [(r.key, r.params, r.meta) for r in plain.resources]
    assert kept.exports[0].params["content"] == "second"
    assert all(r.meta.autoedge for r in kept.resources)   # as loaded: not as composed
    assert not engine.spec.resources[0].meta.autoedge     # (the running graph's is overridden)


def test_a_reload_of_a_small_graph_leaves_the_cache_to_the_next_start(tmp_path, monkeypatch):
    """Issue 19: below WORTH_CACHING_ON_RELOAD resources a reload writes no
    cache (its write would cost more than the parse it saves, at each reload);
    the next start misses the cache, parses the file and caches it then."""
    from mgmtd.yamlgraph import cache

    monkeypatch.setattr(cache, "WORTH_CACHING_ON_RELOAD", 3)
    graph = tmp_path / "g.yaml"
    prefix = tmp_path / "state"

    def write(*names: str) -> None:
        graph.write_text("graph: g\nresources:\n  file:\n" + "".join(
            f'  - name: {name}\n    path: "{tmp_path}/{name}"\n' for name in names))

    written: list[int] = []
    real_write = cache.write
    monkeypatch.setattr(cache, "write", lambda d, key, spec: (written.append(len(spec.resources)),
                                                              real_write(d, key, spec))[1])
    write("a", "b")
    engine = engine_main.Engine(engine_main.EngineOptions(
        hostname="h1", graph_file=str(graph), prefix=str(prefix)))
    assert engine.load(initial=True) and written == [2]   # a start caches any graph
    write("a", "c")
    assert engine.load(initial=False) and written == [2]  # two resources: not worth it
    write("a", "b", "c")
    assert engine.load(initial=False) and written == [2, 3]
    assert [r.name for r in cache.load_file_cached(str(graph), str(prefix)).resources] == ["a", "b", "c"]
    assert written == [2, 3]                              # ...read from the cache written then
