"""meta.reverse through the real CLI: what a resource changed is put back
once it leaves the graph, by hot reload (``mgmtd run``) or across a restart
of ``mgmtd engine``, and the records live in the prefix, 0600."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.harness import wait_for, write_atomically

MGMTD = str(Path(sys.executable).parent / "mgmtd")


def two_files(root: Path, changed_content: str = "managed\n", reverse: str = "true") -> str:
    return f"""graph: rev
resources:
  noop:
  - name: stays
  file:
  - name: created
    path: "{root}/created"
    content: "made by mgmtd\\n"
    meta: {{reverse: true}}
  - name: changed
    path: "{root}/changed"
    content: "{changed_content.encode('unicode_escape').decode()}"
    mode: "0644"
    meta: {{reverse: {reverse}}}
"""


def only_noop() -> str:
    return "graph: rev\nresources:\n  noop:\n  - name: stays\n"


def engine_once(graph: Path, prefix: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MGMTD, "engine", "--hostname", "t", "--prefix", str(prefix),
                           "--converged-timeout", "0.5", "yaml", str(graph)],
                          capture_output=True, text=True, timeout=90)


def records(prefix: Path) -> list[Path]:
    directory = prefix / "reverse"
    return sorted(directory.glob("*.json")) if directory.exists() else []


def original(root: Path) -> Path:
    """A file that was there before mgmtd: its content and mode are put back."""
    root.mkdir(exist_ok=True)
    target = root / "changed"
    target.write_text("the operator's own\n")
    os.chmod(target, 0o600)
    return target


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_hot_reload_puts_back_what_the_removed_resources_changed(make_node, workdir):
    root = workdir / "root"
    changed = original(root)
    graph = workdir / "g.yaml"
    graph.write_text(two_files(root))
    node = make_node()
    node.start(["yaml", str(graph)])
    try:
        wait_for(lambda: changed.read_text() == "managed\n" and (root / "created").exists(), 60,
                 "first converge")
        # the records are in the node's prefix, 0600, before anything was changed
        found = records(node.prefix)
        assert len(found) == 2
        assert all(mode_of(path) == 0o600 for path in found)
        assert mode_of(node.prefix / "reverse") == 0o700
        write_atomically(graph, only_noop())

        def put_back():
            return (not (root / "created").exists() and changed.read_text() == "the operator's own\n"
                    and mode_of(changed) == 0o600)

        wait_for(put_back, 30, "the reversals")
        wait_for(lambda: not records(node.prefix), 30, "the records deleted")
        # done once: the reversal left the graph, so a file made by hand now stays
        (root / "created").write_text("by hand\n")
        write_atomically(graph, only_noop() + "  - name: another\n")
        wait_for(lambda: "graph rev reloaded" in node.log() and node.log().count("reloaded") >= 2,
                 30, "the second reload")
        assert (root / "created").read_text() == "by hand\n"
    finally:
        node.stop()
    log = node.log()
    assert "file[created]: reversed: its record is deleted" in log
    assert "file[changed]: reversed: its record is deleted" in log
    assert "Traceback" not in log


def test_a_reversal_survives_a_restart_of_the_engine(workdir):
    root = workdir / "root"
    changed = original(root)
    prefix = workdir / "prefix"
    graph = workdir / "g.yaml"
    graph.write_text(two_files(root))
    out = engine_once(graph, prefix)
    assert out.returncode == 0, out.stderr
    assert changed.read_text() == "managed\n" and mode_of(changed) == 0o644
    assert len(records(prefix)) == 2
    # the engine is stopped; the graph loses both files; the next start reverses them
    graph.write_text(only_noop())
    out = engine_once(graph, prefix)
    assert out.returncode == 0, out.stderr
    assert not (root / "created").exists()
    assert changed.read_text() == "the operator's own\n" and mode_of(changed) == 0o600
    assert records(prefix) == []
    assert "file[changed]: left the graph: its reversal runs" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_record_keeps_what_was_there_before_the_first_change(workdir):
    """A resource changed while it stays in the graph (or back before its
    reversal ran) keeps its record: the reversal puts back the operator's
    file, not mgmtd's earlier content."""
    root = workdir / "root"
    changed = original(root)
    prefix = workdir / "prefix"
    graph = workdir / "g.yaml"
    graph.write_text(two_files(root, "first\n"))
    assert engine_once(graph, prefix).returncode == 0
    graph.write_text(two_files(root, "second\n"))
    out = engine_once(graph, prefix)
    assert out.returncode == 0, out.stderr
    assert changed.read_text() == "second\n"
    assert "reversal recorded" not in out.stderr
    graph.write_text(only_noop())
    assert engine_once(graph, prefix).returncode == 0
    assert changed.read_text() == "the operator's own\n"


def test_managed_again_without_reverse_drops_the_record(workdir):
    root = workdir / "root"
    changed = original(root)
    prefix = workdir / "prefix"
    graph = workdir / "g.yaml"
    graph.write_text(two_files(root))
    assert engine_once(graph, prefix).returncode == 0
    graph.write_text(two_files(root, reverse="false"))
    out = engine_once(graph, prefix)
    assert out.returncode == 0, out.stderr
    assert "file[changed]: managed again without meta.reverse: its reversal record is dropped" in out.stderr
    assert len(records(prefix)) == 1   # created's
    graph.write_text(only_noop())
    assert engine_once(graph, prefix).returncode == 0
    assert changed.read_text() == "managed\n"       # no longer reversed
    assert not (root / "created").exists()          # still reversed


def test_reverse_on_a_kind_that_cannot_is_refused_where_it_is_written(workdir):
    graph = workdir / "g.yaml"
    graph.write_text("resources:\n  exec:\n  - name: e\n    cmd: 'true'\n    meta:\n      reverse: true\n")
    out = subprocess.run([MGMTD, "validate", str(graph)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert f"{graph}:6:16: exec[e]: meta.reverse: kind exec cannot be reversed" in out.stderr
    graph.write_text("resources:\n  file:\n  - name: d\n    path: /tmp/d/\n    meta:\n      reverse: true\n")
    out = subprocess.run([MGMTD, "validate", str(graph)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert f"{graph}:6:16: file[d]: meta.reverse: a directory cannot be reversed" in out.stderr
    graph.write_text("resources:\n  noop:\n  - name: n\n    meta:\n      reverse: {overwrite: true}\n")
    out = subprocess.run([MGMTD, "validate", str(graph)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert f"{graph}:5:16: noop[n]: field 'meta.reverse' must be boolean" in out.stderr
    graph.write_text("resources:\n  exec:\n  - name: e\n    cmd: 'true'\n    meta:\n      reverse: false\n")
    out = subprocess.run([MGMTD, "validate", str(graph)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_an_engine_run_alone_on_a_nodes_prefix_leaves_its_reversals_alone(make_node, workdir):
    """`mgmtd engine` run alone takes the service's default prefix: it must not
    take the node's records for objects gone from its own graph."""
    root = workdir / "root"
    changed = original(root)
    graph = workdir / "g.yaml"
    graph.write_text(two_files(root))
    node = make_node()
    node.start(["yaml", str(graph)])
    try:
        wait_for(lambda: changed.read_text() == "managed\n" and len(records(node.prefix)) == 2, 60,
                 "first converge")
        alone = workdir / "alone.yaml"
        alone.write_text(only_noop())
        out = engine_once(alone, node.prefix)
        assert out.returncode == 0, out.stderr
        assert "is in use by another engine" in out.stderr and "none is run by this engine" in out.stderr
        assert changed.read_text() == "managed\n" and (root / "created").exists()
        assert len(records(node.prefix)) == 2
    finally:
        node.stop()


def test_a_collected_file_is_put_back_when_its_export_goes_and_not_before(make_node, workdir):
    """meta.reverse travels with an export: the collector records what it had
    and puts it back once the export is withdrawn; an engine that cannot read
    the cluster's exports (etcd away) reverts nothing."""
    from tests.harness import file_res, free_port, graph_with, start_cluster

    out = workdir / "out"
    out.mkdir()
    target = out / "x"
    target.write_text("the collector's own\n")
    exported = file_res("@@x", str(target), "exported") + "    meta: {reverse: true}\n"
    g2 = graph_with(workdir / "g2.yaml", exported)
    g1 = graph_with(workdir / "g1.yaml", "    []", f'collect:\n- kind: file\n  pattern: "{out}/"\n')
    h1, h2 = start_cluster([make_node("h1"), make_node("h2")], ideal=1, graphs=[g1, g2])
    wait_for(lambda: target.read_text() == "exported" and len(records(h1.prefix)) == 1, 60,
             "x collected by h1, its reversal recorded")

    # h1 (the only etcd server) stops: its engine, run alone, cannot know the exports
    assert h1.stop() == 0
    alone = subprocess.run([MGMTD, "engine", "--hostname", "h1", "--prefix", str(h1.prefix),
                            "--endpoints", f"http://127.0.0.1:{free_port()}", "--max-runtime", "2",
                            "yaml", g1], capture_output=True, text=True, timeout=90)
    assert "graph g loaded" in alone.stderr, alone.stderr
    assert "its reversal runs" not in alone.stderr
    assert target.read_text() == "exported" and len(records(h1.prefix)) == 1

    # back with its etcd: the export is still there; h2 withdraws it: put back
    h1.start(["yaml", g1])
    wait_for(lambda: "graph g loaded" in h1.log(), 60, "h1 back")
    graph_with(workdir / "g2.yaml", "    []")
    wait_for(lambda: target.read_text() == "the collector's own\n" and not records(h1.prefix), 60,
             "x put back on h1 once its export is gone")
    assert "file[x@h2]: reversed: its record is deleted" in h1.log()
    assert "Traceback" not in h1.log()
