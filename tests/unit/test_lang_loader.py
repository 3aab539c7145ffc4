"""Located warnings for what mgmt ignores, and kv resources sharing a key."""

from __future__ import annotations

import pytest

from mgmtd.cli import main
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import load_text


def kv(name: str, value, skip: bool | None = True, style=None) -> str:
    text = f"  - name: {name}\n    key: stage\n    value: {value}\n"
    if skip is not None:
        text += f"    skiplessthan: {str(skip).lower()}\n"
    if style is not None:
        text += f"    skipcmpstyle: {style}\n"
    return text


def kv_graph(*items: str) -> str:
    return "graph: g\nresources:\n  kv:\n" + "".join(items)


def test_remote_is_loaded_with_a_located_warning():
    spec = load_text("graph: g\ncomment: hi\nresources:\n  noop:\n  - name: n\nremote: ssh://x\n", "g.yaml")
    assert [str(w) for w in spec.warnings] == [
        "g.yaml:6:1: warning: top-level key 'remote' is ignored: mgmt ignores it too (its remote "
        "execution over SSH is gone); mgmtd runs the graph on this host only"]
    assert [r.name for r in spec.resources] == ["n"]


def test_comment_is_not_a_warning_and_unknown_keys_are_still_refused():
    assert load_text("graph: g\ncomment: a note\n").warnings == []
    with pytest.raises(GraphError, match=r"g.yaml:2:1: unknown top-level key 'remot'"):
        load_text("graph: g\nremot: x\n", "g.yaml")


def test_validate_prints_the_warning_and_succeeds(tmp_path, capsys):
    graph = tmp_path / "g.yaml"
    graph.write_text("graph: g\nremote: ssh://x\n")
    assert main(["validate", str(graph)]) == 0
    out = capsys.readouterr()
    assert f"mgmtd: {graph}:2:1: warning: top-level key 'remote' is ignored" in out.err
    assert ": ok: graph g" in out.out


def test_several_kv_with_skiplessthan_share_a_key():
    spec = load_text(kv_graph(kv("a", 1), kv("b", '"2"'), kv("c", 3)))
    assert sorted(r.name for r in spec.resources) == ["a", "b", "c"]
    spec = load_text(kv_graph(kv("a", "x", style="string"), kv("b", "y", style=1)))
    assert len(spec.resources) == 2


@pytest.mark.parametrize("second", [
    kv("b", 2, skip=None),              # one without skiplessthan fights the others
    kv("b", 2, skip=False),
    kv("b", "2", style="string"),       # compared differently: no single greatest value
])
def test_kv_on_one_key_that_would_fight_are_refused(second):
    with pytest.raises(GraphError, match=r"kv\[b\]: manages the same object as kv\[a\] \(line 4\)"):
        load_text(kv_graph(kv("a", 1), second))


def test_kv_without_value_cannot_share():
    text = kv_graph(kv("a", 1), "  - name: b\n    key: stage\n    skiplessthan: true\n")
    with pytest.raises(GraphError, match="manages the same object"):
        load_text(text)


def test_kv_sharing_is_checked_against_every_earlier_one():
    with pytest.raises(GraphError, match=r"kv\[c\]: manages the same object as kv\[a\]"):
        load_text(kv_graph(kv("a", 1), kv("b", 2), kv("c", 3, skip=False)))


def test_shipped_examples_load_without_warnings():
    # our own examples show mgmt's current way (meta.timeout, no remote:), never an old field
    from pathlib import Path

    from mgmtd.yamlgraph.loader import load_file

    examples = sorted((Path(__file__).resolve().parents[2] / "examples" / "yaml").glob("*.yaml"))
    assert any(path.name == "notify1.yaml" for path in examples)
    for path in examples:
        assert load_file(str(path)).warnings == [], path.name
