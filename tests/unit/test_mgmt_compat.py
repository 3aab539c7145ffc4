"""docs/yaml.md's "Compatibility with mgmt" table stays true (issue 17): it
has one row for every meta parameter, kind, field, graph key and `run` flag
that mgmt documents (tests/data/mgmt_inventory.json, made from mgmt's sources
by scripts/mgmt_inventory.py), and mgmtd does what each row says: a "same" or
"different" item is taken, a "refused" one is refused with a located error
that says it is not supported. Nothing is accepted and silently ignored."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from mgmtd.cli import build_parser
from mgmtd.mgmtflags import REFUSED_RUN_FLAGS
from mgmtd.resources import KINDS, MGMT_ONLY_KINDS
from mgmtd.resources.base import Meta
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import load_text

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = json.loads((ROOT / "tests/data/mgmt_inventory.json").read_text())
ROW = re.compile(r"^\| `([^`]+)` \| (same|different|refused) \|(.*)\|\s*$")
VERDICTS = ("same", "different", "refused")

# a value for each meta parameter, as a graph would write it: the "same" and
# "different" ones must load with it, the "refused" ones must be refused
META_SAMPLES = {
    "noop": "true", "retry": "2", "retryreset": "true", "delay": "100", "timeout": "1000",
    "poll": "5", "limit": "2", "burst": "1", "reset": "true", "sema": '["lock:2"]',
    "rewatch": "true", "realize": "true", "dollar": "true", "hidden": "true",
    "export": '["*"]', "reverse": "true", "autoedge": "false", "autogroup": "false",
}


def table() -> dict[str, tuple[str, str]]:
    text = (ROOT / "docs/yaml.md").read_text()
    start = text.index("\n## Compatibility with mgmt\n")
    end = text.find("\n## ", start + 1)
    rows: dict[str, tuple[str, str]] = {}
    for line in text[start:end if end > 0 else None].splitlines():
        if line.startswith("| `"):
            match = ROW.match(line)
            assert match, f"docs/yaml.md: a row that does not read `item` | verdict | note: {line}"
            item, verdict, note = match.groups()
            assert item not in rows, f"docs/yaml.md: {item} has two rows"
            rows[item] = (verdict, note.strip())
    return rows


def inventory_items() -> list[str]:
    items = [*INVENTORY["top_level"], *(f"edges.{k}" for k in INVENTORY["edge"]),
             *(f"edges.from.{k}" for k in INVENTORY["edge_end"]),
             *(f"collect.{k}" for k in INVENTORY["collect"]),
             *(f"meta.{k}" for k in INVENTORY["meta"]), *INVENTORY["run_flags"]]
    for kind, fields in INVENTORY["kinds"].items():
        items.append(kind)
        if kind in KINDS:
            items += [f"{kind}.{field}" for field in fields]
    return items


ROWS = table()


def test_every_mgmt_item_has_exactly_one_row_and_no_row_is_stale():
    items = inventory_items()
    assert sorted(set(items) - set(ROWS)) == [], "mgmt items without a row in docs/yaml.md"
    assert sorted(set(ROWS) - set(items)) == [], "rows for items mgmt does not have"


def test_every_difference_and_refusal_says_how_or_why():
    for item, (verdict, note) in ROWS.items():
        assert "TBD" not in note, item
        if verdict != "same":
            assert len(note) > 10, f"{item}: {verdict} without saying how or why"


def load(graph: str) -> None:
    load_text(graph, "g.yaml")


def refusal(graph: str) -> str:
    with pytest.raises(GraphError) as info:
        load(graph)
    message = str(info.value)
    assert re.match(r"^g\.yaml:\d+:\d+: ", message), message  # located
    return message


def file_graph(extra: str) -> str:
    return f'graph: g\nresources:\n  file:\n  - name: f\n    path: "/tmp/x"\n{extra}'


@pytest.mark.parametrize("param", INVENTORY["meta"])
def test_meta_parameters_do_what_their_row_says(param):
    verdict, _ = ROWS[f"meta.{param}"]
    assert param in Meta.FIELDS, f"meta.{param}: unknown to mgmtd (add it to Meta.FIELDS)"
    graph = file_graph(f"    meta:\n      {param}: {META_SAMPLES[param]}\n")
    if param == "limit":
        graph += "      burst: 1\n"
    if verdict == "refused":
        assert "not supported" in refusal(graph)
    else:
        load(graph)


@pytest.mark.parametrize("kind", sorted(INVENTORY["kinds"]))
def test_kinds_do_what_their_row_says(kind):
    verdict, _ = ROWS[kind]
    assert (kind in MGMT_ONLY_KINDS) == (verdict == "refused") == (kind not in KINDS), kind
    if verdict == "refused":
        message = refusal(f"graph: g\nresources:\n  {kind}:\n  - name: x\n")
        assert f"resource kind {kind!r} (mgmt's) is not supported by mgmtd" in message
        return
    cls = KINDS[kind]
    for field in INVENTORY["kinds"][kind]:
        field_verdict, _ = ROWS[f"{kind}.{field}"]
        if field_verdict == "refused":
            assert field in cls.UNSUPPORTED and field not in cls.FIELDS, f"{kind}.{field}"
            message = refusal(f"graph: g\nresources:\n  {kind}:\n  - name: x\n    {field}: 1\n")
            assert f"{kind}.{field} (mgmt's field) is not supported: " in message
        else:
            assert field in cls.FIELDS, f"{kind}.{field}: the row says {field_verdict}, mgmtd lacks it"
    assert set(cls.UNSUPPORTED) <= set(INVENTORY["kinds"][kind]), f"{kind}: refusals of non-mgmt fields"


def test_the_graph_keys_do_what_their_rows_say():
    for key in INVENTORY["top_level"] + [f"edges.{k}" for k in INVENTORY["edge"]] + \
            [f"collect.{k}" for k in INVENTORY["collect"]]:
        assert ROWS[key][0] != "refused", f"{key}: a refusal needs a test here"
    load("graph: g\ncomment: free text\nresources:\n  noop:\n  - name: a\n  - name: b\n"
         "edges:\n- name: e\n  from: {kind: noop, name: a}\n  to: {kind: noop, name: b}\n"
         "  notify: true\ncollect:\n- kind: file\n  pattern: /srv/\n")


def run_parser() -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["run"]


@pytest.mark.parametrize("flag", INVENTORY["run_flags"])
def test_run_flags_do_what_their_row_says(flag, capsys):
    verdict, _ = ROWS[flag]
    parser = run_parser()
    shown = {option for action in parser._actions if action.help is not argparse.SUPPRESS
             for option in action.option_strings}
    if verdict == "refused":
        assert flag in REFUSED_RUN_FLAGS and flag not in shown
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args(["run", flag, "empty"])
        assert info.value.code == 2
        assert f"{flag}: mgmt's flag is not supported by mgmtd: " in capsys.readouterr().err
    else:
        assert flag in shown, f"{flag}: the row says {verdict}, `mgmtd run --help` lacks it"
