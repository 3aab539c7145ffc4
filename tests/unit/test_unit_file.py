"""The shipped systemd unit and defaults file."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "mgmtd.service"
DEFAULTS = ROOT / "systemd" / "mgmtd.default"


def settings(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", text, flags=re.M))


def test_unit_has_what_a_notify_daemon_needs():
    unit = settings(UNIT.read_text())
    assert unit["Type"] == "notify"
    assert unit["KillMode"] == "mixed"
    assert unit["Restart"] == "on-failure"
    assert unit["StateDirectory"] == "mgmtd"
    assert unit["EnvironmentFile"] == "-/etc/default/mgmtd"
    assert "WatchdogSec" in unit and "ExecReload" in unit and "-HUP" in unit["ExecReload"]
    assert int(unit["TimeoutStopSec"].rstrip("s")) >= 30  # leave etcd time to stop cleanly
    # the agent manages the whole system: these would stop it doing its job
    for forbidden in ("ProtectSystem", "ProtectHome", "PrivateTmp", "ReadOnlyPaths"):
        assert forbidden not in unit


def test_every_run_flag_is_documented_in_the_defaults_file():
    from mgmtd.cli import build_parser

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    # hidden ones are mgmt's flags mgmtd refuses (mgmtd/mgmtflags.py): nothing to set there
    flags = {opt for action in run._actions for opt in action.option_strings
             if opt.startswith("--") and opt != "--help" and action.help != argparse.SUPPRESS}
    text = DEFAULTS.read_text()
    missing = sorted(flag for flag in flags if flag not in text)
    assert not missing, f"undocumented in mgmtd.default: {missing}"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    mgmtd = Path(sys.executable).parent / "mgmtd"
    unit = tmp_path / "mgmtd.service"
    unit.write_text(UNIT.read_text().replace("/opt/mgmtd/bin/mgmtd", str(mgmtd)))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if "mgmtd.service" in line and "network-online" not in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr
