"""exec's fields as mgmt's engine/resources/exec.go defines them (issue 17):
one test per field, each against real processes under tmp_path."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from mgmtd.resources import execproc
from mgmtd.resources.base import FieldError, ResourceError
from mgmtd.resources.exec import ExecResource
from mgmtd.resources.execproc import Credential, credential, environment, signal_number
from mgmtd.resources.execwatch import concerns, directories_to_watch
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import load_text
from tests.harness import wait_for
from tests.unit.test_kinds import Pokes, make, runs


def appender(log, **params) -> ExecResource:
    return make(ExecResource, cmd=f"echo ran >> {log}", shell="/bin/sh", **params)


# --- env, cwd ------------------------------------------------------------------------

def test_env_is_the_whole_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MGMTD_SECRET_OF_THE_AGENT", "leak")
    out = tmp_path / "env"
    make(ExecResource, cmd=f"env > {out}", shell="/bin/sh", env={"A": "1", "B": 2}).check_apply(True)
    lines = set(out.read_text().splitlines())
    assert {"A=1", "B=2"} <= lines
    assert not any(line.startswith("MGMTD_SECRET_OF_THE_AGENT=") for line in lines)
    # without env: empty, yet a program is still found on mgmtd's PATH, as mgmt's Go finds it
    make(ExecResource, cmd="env", args=[]).check_apply(True)
    res = make(ExecResource, cmd=f"sh -c 'env > {out}'")
    res.check_apply(True)
    assert "MGMTD_SECRET_OF_THE_AGENT" not in out.read_text()
    assert environment(None) == {}


@pytest.mark.parametrize("name", ["", "1A", "A-B", "A=B", "Ä", "A B"])
def test_env_names_follow_mgmts_rule(name):
    with pytest.raises(FieldError, match="bad environment variable name"):
        ExecResource("e", {"cmd": "true", "env": {name: "x"}}).validate()
    ExecResource("e", {"cmd": "true", "env": {"_a1": "x", "PATH": "/bin"}}).validate()


def test_guard_commands_default_to_mgmtds_cwd_not_cwd(tmp_path):
    # mgmt: ifcwd, nifcwd, watchcwd, donecwd are each "the working directory of mgmt" when unset
    (tmp_path / "work").mkdir()
    res = make(ExecResource, cmd="pwd", cwd=str(tmp_path / "work"),
               ifcmd=f"sh -c 'pwd > {tmp_path}/ifpwd'")
    res.check_apply(True)
    assert (tmp_path / "ifpwd").read_text().strip() == os.getcwd()
    res = make(ExecResource, cmd="true", ifcwd=str(tmp_path), ifcmd="sh -c 'pwd > ifpwd2'")
    res.check_apply(True)
    assert (tmp_path / "ifpwd2").read_text().strip() == str(tmp_path)


# --- ifequals, ifequals_stdout, nifcmd --------------------------------------------------

def test_ifequals_compares_the_whole_output(tmp_path):
    log = tmp_path / "log"
    same = appender(log, ifcmd="sh -c 'echo out; echo err >&2'", ifequals="out\nerr\n")
    assert same.check_apply(True) is True and runs(log) == 0
    assert "equals ifequals" in same.ctx.report.text("debug")
    other = appender(log, ifcmd="echo out", ifequals="out")   # the newline counts
    assert other.check_apply(True) is False and runs(log) == 1
    empty = appender(log, ifcmd="true", ifequals="")          # '' is a value, not "unset"
    assert empty.check_apply(True) is True and runs(log) == 1


def test_ifequals_stdout_ignores_stderr(tmp_path):
    log = tmp_path / "log"
    res = appender(log, ifcmd="sh -c 'echo ok; echo warning >&2'", ifequals_stdout="ok\n")
    assert res.check_apply(True) is True and runs(log) == 0
    res = appender(log, ifcmd="sh -c 'echo ok; echo warning >&2'", ifequals="ok\n")
    assert res.check_apply(True) is False and runs(log) == 1


@pytest.mark.parametrize("guard", ["ifcmd", "nifcmd"])
def test_a_guard_killed_by_a_signal_is_an_error(tmp_path, guard):
    log = tmp_path / "log"
    res = appender(log, **{guard: "sh -c 'kill -KILL $$'"})
    with pytest.raises(ResourceError, match=f"{guard} .* failed: killed by signal SIGKILL"):
        res.check_apply(True)
    assert runs(log) == 0


def test_ifequals_needs_an_ifcmd():
    with pytest.raises(FieldError, match="there is no ifcmd"):
        ExecResource("e", {"cmd": "true", "ifequals": "x"}).validate()


def test_nifcmd_blocks_when_it_succeeds(tmp_path):
    log, flag = tmp_path / "log", tmp_path / "flag"
    res = appender(log, nifcmd=f"test -e {flag}")
    assert res.check_apply(True) is False and runs(log) == 1
    assert res.check_apply(True) is False and runs(log) == 2   # a guard: it is the state
    flag.touch()
    assert res.check_apply(True) is True and runs(log) == 2
    assert "nifcmd exited with status 0" in res.ctx.report.text("debug")


def test_nifcmd_runs_in_nifcwd_with_nifshell(tmp_path):
    log = tmp_path / "log"
    (tmp_path / "here").touch()
    res = appender(log, nifcmd="test -e here && true", nifshell="/bin/sh", nifcwd=str(tmp_path))
    assert res.check_apply(True) is True and runs(log) == 0


# --- creates (stat, like mgmt: a dangling symlink does not count) -----------------------

def test_creates_follows_symlinks(tmp_path):
    log, link = tmp_path / "log", tmp_path / "link"
    link.symlink_to(tmp_path / "missing")
    res = appender(log, creates=str(link))
    assert res.check_apply(True) is False and runs(log) == 1


# --- mtimes ------------------------------------------------------------------------------

def test_mtimes_force_a_run_past_the_guards(tmp_path):
    log, source = tmp_path / "log", tmp_path / "source"
    source.write_text("v1")
    res = appender(log, mtimes=[str(source)], ifcmd="false")
    assert res.check_apply(True) is False and runs(log) == 1   # first run: no record yet
    assert res.check_apply(True) is True and runs(log) == 1    # ifcmd false blocks again
    time.sleep(0.01)   # a modification time surely after the run's
    now = time.time()
    os.utime(source, (now, now))
    assert res.check_apply(True) is False and runs(log) == 2
    assert res.check_apply(True) is True and runs(log) == 2


def test_mtimes_missing_file_is_an_error(tmp_path):
    res = appender(tmp_path / "log", mtimes=[str(tmp_path / "nope")])
    with pytest.raises(ResourceError, match="mtimes: cannot stat .*nope"):
        res.check_apply(True)


def test_mtimes_and_watchfiles_must_be_absolute():
    for name in ("mtimes", "watchfiles"):
        with pytest.raises(FieldError) as info:
            ExecResource("e", {"cmd": "true", name: ["relative"]}).validate()
        assert info.value.field == name


# --- watchfiles ---------------------------------------------------------------------------

def test_watchfiles_poke_and_rerun(tmp_path):
    log, watched, tree = tmp_path / "log", tmp_path / "sub" / "file", tmp_path / "tree"
    tree.mkdir()
    res = appender(log, watchfiles=[str(watched), f"{tree}/"])
    assert res.check_apply(True) is False and res.check_apply(True) is True
    pokes = Pokes()
    stop = res.start_watch(pokes)
    try:
        (tmp_path / "unrelated").write_text("x")
        (tmp_path / "sub").mkdir()                 # on the way to the watched file
        wait_for(lambda: pokes.count >= 1, 5, "a poke for the parent directory")
        seen = pokes.count
        watched.write_text("x")
        wait_for(lambda: pokes.count > seen, 5, "a poke for the file")
        seen = pokes.count
        (tree / "deep").mkdir()
        wait_for(lambda: pokes.count > seen, 5, "a poke for a new directory in the tree")
        seen = pokes.count   # the new directory is watched before the poke
        (tree / "deep" / "leaf").write_text("x")   # under a recursive target, in a new directory
        wait_for(lambda: pokes.count > seen, 5, "a poke deep in the tree")
        assert res.check_apply(True) is False and runs(log) == 2
    finally:
        stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("files-exec")]


def test_watched_paths_are_matched_exactly():
    targets = [("/a/b/file", False), ("/t", True)]
    assert concerns("/a/b/file", targets) and concerns("/a/b", targets) and concerns("/a", targets)
    assert not concerns("/a/b/other", targets) and not concerns("/a/bb", targets)
    assert concerns("/t/x/y", targets) and not concerns("/tt", targets)
    assert not concerns("/a/b/file/x", [("/a/b/file", False)])


def test_directories_to_watch(tmp_path):
    (tmp_path / "t" / "d").mkdir(parents=True)
    got = directories_to_watch([(str(tmp_path / "x" / "y" / "f"), False), (str(tmp_path / "t"), True)])
    assert got == {str(tmp_path), str(tmp_path / "t"), str(tmp_path / "t" / "d")}


def test_creates_is_watched(tmp_path):
    made = tmp_path / "made"
    res = make(ExecResource, cmd=f"touch {made}", creates=str(made))
    pokes = Pokes()
    stop = res.start_watch(pokes)
    try:
        res.check_apply(True)
        wait_for(lambda: pokes.count >= 1, 5, "a poke when creates appears")
        seen = pokes.count
        made.unlink()
        wait_for(lambda: pokes.count > seen, 5, "a poke when creates goes")
    finally:
        stop()


# --- donecmd -------------------------------------------------------------------------------

def test_donecmd_runs_after_success_only(tmp_path):
    done = tmp_path / "done"
    ok = make(ExecResource, cmd="true", donecmd="sh -c 'echo done >> done'", donecwd=str(tmp_path))
    ok.check_apply(True)
    assert done.read_text() == "done\n"
    failing = make(ExecResource, cmd="false", donecmd=f"touch {tmp_path}/never")
    with pytest.raises(ResourceError, match="exit status 1"):
        failing.check_apply(True)
    assert not (tmp_path / "never").exists()


def test_donecmd_failure_is_the_execs_failure_and_it_runs_again(tmp_path):
    log = tmp_path / "log"
    res = appender(log, donecmd="echo 'no disk' >&2; exit 5", doneshell="/bin/sh")
    with pytest.raises(ResourceError, match=r"donecmd .* failed: exit status 5: no disk"):
        res.check_apply(True)
    with pytest.raises(ResourceError):
        res.check_apply(True)
    assert runs(log) == 2   # not in state: cmd runs again


# --- sig -------------------------------------------------------------------------------------

def test_sig_names_like_mgmt():
    assert signal_number(None) == signal_number("") == signal.SIGTERM
    assert signal_number("SIGINT") == signal.SIGINT
    with pytest.raises(FieldError, match="did you mean 'SIGINT'"):
        signal_number("sigint")
    with pytest.raises(FieldError, match="did you mean 'SIGHUP'"):
        signal_number("HUP")
    with pytest.raises(FieldError, match="invalid sig 'SIGNOPE'"):
        signal_number("SIGNOPE")


def test_sig_stops_a_running_command_on_cancel(tmp_path, monkeypatch):
    # SIGKILL follows 2 s after the signal: on a loaded machine the shell may not
    # have run its trap by then, and the test would see SIGKILL's doing
    monkeypatch.setattr(execproc, "KILL_GRACE", 60.0)
    # SIGUSR1, not SIGINT: a test run started in the background (`cmd &`) has
    # SIGINT ignored, the command inherits that, and a shell cannot trap a
    # signal ignored when it started
    got = tmp_path / "got"
    res = make(ExecResource, sig="SIGUSR1", shell="/bin/sh",
               cmd=f"trap 'echo USR1 > {got}; exit 3' USR1; echo up > {tmp_path}/up; "
                   "while :; do sleep 0.05; done")
    errors: list[Exception] = []
    worker = threading.Thread(target=lambda: _capture(res, errors))
    worker.start()
    wait_for(lambda: (tmp_path / "up").exists(), 10, "the command to start")
    res.cancel()
    worker.join(timeout=30)
    assert got.read_text() == "USR1\n"
    assert errors and "exit status 3" in str(errors[0])


def test_a_cancel_between_two_commands_stops_the_next_one(tmp_path):
    # meta.timeout's cancel can come after cmd ended and before donecmd
    # started: donecmd must not then run unbounded (nothing else would stop it)
    res = make(ExecResource, cmd="true", donecmd=f"sh -c 'test -e {tmp_path}/again || exec sleep 60'")
    started = res.popen

    def popen(argv, cwd, **streams):
        if "sleep" in " ".join(argv):
            res.cancel()   # the timeout, right between the two
        return started(argv, cwd, **streams)

    res.popen = popen
    errors: list[Exception] = []
    worker = threading.Thread(target=lambda: _capture(res, errors))
    worker.start()
    try:
        wait_for(lambda: not worker.is_alive(), 10, "check_apply to end once cancelled")
    finally:
        if worker.is_alive():
            res.interrupt()   # no sleep is left behind
        worker.join(timeout=10)
    assert errors and "cancelled" in str(errors[0])
    res.popen = started
    (tmp_path / "again").touch()
    assert res.check_apply(True) is False   # the next run works as before


def _capture(res, errors) -> None:
    try:
        res.check_apply(True)
    except ResourceError as err:
        errors.append(err)


# --- user, group -------------------------------------------------------------------------------

def test_credential_like_mgmt():
    me = (os.getuid(), os.getgid())
    assert credential(None, None) is None and credential("", "") is None
    assert credential(me[0], me[1], me) is None            # mgmtd's own: nothing changes
    assert credential(None, str(me[1]), me) is None
    with pytest.raises(ResourceError, match="needs root"):
        credential(me[0] + 1, None, (1000, 1000))
    assert credential(1234, None, (0, 0)) == Credential(1234, 0)   # the gid stays mgmtd's
    assert credential("root", 5, (0, 0)).popen_args() == {"user": 0, "group": 5, "extra_groups": []}
    with pytest.raises(ResourceError, match="user 'no-such-user-mgmtd' does not exist"):
        credential("no-such-user-mgmtd", None, (0, 0))


@pytest.mark.skipif(os.getuid() != 0, reason="changing user needs root")
def test_user_and_group_run_the_command_as_them():
    def ids(**who) -> list[str]:
        res = make(ExecResource, cmd="id -u; id -g; id -G", shell="/bin/sh", **who)
        res.check_apply(True)
        return res.ctx.report.text("debug").split(":\n", 1)[1].split()

    assert ids(user="nobody") == ["65534", "0", "0"]   # the gid stays mgmtd's; no extra groups
    assert ids(user="nobody", group="nogroup") == ["65534", "65534", "65534"]
    assert ids(group=65534) == ["0", "65534", "65534"]


# --- fields mgmt has and mgmtd refuses or warns about --------------------------------------------

@pytest.mark.parametrize("field", ["send_output", "send_stdout", "send_stderr"])
def test_send_fields_are_refused_with_a_location(field):
    with pytest.raises(GraphError) as info:
        load_text(f"resources:\n  exec:\n  - name: e\n    cmd: 'true'\n    {field}: x\n", "g.yaml")
    assert str(info.value) == (f"g.yaml:5:5: exec[e]: exec.{field} (mgmt's field) is not supported: it is "
                               "a value for mgmt's send/recv (sent into another resource's field), which "
                               "mgmtd does not have")


def test_old_fields_load_with_located_warnings():
    spec = load_text("resources:\n  exec:\n  - name: e\n    cmd: 'true'\n    state: present\n"
                     "    timeout: 5\n    pollint: 0\n", "g.yaml")
    got = [str(w) for w in spec.warnings]
    assert [w.split(": mgmt HEAD")[0] for w in got] == [
        "g.yaml:5:5: warning: exec[e]: field 'state'", "g.yaml:6:5: warning: exec[e]: field 'timeout'",
        "g.yaml:7:5: warning: exec[e]: field 'pollint'"]
    assert "meta.timeout" in got[1] and "meta.poll" in got[2]
    assert spec.resources[0].timeout == 5   # the meaning is kept


def test_every_mgmt_exec_field_is_known():
    mgmt = {"cmd", "args", "cwd", "shell", "env", "sig", "watchcmd", "watchcwd", "watchshell", "watchfiles",
            "ifcmd", "ifcwd", "ifshell", "ifequals", "ifequals_stdout", "nifcmd", "nifcwd", "nifshell",
            "creates", "mtimes", "donecmd", "donecwd", "doneshell", "user", "group"}
    assert mgmt <= set(ExecResource.FIELDS)
    assert set(ExecResource.UNSUPPORTED) == {"send_output", "send_stdout", "send_stderr"}
