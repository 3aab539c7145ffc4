"""The loader's own composing (one parse, resources built as their entries
are composed, nodes without a dict) gives what PyYAML's compose gives, and
leaves every text it does not handle, and every error, to PyYAML's way."""

from __future__ import annotations

import pytest
import yaml

from mgmtd.yamlgraph import compose as composing
from mgmtd.yamlgraph import loader
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import load_file, load_text

TEXTS = [
    "a: [1, {b: c, d: }, [], {}, ? e, -1]\nz:\n  - \n  -\n  - {?,}\n",
    "",
    "# only a comment\n",
    "x",
    "- 0644\n- yes\n- ~\n- '1'\n- 1.5\n- 2001-01-01\n- \"a\\tb\"\n- |\n  two\n  lines\n",
    "graph: g\nresources:\n  file:\n  - name: a\n    path: /tmp/a\n    meta: {retry: 2}\n",
]


def same(a: yaml.Node | None, b: yaml.Node | None) -> bool:
    if a is None or b is None:
        return a is b
    if a.tag != b.tag or a.id != b.id:
        return False
    if (a.start_mark.line, a.start_mark.column) != (b.start_mark.line, b.start_mark.column):
        return False
    if isinstance(a, yaml.ScalarNode):
        return a.value == b.value and a.style == b.style
    if len(a.value) != len(b.value):
        return False
    if isinstance(a, yaml.MappingNode):
        return all(same(k1, k2) and same(v1, v2) for (k1, v1), (k2, v2) in zip(a.value, b.value, strict=True))
    return all(same(x, y) for x, y in zip(a.value, b.value, strict=True))


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("as_bytes", [False, True])
def test_same_nodes_as_pyyaml(text, as_bytes):
    mine = composing.compose(text.encode() if as_bytes else text, 10**6, loader.SAFE_LOADER)
    assert same(mine, yaml.compose(text, Loader=loader.SAFE_LOADER))


@pytest.mark.parametrize("text", ["a: &x 1\n", "a: !!str 1\n", "--- 1\n--- 2\n", "a: &x [1]\nb: *x\n"])
def test_unusual_texts_are_left_to_pyyaml(text):
    with pytest.raises(composing.Fallback):
        composing.compose(text, 10**6, loader.SAFE_LOADER)


def test_budget():
    with pytest.raises(composing.TooBig):
        composing.compose("[" + "a," * 100 + "]", 50, loader.SAFE_LOADER)


def graph(anchor: str = "") -> str:
    return ("graph: g\nresources:\n  file:\n"
            f"  - name: a\n    path: /tmp/a\n    content: {anchor}hello\n"
            "  - name: b\n    path: /tmp/b\n")


@pytest.mark.parametrize("as_file", [False, True])
def test_anchor_falls_back_without_building_twice(tmp_path, as_file):
    """An anchor (no alias) is left to PyYAML after some resources were built:
    they are built again once, not reported as duplicates."""
    text = graph("&greeting ")
    if as_file:
        path = tmp_path / "g.yaml"
        path.write_text(text)
        spec = load_file(str(path))
    else:
        spec = load_text(text)
    assert [r.name for r in spec.resources] == ["a", "b"]
    assert spec.resources[0].content == "hello"


def test_resource_error_waits_for_a_later_syntax_error(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("graph: g\nresources:\n  file: [a, b\n")
    with pytest.raises(GraphError, match="YAML syntax error"):
        load_file(str(path))


def test_too_many_nodes_is_located(monkeypatch):
    monkeypatch.setattr(loader, "MAX_NODES", 30)
    text = "graph: g\nresources:\n  file:\n" + "".join(
        f"  - name: f{i}\n    path: /tmp/f{i}\n" for i in range(10))
    with pytest.raises(GraphError, match="beyond 30 YAML nodes") as info:
        load_text(text, "g.yaml")
    assert str(info.value).startswith("g.yaml:")
