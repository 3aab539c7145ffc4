"""Extending a built graph by collected resources (issue 19): the same graph
``build`` makes of everything, without going over the base again."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgmtd.graph import CycleError, Edge, Graph, build, build_base, extend
from mgmtd.resources.base import Meta
from mgmtd.resources.file import FileResource
from mgmtd.resources.user import UserResource
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import GraphSpec


def file(name: str, path: str, autoedge: bool = True) -> FileResource:
    res = FileResource(name, {"path": path}, Meta(autoedge=autoedge))
    res.validate()
    return res


def shape(graph: Graph) -> tuple:
    return (set(graph.resources), {k: set(v) for k, v in graph.requires.items()},
            {k: set(v) for k, v in graph.dependants.items()}, graph.auto, graph.notifies)


PATHS = ["/a/", "/a/b/", "/a/b/c", "/a/d", "/e/", "/e/f/", "/e/f/g", "/h"]

# a resource: (path index, autoedge); explicit edges: pairs of base positions
resources = st.lists(st.tuples(st.integers(0, len(PATHS) - 1), st.booleans()), max_size=8)


@settings(max_examples=300, deadline=None)
@given(base_specs=resources, extra_specs=resources,
       edge_picks=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.booleans()), max_size=4))
def test_an_extended_graph_is_the_graph_built_of_everything(base_specs, extra_specs, edge_picks):
    base = [file(f"b{i}", PATHS[p], auto) for i, (p, auto) in enumerate(base_specs)]
    extra = [file(f"x{i}", PATHS[p], auto) for i, (p, auto) in enumerate(extra_specs)]
    edges = [Edge(base[s].key, base[t].key, notify) for s, t, notify in edge_picks
             if s < len(base) and t < len(base) and s != t]
    try:
        kept = build_base(base, edges)
    except CycleError:
        return   # no base graph to extend
    built_base = kept.graph
    extended = extend(kept, extra)
    try:
        whole = build([*base, *extra], edges)
    except CycleError:
        assert extended is None   # only build names the cycle
        return
    assert extended is not None and shape(extended) == shape(whole)
    assert shape(built_base) == shape(build(base, edges))   # the base is left as it was


def test_an_extra_resource_named_as_a_base_one_is_left_to_build():
    base = build_base([file("f", "/a/f")], [])
    assert extend(base, [file("f", "/a/other")]) is None


def test_a_spec_extends_its_own_graph_and_names_a_cycle_a_collected_resource_closes():
    """y (/m/n/y) runs before the user www (an explicit edge); a collected
    directory /m/n/ owned by www runs after its owner and before what is in
    it: y -> www -> /m/n/ -> y, which the error names as the full build does."""
    y, www = file("y", "/m/n/y"), UserResource("www", {})
    spec = GraphSpec(name="g", source="g.yaml", resources=[y, www], edges=[Edge(y.key, www.key)])
    first = spec.build([file("c", "/m/")])
    assert first.requires[y.key] == {("file", "c"), } and first.requires[www.key] == {y.key}
    assert spec.base is not None and spec.base[0].graph is not first
    again = spec.build([file("c2", "/m/")])
    assert again.resources[y.key] is y and again.requires[y.key] == {("file", "c2")}
    owned = FileResource("c", {"path": "/m/n/", "owner": "www"})
    owned.validate()
    with pytest.raises(GraphError, match="dependency cycle"):
        spec.build([owned])
