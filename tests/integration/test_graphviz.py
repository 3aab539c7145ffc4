"""--graphviz and mgmtctl graph (issue 17) through the real CLI and a real
etcd: the DOT file of a running node has exactly its graph's resources and
edges, styled by kind and coloured by state, and follows a hot reload;
mgmtctl graph HOST prints any node's graph from any node's endpoints,
collected resources marked with their exporter, and says so in one line
when a host publishes none."""

from __future__ import annotations

import json

from tests import dotparse
from tests.harness import graph_with, mgmtctl, start_cluster, wait_for, write_atomically

SOLID, DASHED, NOTIFY = {"style": "solid"}, {"style": "dashed", "color": "gray40"}, \
    {"style": "bold", "color": "blue"}
GREEN = "palegreen"


def graph_text(root, extra: str = "") -> str:
    return f"""graph: gv
resources:
  file:
  - name: dir
    path: "{root}/"
    state: exists
  - name: inside
    path: "{root}/inside"
    content: "in\\n"
  noop:
  - name: first
  exec:
  - name: refreshed
    cmd: "true"
{extra}edges:
- from: {{kind: noop, name: first}}
  to: {{kind: exec, name: refreshed}}
  notify: true
- from: {{kind: exec, name: refreshed}}
  to: {{kind: file, name: inside}}
"""


def read_dot(path) -> dotparse.Dot | None:
    try:
        return dotparse.parse(path.read_text())
    except FileNotFoundError:
        return None


def all_green(dot: dotparse.Dot | None, nodes: set[str]) -> dotparse.Dot | None:
    """The parsed graph once it has exactly these nodes, each in state."""
    if dot is None:
        return None
    labelled = dot.labelled()
    if set(labelled) != nodes or any(a.get("fillcolor") != GREEN for a in labelled.values()):
        return None
    return dot


def ctl_graph(node, host: str, *flags: str):
    return mgmtctl("--endpoints", node.client_url, "graph", host, *flags)


def test_graphviz_file_follows_the_graph_and_mgmtctl_prints_it(make_node, workdir):
    root = workdir / "managed"
    graph = workdir / "g.yaml"
    graph.write_text(graph_text(root))
    node = make_node("gv1")
    node.start(["yaml", str(graph)], "--graphviz", str(workdir / "out.dot"), "--ideal-cluster-size", "1")
    out = workdir / "out.dot@gv1"
    nodes = {"file[dir]", "file[inside]", "noop[first]", "exec[refreshed]"}
    try:
        dot = wait_for(lambda: all_green(read_dot(out), nodes), 60, "the DOT file with every resource in state")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{out.read_text() if out.exists() else '(no file)'}\n{node.log()[-3000:]}") \
            from None
    assert dot.name == "gv" and dotparse.draw(dot.attrs["label"]) == "graph gv on gv1"
    assert dot.labelled_edges() == {
        ("noop[first]", "exec[refreshed]"): NOTIFY,
        ("exec[refreshed]", "file[inside]"): SOLID,
        ("file[dir]", "file[inside]"): DASHED,       # the autoedge: inside is under dir
    }
    assert "no dot on PATH" in node.log() or f"wrote {out} and {out}.png" in node.log()

    # mgmtctl graph prints the same graph from etcd
    printed = wait_for(lambda: (r := ctl_graph(node, "gv1")).returncode == 0
                       and all_green(dotparse.parse(r.stdout), nodes), 30, "mgmtctl graph gv1")
    assert printed.labelled_edges() == dot.labelled_edges()
    as_json = json.loads(ctl_graph(node, "gv1", "-o", "json").stdout)
    assert {(e["from"], e["to"], e["kind"]) for e in as_json["edges"]} == {
        ("noop[first]", "exec[refreshed]", "notify"), ("exec[refreshed]", "file[inside]", "explicit"),
        ("file[dir]", "file[inside]", "autoedge")}
    unknown = ctl_graph(node, "nobody")
    assert unknown.returncode == 1 and unknown.stderr.splitlines() == [
        "mgmtctl: no running host 'nobody' publishes a graph (running hosts: gv1)"]

    # a hot reload: a resource more, an edge less, a resource that fails
    write_atomically(graph, graph_text(root, extra='  - name: broken\n    cmd: "false"\n').replace(
        "- from: {kind: exec, name: refreshed}\n  to: {kind: file, name: inside}\n", ""))

    def reloaded():
        dot = read_dot(out)
        if dot is None or "exec[broken]" not in dot.labelled():
            return None
        labelled = dot.labelled()
        return dot if labelled["exec[broken]"]["fillcolor"] in ("orange", "tomato") \
            and labelled["noop[first]"]["fillcolor"] == GREEN else None

    dot = wait_for(reloaded, 60, "the DOT file of the reloaded graph, exec[broken] failing")
    assert set(dot.labelled()) == nodes | {"exec[broken]"}
    assert dot.labelled_edges() == {("noop[first]", "exec[refreshed]"): NOTIFY,
                                    ("file[dir]", "file[inside]"): DASHED}
    assert node.stop() == 0


def test_mgmtctl_graph_of_another_node_marks_collected_resources(make_node, workdir):
    shared = workdir / "shared"
    exporter = graph_with(workdir / "a.yaml", '  - name: "@@for-b"\n'
                                              f'    path: "{shared}/from-a"\n    content: "hi"\n')
    collector = graph_with(workdir / "b.yaml", f'  - name: shared\n    path: "{shared}/"\n',
                           f'collect:\n- kind: file\n  pattern: "{shared}/"\n')
    a, b = start_cluster([make_node("gva"), make_node("gvb")], ideal=1, graphs=[exporter, collector])

    def b_graph():
        shown = ctl_graph(a, "gvb")   # asked at a's endpoint: b's engine published it
        if shown.returncode != 0:
            return None
        dot = dotparse.parse(shown.stdout)
        return dot if "file[for-b@gva]" in dot.labelled() else None

    dot = wait_for(b_graph, 90, "b's graph with the resource collected from a")
    collected = next(n for n in dot.nodes if dot.label(n).startswith("file[for-b@gva]"))
    assert dot.label(collected) == "file[for-b@gva]\ncollected from gva"
    assert dot.nodes[collected]["peripheries"] == "2"
    assert set(dot.labelled()) == {"file[shared]", "file[for-b@gva]"}
    assert dot.labelled_edges() == {("file[shared]", "file[for-b@gva]"): DASHED}
    assert (shared / "from-a").read_text() == "hi"
    # a's own graph: the export is not applied there, so not drawn
    a_dot = dotparse.parse(wait_for(lambda: (r := ctl_graph(a, "gva")).returncode == 0 and r, 30,
                                    "a's graph").stdout)
    assert set(a_dot.labelled()) == set()

    # b stops: its graph goes with its engine's lease
    assert b.stop() == 0
    gone = wait_for(lambda: (r := ctl_graph(a, "gvb")).returncode == 1 and "no running host" in r.stderr
                    and r, 30, "b's graph gone with b")
    assert gone.stderr.splitlines() == ["mgmtctl: no running host 'gvb' publishes a graph (running hosts: gva)"]
    assert a.stop() == 0
