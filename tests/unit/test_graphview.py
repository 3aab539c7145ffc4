"""The graph view (issue 17: --graphviz, mgmtctl graph): states and edge kinds
from a real graph, DOT that parses (with the test's strict parser, and with
Graphviz's own when installed) whatever the names hold, and the etcd value
that survives a round trip and refuses junk."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgmtd.cluster import graphview
from mgmtd.cluster.graphview import (
    AUTOEDGE,
    BLOCKED,
    EDGE_STYLES,
    EXPLICIT,
    FAILED,
    NOTIFY,
    OK,
    PENDING,
    RETRYING,
    STATE_COLOURS,
    WOULD_CHANGE,
    EdgeView,
    GraphView,
    NodeView,
    decode,
    encode,
    quote,
    shown_state,
    to_dot,
    view_of,
)
from mgmtd.yamlgraph.loader import load_text
from tests import dotparse

NASTY = ['a"b', "back\\slash", "ends with \\", "two\nlines", "cr\rhere", "@@x", "\\N and \\G", "\\n",
         "{}[];->,=", "' single", "tab\there", "ünïcødé ☃", "\\\"", "a@host"]

GRAPH = """
graph: g
resources:
  file:
  - name: dir
    path: "/tmp/gv/"
    state: exists
  - name: inside
    path: "/tmp/gv/f"
    content: "x"
  noop:
  - name: n1
  - name: n2
  exec:
  - name: e
    cmd: "true"
edges:
- from: {kind: noop, name: n1}
  to: {kind: noop, name: n2}
- from: {kind: noop, name: n2}
  to: {kind: exec, name: e}
  notify: true
- from: {kind: file, name: dir}
  to: {kind: file, name: inside}
"""


def test_shown_state():
    assert shown_state("ok", False, False) == OK
    assert shown_state("ok", False, True) == WOULD_CHANGE
    assert shown_state("pending", False, False) == PENDING
    assert shown_state("pending", True, False) == RETRYING
    assert shown_state("ok", True, False) == RETRYING
    assert shown_state("failed", True, False) == FAILED
    assert shown_state("blocked", False, False) == BLOCKED
    assert set(STATE_COLOURS) == {OK, PENDING, RETRYING, FAILED, BLOCKED, WOULD_CHANGE}


def built(text: str = GRAPH):
    spec = load_text(text)
    return spec.build()


def test_edge_kinds_and_states_from_a_real_graph():
    graph = built()
    graph.name = "g"
    view = view_of(graph, {("noop", "n1"): OK, ("exec", "e"): FAILED}, "h1")
    assert [n.key for n in view.nodes] == sorted(graph.resources)
    assert {n.key: n.state for n in view.nodes}[("noop", "n2")] == PENDING  # no state yet
    kinds = {(e.source[1], e.target[1]): e.kind for e in view.edges}
    # the dir -> inside edge is explicit AND automatic: drawn as written
    assert kinds == {("n1", "n2"): EXPLICIT, ("n2", "e"): NOTIFY, ("dir", "inside"): EXPLICIT}
    without = built(GRAPH.replace("- from: {kind: file, name: dir}\n  to: {kind: file, name: inside}\n", ""))
    kinds = {(e.source[1], e.target[1]): e.kind for e in view_of(without, {}, "h1").edges}
    assert kinds[("dir", "inside")] == AUTOEDGE


def test_dot_matches_the_graph_with_styles_and_colours():
    graph = built()
    graph.name = "g"
    graph.collected = {("exec", "e"): ("b", "a")}
    dot = dotparse.parse(to_dot(view_of(graph, {("noop", "n1"): OK, ("exec", "e"): FAILED}, "h1")))
    assert dotparse.draw(dot.attrs["label"]) == "graph g on h1"
    nodes = dot.labelled()
    assert set(nodes) == {"file[dir]", "file[inside]", "noop[n1]", "noop[n2]", "exec[e]"}
    assert nodes["noop[n1]"]["fillcolor"] == STATE_COLOURS[OK]
    assert nodes["exec[e]"]["fillcolor"] == STATE_COLOURS[FAILED]
    assert nodes["noop[n2]"]["fillcolor"] == STATE_COLOURS[PENDING]
    collected = next(n for n in dot.nodes if dot.label(n).startswith("exec[e]"))
    assert dot.label(collected) == "exec[e]\ncollected from a, b"
    assert dot.nodes[collected]["peripheries"] == "2" and "peripheries" not in nodes["noop[n1]"]
    edges = dot.labelled_edges()
    assert set(edges) == {("noop[n1]", "noop[n2]"), ("noop[n2]", "exec[e]"), ("file[dir]", "file[inside]")}
    assert edges[("noop[n2]", "exec[e]")] == {"style": "bold", "color": "blue"}
    assert edges[("noop[n1]", "noop[n2]")] == {"style": "solid"}


def nasty_view(names: list[str]) -> GraphView:
    nodes = tuple(sorted((NodeView("noop", name, OK, (name,)) for name in set(names)), key=lambda n: n.key))
    edges = tuple(EdgeView(a.key, b.key, kind) for a, b, kind in
                  zip(nodes, nodes[1:], [EXPLICIT, AUTOEDGE, NOTIFY] * len(nodes), strict=False))
    return GraphView("g\"raph\\", "h\n1", nodes, edges)


def check_dot_of(view: GraphView) -> None:
    text = to_dot(view)
    dot = dotparse.parse(text)
    drawn = {dotparse.draw(attrs["label"]): attrs for attrs in dot.nodes.values()}
    expected = {f"noop[{n.name}]\ncollected from {n.name}".replace("\r\n", "\n").replace("\r", "\n")
                for n in view.nodes}
    assert set(drawn) == expected
    assert len(dot.nodes) == len(view.nodes)   # IDs stay apart: no two names collide
    assert len(dot.edges) == len(view.edges)


def test_nasty_names_parse_and_draw_as_themselves():
    check_dot_of(nasty_view(NASTY))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6))
def test_any_names_parse_and_draw_as_themselves(names):
    check_dot_of(nasty_view(names))


def test_quote():
    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert quote("ends\\") == '"ends\\\\"'


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_itself_reads_it():  # pragma: no cover - only where graphviz is installed
    view = nasty_view(NASTY)
    done = subprocess.run(["dot", "-Tplain"], input=to_dot(view), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert sum(1 for line in done.stdout.splitlines() if line.startswith("node ")) == len(view.nodes)


def test_wire_round_trip_small_and_compressed():
    view = nasty_view(NASTY)
    assert encode(view)[:1] == b"{" and decode(encode(view)) == view
    big = GraphView("big", "h", tuple(NodeView("noop", f"n{i:05d}", OK) for i in range(20000)), ())
    raw = encode(big)
    assert raw[:1] != b"{" and len(raw) < 1024 * 1024 and decode(raw) == big
    assert encode(big) == raw   # deterministic: an unchanged graph is never rewritten


def many_files(count: int) -> str:
    lines = ["graph: many", "resources:", "  file:", '  - name: dir\n    path: "/tmp/gv/"\n    state: exists']
    lines += [f'  - name: "f{i} \\"ü\\""\n    path: "/tmp/gv/f{i}"\n    content: "x"' for i in range(count)]
    lines += ["  noop:", "  - name: n1", "  - name: n2", "edges:",
              "- from: {kind: noop, name: n1}\n  to: {kind: noop, name: n2}\n  notify: true",
              "- from: {kind: noop, name: n2}\n  to: {kind: file, name: dir}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("count", [3, 12000])
def test_the_graph_encodes_as_its_view_without_drawing_it(count):
    """The engine publishes straight from the graph: the same bytes as the
    view's, plain when small, compressed when large; decoded, the view."""
    graph = built(many_files(count))
    graph.name = "many"
    keys = sorted(graph.resources)
    graph.collected = {key: ("h3", "h2") for key in keys[::5]}
    states = {key: (OK, FAILED, BLOCKED)[i % 3] for i, key in enumerate(keys[1:])}  # keys[0]: pending
    view = view_of(graph, states, 'h"1')
    raw = graphview.encode_graph(graph, states, 'h"1')
    assert raw == encode(view) and decode(raw) == view
    assert (raw[:1] == b"{") == (count < 1000)
    assert {e.kind for e in view.edges} == {EXPLICIT, AUTOEDGE, NOTIFY}
    assert view.nodes[0].state == PENDING and view.nodes[5].hosts == ("h2", "h3")


def test_the_wire_format_is_sorted_compact_json():
    view = GraphView("g", "h", (NodeView("noop", "a", OK, ("x",)), NodeView("noop", "b", FAILED)),
                     (EdgeView(("noop", "a"), ("noop", "b"), NOTIFY),))
    assert json.loads(encode(view)) == {"version": 1, "graph": "g", "host": "h",
                                        "nodes": [["noop", "a", "ok", ["x"]], ["noop", "b", "failed", []]],
                                        "edges": [[0, 1, "notify"]]}
    assert encode(view) == json.dumps(json.loads(encode(view)), sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize("raw", [
    None, b"", b"not json", b"[]", b'{"version": 2}', zlib.compress(b"[1]"), b"\x78\x9cjunk",
    json.dumps({"version": 1, "graph": "g", "host": "h", "nodes": [["noop", "a", "ok"]], "edges": []}).encode(),
    json.dumps({"version": 1, "graph": "g", "host": "h", "nodes": [["noop", "a", "ok", []]],
                "edges": [[0, 1, "explicit"]]}).encode(),
    json.dumps({"version": 1, "graph": "g", "host": "h", "nodes": [["noop", "a", "ok", []]],
                "edges": [[0, 0, "other"]]}).encode(),
    json.dumps({"version": 1, "graph": "g", "host": "h", "nodes": [["noop", "a", "ok", []]],
                "edges": [[True, 0, "explicit"]]}).encode(),
    b"[" * 100000,
])
def test_junk_in_etcd_is_no_view(raw):
    assert decode(raw) is None


def test_edge_styles_cover_every_kind():
    assert set(EDGE_STYLES) == {EXPLICIT, AUTOEDGE, NOTIFY}
    assert graphview.FILTERS[0] == graphview.DEFAULT_FILTER == "dot"
