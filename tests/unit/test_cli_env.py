"""Every flag of run, engine and validate also comes from MGMTD_<FLAG> (issue 17):
its help says so, the variable is honoured, the command line wins, and a bad
value is one line naming the variable."""

from __future__ import annotations

import argparse
import os

import pytest

from mgmtd import cli
from mgmtd.cli import ENV_COMMANDS, build_parser, env_actions, env_name

MINIMAL = {"run": ["run", "empty"], "engine": ["engine", "empty"], "validate": ["validate", "g.yaml"]}


def subparser(command: str) -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[command]


def sample(action: argparse.Action) -> tuple[str, object]:
    """A valid text for the flag's variable and the value it must give."""
    if isinstance(action, argparse._StoreTrueAction):
        return "yes", True
    if action.choices is not None:
        choice = list(action.choices)[-1]
        return str(choice), choice
    if action.type is int:
        return "7", 7
    if action.type in (cli.seconds, cli.converger_seconds):
        return "7.5", 7.5
    if action.type is cli.listen_address:
        return "127.0.0.1:9999", "127.0.0.1:9999"
    if action.type is cli.retention_policy:
        return "last=2,daily=3", cli.parse_policy("last=2,daily=3")
    assert action.type is None, f"{action.dest}: add a sample for type {action.type}"
    return "from-env", "from-env"


FLAGS = [(command, action.dest) for command in ENV_COMMANDS for action in env_actions(subparser(command))]


def test_every_command_is_walked_and_has_flags():
    assert {c for c, _ in FLAGS} == {"run", "engine"}  # validate has no flags (yet)
    assert len(FLAGS) > 20


@pytest.mark.parametrize("command,dest", FLAGS)
def test_every_flag_names_its_variable_in_help_and_is_honoured(monkeypatch, command, dest):
    action = next(a for a in env_actions(subparser(command)) if a.dest == dest)
    variable = env_name(action)
    assert variable == "MGMTD_" + action.option_strings[0][2:].upper().replace("-", "_")
    assert f"(env {variable})" in " ".join(subparser(command).format_help().split())
    text, value = sample(action)
    monkeypatch.setenv(variable, text)
    assert getattr(build_parser().parse_args(MINIMAL[command]), dest) == value


@pytest.mark.parametrize("command,dest", FLAGS)
def test_the_default_stays_without_the_variable(monkeypatch, command, dest):
    for name in [n for n in os.environ if n.startswith("MGMTD_")]:
        monkeypatch.delenv(name)
    args = build_parser().parse_args(MINIMAL[command])
    assert getattr(args, dest) is not cli.UNSET
    assert getattr(args, dest) == subparser(command).env_defaults[dest]


def test_defaults_are_the_documented_ones(monkeypatch):
    monkeypatch.delenv("MGMTD_WORKERS", raising=False)
    monkeypatch.delenv("MGMTD_LOG_LEVEL", raising=False)
    monkeypatch.delenv("MGMTD_NOOP", raising=False)
    args = build_parser().parse_args(["engine", "empty"])
    assert (args.workers, args.log_level, args.noop, args.converged_timeout) == (8, "info", False, None)


def test_the_command_line_wins(monkeypatch):
    monkeypatch.setenv("MGMTD_WORKERS", "3")
    monkeypatch.setenv("MGMTD_NOOP", "1")
    monkeypatch.setenv("MGMTD_HOSTNAME", "env-host")
    args = build_parser().parse_args(["engine", "--workers", "5", "--hostname", "cli-host", "empty"])
    assert (args.workers, args.hostname, args.noop) == (5, "cli-host", True)


@pytest.mark.parametrize("text,value", [("1", True), ("TRUE", True), ("yes", True), ("on", True),
                                        ("0", False), ("false", False), ("No", False), ("off", False),
                                        ("", False)])
def test_boolean_words(monkeypatch, text, value):
    monkeypatch.setenv("MGMTD_NOOP", text)
    assert build_parser().parse_args(["engine", "empty"]).noop is value


@pytest.mark.parametrize("variable,text,message", [
    ("MGMTD_NOOP", "maybe", "MGMTD_NOOP: 'maybe' is not a boolean"),
    ("MGMTD_WORKERS", "x", "MGMTD_WORKERS: 'x': invalid int value"),
    ("MGMTD_CONVERGED_TIMEOUT", "-1", "MGMTD_CONVERGED_TIMEOUT: '-1': must not be negative"),
    ("MGMTD_LOG_LEVEL", "loud", "MGMTD_LOG_LEVEL: 'loud' is not one of debug, info"),
])
def test_a_bad_variable_is_one_line_naming_it(monkeypatch, capsys, variable, text, message):
    monkeypatch.setenv(variable, text)
    assert cli.main(["engine", "--hostname", "h1", "empty"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mgmtd: {message}") and err.count("\n") == 1


def test_a_bad_variable_of_another_command_is_not_read(monkeypatch):
    monkeypatch.setenv("MGMTD_WORKERS", "x")  # engine only: run ignores it
    assert build_parser().parse_args(["run", "empty"]).command == "run"


def test_the_engine_child_loses_the_flag_variables_only():
    environ = {"MGMTD_WORKERS": "x", "MGMTD_NOOP": "1", "MGMTD_DPKG_LOCK_TIMEOUT": "5",
               "MGMTD_GRACE_PERIOD": "3", "PATH": "/bin"}
    cli.drop_flag_variables(environ, "engine")
    assert environ == {"MGMTD_DPKG_LOCK_TIMEOUT": "5", "MGMTD_GRACE_PERIOD": "3", "PATH": "/bin"}


def test_run_drops_them_before_starting_the_supervisor(monkeypatch):
    from mgmtd.supervisor import node

    seen: dict = {}

    class FakeSupervisor:
        def __init__(self, config):
            seen["env"] = dict(os.environ)

        def run(self):
            return 0

    monkeypatch.setattr(node, "Supervisor", FakeSupervisor)
    monkeypatch.setenv("MGMTD_WORKERS", "4")
    monkeypatch.setenv("MGMTD_NOOP", "1")
    assert cli.main(["run", "--hostname", "h1", "--prefix", "/nonexistent/p", "empty"]) == 0
    assert "MGMTD_WORKERS" not in seen["env"] and "MGMTD_NOOP" not in seen["env"]
