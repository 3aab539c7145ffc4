"""The bench's puppet column (issue 19): the whole-process time beside the net
one, and a net time at or under zero shown as the spread of the samples, never
as a negative number. Puppet is not installed here: the runs go through a
stand-in command."""

from __future__ import annotations

import re
import stat

import pytest

from bench import puppet
from bench.common import Deadline, Workspace
from bench.report import main_table


def test_a_positive_net_time_is_a_number():
    net = puppet.Net.of([2.5, 2.7, 2.6], [1.5, 1.6, 1.7])
    assert net.value == pytest.approx(1.0)
    assert net.shown == ""


def test_a_net_time_under_zero_is_shown_as_the_spread_of_the_samples():
    net = puppet.Net.of([1.52, 1.70, 1.61], [1.60, 1.58, 1.75])   # paired: -0.08, +0.12, -0.14
    assert net.value is None
    assert net.shown == "noise: runs 1.52..1.70 s, start-up 1.58..1.75 s"


def test_no_samples_no_figure():
    assert puppet.Net.of([], []) == puppet.Net(None, "-")


def engine_result(puppet_runs: dict) -> dict:
    """What engine_size returns for 100 files, with the puppet samples."""
    return {"cold": 0.05, "nochange": 0.02,
            "runs": {"startup": [0.40, 0.42], "cold": [0.05, 0.06], "nochange": [0.02, 0.02]},
            "puppet_runs": puppet_runs}


def test_rows_put_whole_process_beside_net_and_never_a_negative_number():
    result = engine_result({"empty": [1.60, 1.75], "cold": [1.70, 1.80], "nochange": [1.52, 1.70]})
    rows = puppet.rows(100, result)
    figures = [(r.figure, r.reference) for r in rows]
    assert figures == [
        ("3 engine, 100 files: cold converge", "puppet apply, net of its start-up"),
        ("3 engine, 100 files: cold converge, whole process", "puppet apply, whole process"),
        ("3 engine, 100 files: no-change pass", "puppet apply, net of its start-up"),
        ("3 engine, 100 files: no-change pass, whole process", "puppet apply, whole process"),
    ]
    cold_net, cold_whole, nochange_net, nochange_whole = rows
    assert cold_net.ref_value == pytest.approx(0.075) and cold_net.ratio is not None
    assert nochange_net.ref_value is None and nochange_net.ratio is None
    assert nochange_net.ref_text == "noise: runs 1.52..1.70 s, start-up 1.60..1.75 s"
    assert cold_whole.value == pytest.approx(0.465)        # mgmtd: net + its own start-up
    assert cold_whole.ref_value == pytest.approx(1.75)
    assert nochange_whole.ratio == pytest.approx(0.43 / 1.61)
    table = main_table(rows)
    assert "noise: runs 1.52..1.70 s" in table
    assert not re.search(r"-\d", table), table               # no negative figure anywhere


def test_no_puppet_no_rows():
    assert puppet.rows(100, {"puppet_error": puppet.PUPPET_HINT}) == []
    assert puppet.rows(100, {"cold": 1.0}) == []


def stand_in(tmp_path, code: int):
    """An executable that takes puppet's arguments and exits ``code``."""
    script = tmp_path / f"puppet-{code}"
    script.write_text(f"#!/bin/sh\ntest -f \"$(eval echo \\${{$#}})\" || exit 9\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return [str(script)]


def test_figures_run_every_pass_paired_with_the_empty_manifest(tmp_path):
    wanted = {"/elsewhere/f0": "zero\n", "/elsewhere/f1": "one\n"}
    with Workspace("puppet-test") as ws:
        result = puppet.figures(ws, wanted, 3, Deadline(60, "test"), cmd=stand_in(tmp_path, 2))
        manifest = ws.path("puppet-0.pp").read_text()
    assert "puppet_error" not in result
    assert {k: len(v) for k, v in result["puppet_runs"].items()} == {"empty": 3, "cold": 3, "nochange": 3}
    assert result["puppet_cold_whole"] > 0
    assert "ensure => directory" in manifest and "puppet-out-0/f1" in manifest   # its own directory
    assert "/elsewhere" not in manifest


def test_a_failing_puppet_is_reported_not_counted(tmp_path):
    with Workspace("puppet-test") as ws:
        result = puppet.figures(ws, {"/x/f": "x\n"}, 2, Deadline(60, "test"), cmd=stand_in(tmp_path, 1))
    assert result["puppet_error"].startswith("puppet apply exited 1")
    assert puppet.rows(100, {**engine_result({}), **result}) == []


def test_without_puppet_on_path_the_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(puppet.shutil, "which", lambda name: None)
    with Workspace("puppet-test") as ws:
        assert puppet.figures(ws, {}, 2, Deadline(60, "test")) == {"puppet_error": puppet.PUPPET_HINT}
