"""--graphviz and --graphviz-filter (mgmt's flags, issue 17) on run and engine:
checked before anything starts, passed from the supervisor to its engine."""

from __future__ import annotations

import os

import pytest

from mgmtd.cli import build_parser, check_input
from mgmtd.cluster.graphview import FILTERS
from mgmtd.supervisor.config import NodeConfig
from mgmtd.supervisor.node import Supervisor


def checked(*argv: str):
    args = build_parser().parse_args(list(argv))
    check_input(args, "h1")
    return args


@pytest.mark.parametrize("command", ["run", "engine"])
def test_the_file_is_made_absolute_and_the_filter_is_mgmts_list(command):
    args = checked(command, "--graphviz", "rel/g.dot", "--graphviz-filter", "neato", "empty")
    assert args.graphviz == os.path.abspath("rel/g.dot") and args.graphviz_filter == "neato"
    assert checked(command, "empty").graphviz is None
    assert FILTERS == ("dot", "neato", "twopi", "circo", "fdp", "sfdp", "patchwork", "osage")


def test_a_filter_without_a_file_is_refused():
    with pytest.raises(ValueError, match="^--graphviz-filter: needs --graphviz FILE"):
        checked("run", "--graphviz-filter", "dot", "empty")


def test_a_directory_is_no_file():
    with pytest.raises(ValueError, match="^--graphviz: '/tmp/' is not a file name"):
        checked("engine", "--graphviz", "/tmp/", "empty")


def test_an_unknown_filter_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["run", "--graphviz", "g", "--graphviz-filter", "rm", "empty"])
    assert exit_.value.code == 2 and "invalid choice: 'rm'" in capsys.readouterr().err


def test_an_unknown_filter_from_the_environment_is_one_line(monkeypatch):
    monkeypatch.setenv("MGMTD_GRAPHVIZ_FILTER", "rm")
    with pytest.raises(ValueError, match="^MGMTD_GRAPHVIZ_FILTER: 'rm' is not one of dot, neato"):
        build_parser().parse_args(["run", "empty"])


def test_the_supervisor_passes_them_to_its_engine(tmp_path):
    cfg = NodeConfig(hostname="h1", prefix=str(tmp_path), graphviz="/g.dot", graphviz_filter="circo")
    args = Supervisor._engine_args(type("S", (), {"config": cfg})())
    assert args[args.index("--graphviz") + 1] == "/g.dot"
    assert args[args.index("--graphviz-filter") + 1] == "circo"
    bare = Supervisor._engine_args(type("S", (), {"config": NodeConfig(hostname="h1", prefix="/p")})())
    assert "--graphviz" not in bare and "--graphviz-filter" not in bare
