"""The machine tests configure nodes exactly as docs/operations.md tells
operators to (tests/system/fleet.py writes /etc/default/mgmtd)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.system.fleet import mgmtd_defaults

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_opts() -> list[str]:
    return re.findall(r'^MGMTD_OPTS="(--hostname .*)"$', OPERATIONS.read_text(), flags=re.M)


def opts_of(defaults: str) -> str:
    return re.search(r'^MGMTD_OPTS="(.*)"$', defaults, flags=re.M).group(1)


def test_the_first_and_a_joining_node_are_configured_as_the_guide_says():
    first, joining = documented_opts()[:2]
    assert opts_of(mgmtd_defaults("n1", "10.0.0.10", 3, [])) == first
    assert opts_of(mgmtd_defaults("n2", "10.0.0.11", None, ["http://10.0.0.10:2379"])) == joining


def test_the_graph_comes_from_the_default_file():
    assert 'MGMTD_FRONTEND="yaml /etc/mgmtd/graph.yaml"' in mgmtd_defaults("n1", "10.0.0.10", 3, [])
    assert 'MGMTD_FRONTEND="yaml /etc/mgmtd/graph.yaml"' in OPERATIONS.read_text()
