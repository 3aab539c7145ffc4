"""Bad input never crashes the loader: any text is either a graph or one
GraphError line with FILE:LINE:COL."""

from __future__ import annotations

import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import load_text

SOURCE = "fuzz.yaml"
ONE_LINE = re.compile(r"^fuzz\.yaml:\d+:\d+: [^\n]+$")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True), st.text(max_size=30),
    st.sampled_from(["/tmp/x", "relative", "@@x", "0644", "exists", "absent", "file", "..", "/a/../b",
                     "\u202e", "💥", "x" * 5000]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["graph", "resources", "edges", "collect", "file", "exec", "name", "path",
                         "content", "state", "mode", "meta", "from", "to", "kind", "pattern", "set",
                         "hosts", "retry", "notify", "cmd", "bogus"]) | st.text(max_size=8),
        inner, max_size=5),
    max_leaves=25,
)

field_values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=4), scalars,
                                                                               max_size=2))
file_resource = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=12), scalars)},
    optional={"path": field_values, "content": field_values, "state": field_values,
              "mode": field_values, "meta": st.dictionaries(st.sampled_from(
                  ["retry", "delay", "poll", "noop", "autoedge", "bogus"]), scalars, max_size=3),
              "recurse": field_values, "bogus": field_values},
)
near_graphs = st.fixed_dictionaries(
    {"graph": scalars, "resources": st.fixed_dictionaries({}, optional={
        "file": st.lists(file_resource, max_size=4), "noop": st.lists(
            st.fixed_dictionaries({"name": st.text(max_size=6)}), max_size=2)})},
    optional={"edges": st.lists(st.fixed_dictionaries({"from": documents, "to": documents}), max_size=2),
              "collect": st.lists(st.dictionaries(st.sampled_from(["kind", "pattern", "set", "hosts"]),
                                                  documents, max_size=3), max_size=2)},
)


def check(text: str) -> None:
    try:
        load_text(text, SOURCE)
    except GraphError as err:
        assert ONE_LINE.match(str(err)), repr(str(err))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents(doc):
    check(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_graphs)
def test_graphs_near_the_schema(doc):
    check(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_random_text(text):
    check(text)


def test_deep_nesting_and_huge_values():
    check("a: " + "[" * 5000 + "]" * 5000)
    check("resources:\n  file:\n  - name: x\n    path: /x\n    content: '" + "y" * 2_000_000 + "'\n")
    check("resources:\n  file:\n  - name: x\n    path: /x\n    mode: 99999999999999999999999\n")
    check("&a [*a]")
    check("a: &a\n  b: *a\n")
    check("- !!python/object:os.system 'true'\n")


BROKEN = {
    "graph: [unclosed": "YAML syntax error",
    "resources:\n  file:\n  - name: a\n    path: /x\n  - name: a\n    path: /y\n": "duplicate name",
    "resources:\n  augeas:\n  - name: a\n": "resource kind 'augeas' (mgmt's) is not supported by mgmtd",
    "resources:\n  augeus:\n  - name: a\n": "unknown resource kind 'augeus'",
    "resources:\n  pkg:\n  - name: A\n": "not a Debian package name",
    "resources:\n  file:\n  - name: a\n    path: /x\n    colour: red\n": "unknown field 'colour'",
    "resources:\n  file:\n  - name: a\n    path: /x\n    content: 5\n": "must be string",
    "resources:\n  file:\n  - name: a\n    path: x\n": "path must be absolute",
    "resources:\n  file:\n  - name: a\n    path: /x\nedges:\n- from: {kind: file, name: a}\n"
    "  to: {kind: file, name: b}\n": "does not exist",
    "nonsense: 1\n": "unknown top-level key",
    "- a\n- b\n": "must be a mapping",
}


def test_corpus_of_broken_graphs():
    for text, fragment in BROKEN.items():
        try:
            load_text(text, SOURCE)
        except GraphError as err:
            assert ONE_LINE.match(str(err)), str(err)
            assert fragment in str(err), (fragment, str(err))
        else:
            raise AssertionError(f"accepted: {text!r}")
