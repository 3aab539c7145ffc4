"""mgmt's converger flags (issue 17): --converger-timeout (reports), --converged-exit
(exits), our --converged-timeout (exits, as before), --converger-status-file,
--max-runtime."""

from __future__ import annotations

import os
import stat

import pytest

from mgmtd import cli
from mgmtd.cli import build_parser, check_input, converger_settings
from mgmtd.engine.main import append_converger_status
from mgmtd.supervisor.config import NodeConfig
from mgmtd.supervisor.node import Supervisor, max_runtime_over


@pytest.mark.parametrize("ours,mgmts,exit_flag,expected", [
    (None, None, False, (None, None)),      # neither: converged after 3 s, reported only
    (5.0, None, False, (5.0, None)),        # ours exits, as it always did
    (None, 5.0, False, (None, 5.0)),        # mgmt's alone: reports converged, runs on
    (None, 5.0, True, (5.0, None)),         # mgmt's with --converged-exit: exits
    (5.0, 5.0, True, (5.0, None)),          # both, agreeing
    (5.0, None, True, (5.0, None)),
])
def test_converger_settings(ours, mgmts, exit_flag, expected):
    assert converger_settings(ours, mgmts, exit_flag) == expected


def test_converged_exit_alone_is_refused_not_ignored():
    with pytest.raises(ValueError, match="^--converged-exit: needs --converger-timeout"):
        converger_settings(None, None, True)


def test_disagreeing_timeouts_are_refused():
    with pytest.raises(ValueError, match="--converged-timeout 5 and --converger-timeout 7 disagree"):
        converger_settings(5.0, 7.0, False)


def parsed(*argv: str):
    args = build_parser().parse_args(["engine", "--hostname", "h1", *argv, "empty"])
    check_input(args, "h1")
    return args


def test_flags_reach_the_args(tmp_path):
    args = parsed("--converger-timeout", "2", "--converger-status-file", "rel/status",
                  "--max-runtime", "9")
    assert (args.converged_timeout, args.converged_after, args.max_runtime) == (None, 2.0, 9.0)
    assert args.converger_status_file == os.path.abspath("rel/status")
    assert parsed("--converger-timeout", "-1").converged_after is None  # mgmt's "never"
    assert parsed("--converger-timeout", "2", "--converged-exit").converged_timeout == 2.0
    assert cli.main(["engine", "--hostname", "h1", "--converged-exit", "empty"]) == 2


def test_status_file_lines_as_mgmt(tmp_path):
    path = str(tmp_path / "status")
    append_converger_status(path, True)
    append_converger_status(path, False)
    append_converger_status(path, True)
    assert open(path).read() == "true\nfalse\ntrue\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("limit,elapsed,over", [(0, 1e9, False), (5, 4.9, False), (5, 5, True)])
def test_max_runtime_over(limit, elapsed, over):
    assert max_runtime_over(limit, elapsed) is over


def test_the_supervisor_passes_them_to_its_engine(tmp_path):
    cfg = NodeConfig(hostname="h1", prefix=str(tmp_path), converged_after=2.0,
                     converger_status_file="/s", max_runtime=9.0)
    args = Supervisor._engine_args(type("S", (), {"config": cfg})())
    assert args[args.index("--converger-timeout") + 1] == "2.0"
    assert args[args.index("--converger-status-file") + 1] == "/s"
    assert "--converged-timeout" not in args and "--max-runtime" not in args  # the supervisor's own


def test_tmp_prefix_and_prefix_are_refused_together():
    args = build_parser().parse_args(["run", "--hostname", "h1", "--prefix", "/p", "--tmp-prefix", "empty"])
    with pytest.raises(ValueError, match="^--tmp-prefix: not with --prefix"):
        check_input(args, "h1")


def test_default_prefix():
    assert cli.default_prefix({}) == "/var/lib/mgmtd"
    assert cli.default_prefix({"STATE_DIRECTORY": "/var/lib/mgmtd2:/other"}) == "/var/lib/mgmtd2"


def test_the_supervisor_passes_the_graph_flags(tmp_path):
    cfg = NodeConfig(hostname="h1", prefix=str(tmp_path), no_autoedges=True, no_autogroup=True)
    args = Supervisor._engine_args(type("S", (), {"config": cfg})())
    assert "--no-autoedges" in args and "--no-autogroup" in args
