"""The resource graph (DESIGN.md section 5): autoedges, cycles, topological order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgmtd.graph import CycleError, Edge, autoedges, build
from mgmtd.resources.base import Meta, Resource
from mgmtd.resources.file import FileResource


def file(name: str, path: str, meta: Meta | None = None, **params) -> FileResource:
    res = FileResource(name, {"path": path, **params}, meta)
    res.validate()
    return res


class Node(Resource):
    kind = "node"
    FIELDS = {}


def node(name: str) -> Node:
    return Node(name, {})


def edge_pairs(edges) -> set[tuple[str, str]]:
    return {(e.source[1], e.target[1]) for e in edges}


# --- autoedges ---------------------------------------------------------------

def test_file_depends_on_its_parent_directory():
    d, f = file("d", "/srv/a/"), file("f", "/srv/a/f")
    assert edge_pairs(autoedges([f, d])) == {("d", "f")}
    graph = build([f, d], [])
    assert graph.requires[f.key] == {d.key}
    assert graph.dependants[d.key] == {f.key}


def test_autoedge_at_any_depth_without_intermediate_directories():
    top, deep = file("top", "/a/"), file("deep", "/a/b/c/f")
    graph = build([deep, top], [])
    assert graph.requires[deep.key] == {top.key}
    assert graph.order().index(top.key) < graph.order().index(deep.key)


def test_autoedges_through_nested_directories():
    a, b, c, f = file("a", "/a/"), file("b", "/a/b/"), file("c", "/a/b/c/"), file("f", "/a/b/c/f")
    graph = build([f, c, b, a], [])
    assert c.key in graph.requires[f.key]
    assert b.key in graph.requires[c.key]
    assert a.key in graph.requires[b.key]
    order = graph.order()
    assert [k[1] for k in order] == ["a", "b", "c", "f"]


def test_no_autoedge_to_unrelated_or_prefix_paths():
    d = file("d", "/srv/a/")
    others = [file("x", "/srv/ab/f"), file("y", "/srv/f"), file("z", "/other/srv/a/f")]
    assert autoedges([d, *others]) == []


def test_no_autoedge_from_a_plain_file_or_an_absent_directory():
    assert autoedges([file("p", "/srv/a"), file("f", "/srv/a/f")]) == []
    assert autoedges([file("d", "/srv/a/", state="absent"), file("f", "/srv/a/f")]) == []


def test_meta_autoedge_false_disables():
    d = file("d", "/srv/a/")
    f = file("f", "/srv/a/b/f", meta=Meta(autoedge=False))
    assert autoedges([d, f]) == []
    graph = build([d, f], [])
    assert graph.requires[f.key] == set()


def test_autoedges_use_dirname_and_basename():
    d = file("d", "/srv/x/")
    f = FileResource("f", {"dirname": "/srv/x/y/", "basename": "z"})
    f.validate()
    assert edge_pairs(autoedges([d, f])) == {("d", "f")}


def test_explicit_and_autoedge_together():
    d, f, g = file("d", "/srv/a/"), file("f", "/srv/a/f"), file("g", "/elsewhere/g")
    graph = build([d, f, g], [Edge(f.key, g.key, notify=True)])
    assert graph.requires[g.key] == {f.key}
    assert graph.requires[f.key] == {d.key}
    assert graph.notifies == {(f.key, g.key)}
    order = graph.order()
    assert order.index(d.key) < order.index(f.key) < order.index(g.key)


# --- cycles ------------------------------------------------------------------

def assert_is_cycle(cycle, edges):
    pairs = {(e.source, e.target) for e in edges}
    assert len(set(cycle)) == len(cycle)
    for i, key in enumerate(cycle):
        assert (key, cycle[(i + 1) % len(cycle)]) in pairs, f"{key} -> next is not an edge: {cycle}"


def test_cycle_error_names_the_cycle_in_order():
    a, b, c, tail = node("a"), node("b"), node("c"), node("tail")
    edges = [Edge(a.key, b.key), Edge(b.key, c.key), Edge(c.key, a.key), Edge(c.key, tail.key)]
    with pytest.raises(CycleError) as info:
        build([a, b, c, tail], edges)
    cycle = info.value.cycle
    assert set(cycle) == {a.key, b.key, c.key}  # the tail is stuck but not in the cycle
    assert_is_cycle(cycle, edges)
    names = [k[1] for k in cycle]
    path = " -> ".join(f"node[{n}]" for n in [*names, names[0]])
    assert str(info.value) == f"dependency cycle: {path}"
    assert path in ("node[a] -> node[b] -> node[c] -> node[a]",
                    "node[b] -> node[c] -> node[a] -> node[b]",
                    "node[c] -> node[a] -> node[b] -> node[c]")


def test_two_node_cycle():
    a, b = node("a"), node("b")
    edges = [Edge(b.key, a.key), Edge(a.key, b.key)]
    with pytest.raises(CycleError) as info:
        build([a, b], edges)
    assert_is_cycle(info.value.cycle, edges)
    assert len(info.value.cycle) == 2


def test_cycle_through_an_autoedge():
    d, f = file("d", "/srv/a/"), file("f", "/srv/a/f")
    with pytest.raises(CycleError) as info:
        build([d, f], [Edge(f.key, d.key)])
    assert set(info.value.cycle) == {d.key, f.key}


def test_cycle_downstream_of_an_acyclic_part():
    keys = [node(n) for n in "abcde"]
    a, b, c, d, e = (r.key for r in keys)
    edges = [Edge(a, b), Edge(b, c), Edge(c, d), Edge(d, e), Edge(e, c)]
    with pytest.raises(CycleError) as info:
        build(keys, edges)
    assert set(info.value.cycle) == {c, d, e}
    assert_is_cycle(info.value.cycle, edges)


@st.composite
def graphs_with_cycle(draw):
    n = draw(st.integers(2, 12))
    length = draw(st.integers(2, n))
    members = draw(st.permutations(range(n)))[:length]
    extra = draw(st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=15))
    pairs = {(members[i], members[(i + 1) % length]) for i in range(length)}
    pairs |= {(s, t) for s, t in extra if s != t}
    return n, sorted(pairs)


@settings(max_examples=60, deadline=None)
@given(graphs_with_cycle())
def test_any_cycle_found_is_a_real_cycle(case):
    n, pairs = case
    resources = [node(f"n{i:02d}") for i in range(n)]
    edges = [Edge(resources[s].key, resources[t].key) for s, t in pairs]
    with pytest.raises(CycleError) as info:
        build(resources, edges)
    assert_is_cycle(info.value.cycle, edges)


# --- order -------------------------------------------------------------------

def test_order_respects_edges():
    res = {n: node(n) for n in "abcdef"}
    edges = [Edge(res[s].key, res[t].key) for s, t in ("fa", "ab", "ac", "bd", "cd", "de")]
    order = [k[1] for k in build(res.values(), edges).order()]
    assert sorted(order) == sorted("abcdef")
    for s, t in ("fa", "ab", "ac", "bd", "cd", "de"):
        assert order.index(s) < order.index(t)


@st.composite
def dags(draw):
    n = draw(st.integers(1, 20))
    perm = draw(st.permutations(range(n)))
    pairs = set()
    for j in range(1, n):
        for i in draw(st.sets(st.integers(0, j - 1), max_size=min(j, 4))):
            pairs.add((perm[i], perm[j]))
    return n, sorted(pairs)


@settings(max_examples=60, deadline=None)
@given(dags())
def test_order_respects_edges_on_random_dags(case):
    n, pairs = case
    resources = [node(f"n{i:02d}") for i in range(n)]
    edges = [Edge(resources[s].key, resources[t].key) for s, t in pairs]
    graph = build(resources, edges)
    order = graph.order()
    assert sorted(order) == sorted(r.key for r in resources)
    position = {key: i for i, key in enumerate(order)}
    for e in edges:
        assert position[e.source] < position[e.target]


class Provider(Resource):
    """Stands for a kind that provides tokens (a package, a user, a group)."""

    kind = "provider"
    FIELDS = {}

    def __init__(self, name: str, tokens: list[str]) -> None:
        super().__init__(name, {})
        self.tokens = tokens

    def autoedge_provides(self) -> list[str]:
        return self.tokens


def test_file_runs_after_the_package_shipping_it_or_its_directory_only():
    pkg = Provider("nginx", ["pkgfile:/etc/nginx", "pkgfile:/etc/nginx/nginx.conf", "pkgfile:/etc"])
    conf, site = file("conf", "/etc/nginx/nginx.conf"), file("site", "/etc/nginx/sites/x")
    elsewhere = file("other", "/etc/other/x")
    assert edge_pairs(autoedges([pkg, conf, site, elsewhere])) == {("nginx", "conf")}


def test_file_runs_after_its_named_owner_and_group_not_numeric_ones():
    user, group = Provider("www", ["user:www"]), Provider("web", ["group:web"])
    named = file("named", "/srv/x", owner="www", group="web")
    numeric = file("numeric", "/srv/y", owner=33, group="33")
    assert edge_pairs(autoedges([user, group, named, numeric])) == {("www", "named"), ("web", "named")}


def test_a_regular_file_provides_itself_apart_from_directories():
    unit = file("unit", "/etc/systemd/system/x.service")
    # and, for a file of its directory with fragments there, "entry:" (never the directory itself)
    assert unit.autoedge_provides() == ["file:/etc/systemd/system/x.service", "entry:/etc/systemd/system"]
    assert file("gone", "/etc/x", state="absent").autoedge_provides() == []
