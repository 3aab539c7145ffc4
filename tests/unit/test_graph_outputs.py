"""Where the graph view goes (issue 17): the scheduler hands over the graph
and the drawn states (failed, blocked, noop's would-change), the --graphviz
writer writes FILE@HOST atomically and FILE@HOST.png through the filter
program when it is on PATH, logging a missing or failing one once."""

from __future__ import annotations

import logging
import os
import stat
import threading

from mgmtd.cluster.graphview import BLOCKED, FAILED, OK, WOULD_CHANGE, GraphView, NodeView
from mgmtd.engine.graphout import GraphvizWriter, graphviz_paths, write_atomically
from mgmtd.engine.scheduler import Scheduler
from mgmtd.resources.base import Context, Meta
from tests import dotparse
from tests.harness import wait_for
from tests.unit.test_scheduler import GUARD, Probe, Recorder, graph_of


def views_of(graph, ctx: Context | None = None) -> list:
    seen: list = []
    sched = Scheduler(ctx or Context(), workers=2, on_view=lambda g, states: seen.append((g, dict(states))))
    sched.swap(graph)
    thread = threading.Thread(target=sched.run, kwargs={"converged_timeout": 0.1}, daemon=True)
    thread.start()
    thread.join(GUARD)
    assert not thread.is_alive()
    return seen


def test_the_scheduler_hands_over_each_graph_and_state_change():
    rec = Recorder()
    graph = graph_of([Probe("a", rec, fail=1, meta=Meta(retry=0)), Probe("b", rec), Probe("c", rec)],
                     pairs=[("a", "b")])
    seen = views_of(graph)
    assert all(g is graph for g, _ in seen)
    assert seen[-1][1] == {("probe", "a"): FAILED, ("probe", "b"): BLOCKED, ("probe", "c"): OK}
    assert all(a != b for (_, a), (_, b) in zip(seen, seen[1:], strict=False))  # changes only


def test_noop_shows_what_would_change():
    rec = Recorder()
    graph = graph_of([Probe("a", rec, changes=1), Probe("b", rec, changes=0)])
    seen = views_of(graph, Context(noop=True))
    assert seen[-1][1] == {("probe", "a"): WOULD_CHANGE, ("probe", "b"): OK}


VIEW = GraphView("g", "h1", (NodeView("noop", "a", OK),), ())


def test_the_writer_writes_file_at_host_atomically_and_says_once_that_dot_is_missing(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    writer = GraphvizWriter(str(tmp_path / "g.dot"), "h1", "dot")
    dot_path, png_path = graphviz_paths(str(tmp_path / "g.dot"), "h1")
    assert (dot_path, png_path) == (f"{tmp_path}/g.dot@h1", f"{tmp_path}/g.dot@h1.png")
    with caplog.at_level(logging.INFO):
        assert writer.work(VIEW)
        assert writer.work(GraphView("g", "h1", (NodeView("noop", "a", FAILED),), ()))
    assert dotparse.parse(open(dot_path).read()).labelled()["noop[a]"]["fillcolor"] == "tomato"
    assert stat.S_IMODE(os.stat(dot_path).st_mode) == 0o600
    assert not os.path.exists(png_path)
    assert caplog.text.count("no dot on PATH") == 1
    assert sorted(os.listdir(tmp_path)) == ["g.dot@h1"]   # no temp file left


def fake_filter(directory, name: str, script: str) -> None:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_the_writer_draws_the_png_with_the_filter(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    # as graphviz: PROG -Tpng -oOUT FILE
    fake_filter(bin_dir, "neato", 'test "$1" = -Tpng || exit 3\nout="${2#-o}"\n'
                                   'printf "PNG of %s" "$3" > "$out"\n')
    monkeypatch.setenv("PATH", str(bin_dir))
    out = tmp_path / "out"
    out.mkdir()
    writer = GraphvizWriter(str(out / "g"), "h1", "neato")
    assert writer.work(VIEW)
    assert (out / "g@h1.png").read_text() == f"PNG of {out}/g@h1"
    assert sorted(os.listdir(out)) == ["g@h1", "g@h1.png"]


def test_a_failing_filter_is_logged_once_and_not_fatal(tmp_path, monkeypatch, caplog):
    fake_filter(tmp_path / "bin", "dot", 'echo "Error: syntax error in line 1" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    writer = GraphvizWriter(str(tmp_path / "g"), "h1", "dot")
    with caplog.at_level(logging.WARNING):
        for state in (OK, FAILED, OK):
            assert writer.work(GraphView("g", "h1", (NodeView("noop", "a", state),), ()))
    assert caplog.text.count("dot -Tpng failed: Error: syntax error in line 1") == 1
    assert os.path.exists(tmp_path / "g@h1") and not os.path.exists(tmp_path / "g@h1.png")


def test_an_unwritable_file_is_logged_once(tmp_path, caplog):
    writer = GraphvizWriter(str(tmp_path / "missing-dir" / "g"), "h1", "dot")
    with caplog.at_level(logging.WARNING):
        assert writer.work(VIEW) and writer.work(GraphView("g", "h1", (NodeView("noop", "b", OK),), ()))
    assert caplog.text.count("cannot write") == 1


def test_write_atomically_replaces(tmp_path):
    path = tmp_path / "f"
    write_atomically(str(path), b"one")
    write_atomically(str(path), b"two")
    assert path.read_bytes() == b"two" and os.listdir(tmp_path) == ["f"]


def test_the_writer_thread_takes_the_newest_graph(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    rec = Recorder()
    writer = GraphvizWriter(str(tmp_path / "g"), "h1", "dot")
    writer.start()
    try:
        for name in ("a", "b", "c"):
            graph = graph_of([Probe(name, rec)])
            graph.name = "g"
            writer.put(graph, {("probe", name): OK})
        wait_for(lambda: (tmp_path / "g@h1").exists()
                 and "probe[c]" in dotparse.parse((tmp_path / "g@h1").read_text()).labelled(),
                 GUARD, "the newest graph written")
    finally:
        writer.stop()
