"""--no-autoedges and --no-autogroup (mgmt's flags, issue 17): every resource
as if its meta said autoedge: false / autogroup: false."""

from __future__ import annotations

from mgmtd.engine.main import Engine, EngineOptions, overridden_meta
from mgmtd.engine.scheduler import autogroups
from mgmtd.resources.base import Meta

GRAPH = """graph: g
resources:
  file:
  - name: d
    path: "{root}/d/"
    state: exists
  - name: f
    path: "{root}/d/f"
    content: "x"
"""


def test_overridden_meta():
    meta = Meta()
    assert overridden_meta(meta, False, False) is meta
    assert (overridden_meta(meta, True, False).autoedge, overridden_meta(meta, True, False).autogroup) \
        == (False, True)
    assert (overridden_meta(meta, False, True).autoedge, overridden_meta(meta, False, True).autogroup) \
        == (True, False)


def composed(tmp_path, **flags):
    path = tmp_path / "g.yaml"
    path.write_text(GRAPH.format(root=tmp_path))
    engine = Engine(EngineOptions(hostname="t", graph_file=str(path), **flags))
    swapped = []
    engine.scheduler.swap = swapped.append
    try:
        assert engine.load(initial=True)
    finally:
        engine.scheduler.pool.shutdown()
        engine.connection.close()
    return swapped[-1]


def test_no_autoedges_builds_the_graph_without_them(tmp_path):
    assert composed(tmp_path).requires[("file", "f")] == {("file", "d")}
    assert composed(tmp_path, no_autoedges=True).requires[("file", "f")] == set()


class Groupable:
    GROUPABLE = True

    def __init__(self, meta: Meta) -> None:
        self.meta = meta

    def group_token(self) -> str:
        return "same"


def test_no_autogroup_keeps_every_resource_alone():
    ready = [(("pkg", n), Groupable(Meta())) for n in "ab"]
    assert len(autogroups(ready, noop=False)) == 1
    for _, res in ready:
        res.meta = overridden_meta(res.meta, False, True)
    assert len(autogroups(ready, noop=False)) == 2


def exports_kept(no_watch: bool, tmp_path) -> list:
    graph = tmp_path / "collects.yaml"   # only a graph that collects takes the exports
    graph.write_text(f'graph: g\nresources: {{}}\ncollect:\n- kind: file\n  pattern: "{tmp_path}/"\n')
    engine = Engine(EngineOptions(hostname="t", no_watch=no_watch, graph_file=str(graph)))
    engine.scheduler.swap = lambda graph: None
    try:
        assert engine.load(initial=True)
        kept = []
        engine._on_exports([])
        kept.append(list(engine.exports_seen))
        engine._on_exports(["changed"])
        kept.append(list(engine.exports_seen))
        engine.exports_refresh = True  # what a SIGHUP sets before it re-reads the exports
        engine._on_exports(["refreshed"])
        kept.append(list(engine.exports_seen))
        return kept
    finally:
        engine.scheduler.pool.shutdown()
        engine.connection.close()


def test_no_watch_keeps_the_first_exports_until_sighup(monkeypatch, tmp_path):
    import mgmtd.engine.main as engine_main

    monkeypatch.setattr(engine_main, "select", lambda rules, exports, host, resources: type(
        "Chosen", (), {"conflicts": (), "rejected": (), "resources": [], "sources": {}})())
    monkeypatch.setattr(engine_main, "matched", lambda rules, exports: list(exports))
    assert exports_kept(no_watch=True, tmp_path=tmp_path) == [[], [], ["refreshed"]]
    assert exports_kept(no_watch=False, tmp_path=tmp_path) == [[], ["changed"], ["refreshed"]]
