"""meta.reverse of collected resources: a reversal runs when the export is
gone, never merely because the engine does not know the cluster's exports
yet (its first start, etcd unreachable): that would revert a collected file
whose export is still there."""

from __future__ import annotations

from mgmtd.engine import main as engine_main
from mgmtd.engine.reversal import make_record
from mgmtd.resources.base import Meta
from mgmtd.resources.file import Confinement, FileResource


def _engine(tmp_path, graph_text: str) -> tuple[engine_main.Engine, list]:
    graph = tmp_path / "g.yaml"
    graph.write_text(graph_text)
    engine = engine_main.Engine(engine_main.EngineOptions(
        hostname="h2", graph_file=str(graph), prefix=str(tmp_path / "prefix")))
    swapped: list = []
    engine.scheduler.swap = swapped.append   # the graphs handed over, in order
    engine.exports.publish = lambda exports: None   # no etcd here
    return engine, swapped


def _record_collected(engine: engine_main.Engine, target) -> None:
    res = FileResource(f"{target}@h1", {"path": str(target), "content": "theirs\n"}, Meta(reverse=True))
    res.confinement = Confinement(str(target.parent), frozenset())
    res.validate()
    engine.reversals.store.write(make_record(res, res.reversal()))


def test_a_collected_files_reversal_waits_for_the_first_exports(tmp_path):
    srv = tmp_path / "srv"
    srv.mkdir()
    engine, swapped = _engine(tmp_path, f'collect:\n- kind: file\n  pattern: "{srv}/"\n')
    _record_collected(engine, srv / "x")
    assert engine.load(initial=True)
    assert all(kind != "file" for kind, _ in swapped[-1].resources)   # not known yet: waits
    engine._on_exports([])   # the cluster's exports are known: the file is not exported any more
    assert list(swapped[-1].resources) == [("file", f"{srv / 'x'}@h1")]


def test_without_collect_rules_a_reversal_does_not_wait(tmp_path):
    srv = tmp_path / "srv"
    srv.mkdir()
    engine, swapped = _engine(tmp_path, "resources: {}\n")
    _record_collected(engine, srv / "x")
    assert engine.load(initial=True)
    assert list(swapped[-1].resources) == [("file", f"{srv / 'x'}@h1")]
