"""The resource kinds besides file (DESIGN.md section 5): exec, noop, msg,
timer and kv, their check/apply semantics, event sources and mgmt-style
fields. Everything runs under tmp_path; kv uses a fake etcd client."""

from __future__ import annotations

import logging
import os
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mgmtd.resources import KINDS
from mgmtd.resources.base import Context, FieldError, Meta, ResourceError
from mgmtd.resources.exec import ExecResource
from mgmtd.resources.kv import KVResource
from mgmtd.resources.msg import MsgResource
from mgmtd.resources.noop import NoopResource
from mgmtd.resources.timer import TimerResource
from mgmtd.yamlgraph.loader import load_file, load_text
from tests.harness import children_of, gone, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "yaml"


class Reports(list):
    """Collects ``ctx.report`` calls as (level, message)."""

    def __call__(self, level: str, message: str) -> None:
        self.append((level, message))

    def text(self, level: str | None = None) -> str:
        return "\n".join(m for lvl, m in self if level is None or lvl == level)


def make(cls, name="r", ctx: Context | None = None, meta: Meta | None = None, **params):
    res = cls(name, params, meta)
    res.validate()
    res.ctx = ctx or Context(report=Reports())
    return res


class Pokes:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.count += 1


# --- registry -------------------------------------------------------------------

def test_all_kinds_are_registered():
    assert {"file", "exec", "noop", "msg", "timer", "kv"} <= set(KINDS)
    for kind, cls in KINDS.items():
        assert cls.kind == kind
        assert all(spec.doc for spec in cls.FIELDS.values()), f"{kind}: every field is documented"


# --- exec -----------------------------------------------------------------------

def append_cmd(path: Path) -> dict:
    return {"cmd": f"echo ran >> {path}", "shell": "/bin/sh"}


def runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_exec_runs_once_then_in_state_and_refresh_reruns(tmp_path):
    log = tmp_path / "log"
    res = make(ExecResource, **append_cmd(log))
    assert res.check_apply(True) is False
    assert runs(log) == 1
    assert res.check_apply(True) is True
    assert runs(log) == 1
    res.refresh = True
    assert res.check_apply(True) is False
    assert runs(log) == 2
    res.refresh = False
    assert res.check_apply(True) is True


def test_exec_without_shell_splits_like_a_shell_and_uses_cwd_and_env(tmp_path):
    res = make(ExecResource, cmd="sh -c 'echo \"$GREETING\" > out.txt; pwd >> out.txt'",
               cwd=str(tmp_path), env={"GREETING": "hi there"})
    assert res.check_apply(True) is False
    assert (tmp_path / "out.txt").read_text() == f"hi there\n{tmp_path}\n"


def test_exec_cmd_defaults_to_the_name(tmp_path):
    res = make(ExecResource, name=f"touch {tmp_path}/named")
    res.check_apply(True)
    assert (tmp_path / "named").exists()


def test_exec_noop_reports_and_runs_nothing(tmp_path):
    log = tmp_path / "log"
    res = make(ExecResource, **append_cmd(log))
    assert res.check_apply(False) is False
    assert not log.exists()
    assert "would run" in res.ctx.report.text("info")
    assert res.check_apply(False) is False  # still not run, so still not in state


def test_exec_ifcmd_guards(tmp_path):
    log = tmp_path / "log"
    skipped = make(ExecResource, ifcmd="false", **append_cmd(log))
    assert skipped.check_apply(True) is True
    skipped.refresh = True
    assert skipped.check_apply(True) is True  # the guard wins over a refresh
    assert not log.exists()
    guarded = make(ExecResource, ifcmd=f"test ! -e {tmp_path}/done",
                   cmd=f"touch {tmp_path}/done", shell="/bin/sh")
    assert guarded.check_apply(True) is False
    assert guarded.check_apply(True) is True  # the guard is the state


def test_exec_creates_guard(tmp_path):
    target = tmp_path / "made"
    res = make(ExecResource, cmd=f"touch {target}", creates=str(target))
    assert res.check_apply(False) is False
    assert not target.exists()
    assert res.check_apply(True) is False
    assert target.exists()
    res.refresh = True
    assert res.check_apply(True) is True
    target.unlink()
    res.refresh = False
    assert res.check_apply(True) is False  # gone again: runs again
    assert target.exists()


def test_exec_refresh_only(tmp_path):
    log = tmp_path / "log"
    res = make(ExecResource, refresh_only=True, **append_cmd(log))
    assert res.check_apply(True) is True
    res.refresh = True
    assert res.check_apply(True) is False
    assert runs(log) == 1


def test_exec_timeout_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    res = make(ExecResource, cmd=f"sleep 30 & echo $! > {pidfile}; wait", shell="/bin/sh", timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ResourceError, match="timed out after 0.5s"):
        res.check_apply(True)
    assert time.monotonic() - started < 5
    wait_for(lambda: gone(int(pidfile.read_text())), 5, "the timed-out command's child to be killed")


def test_exec_failure_names_status_and_stderr():
    res = make(ExecResource, cmd="echo noise; echo first >&2; echo 'it broke' >&2; exit 3", shell="/bin/sh")
    with pytest.raises(ResourceError) as info:
        res.check_apply(True)
    assert "exit status 3" in str(info.value)
    assert "it broke" in str(info.value)
    with pytest.raises(ResourceError, match="cannot start 'no-such-program-mgmtd'"):
        make(ExecResource, cmd="no-such-program-mgmtd").check_apply(True)


def test_exec_output_is_reported_at_debug(tmp_path):
    res = make(ExecResource, cmd="echo hello from the exec")
    res.check_apply(True)
    assert "hello from the exec" in res.ctx.report.text("debug")


def test_exec_watchcmd_pokes_per_line_and_dies_with_stop(tmp_path):
    log, pidfile = tmp_path / "log", tmp_path / "watch.pid"
    res = make(ExecResource, watchshell="/bin/sh",
               watchcmd=f"echo $$ > {pidfile}; echo one; echo two; exec sleep 60", **append_cmd(log))
    assert res.check_apply(True) is False
    assert res.check_apply(True) is True
    pokes = Pokes()
    stop = res.start_watch(pokes)
    assert stop is not None
    try:
        wait_for(lambda: pokes.count == 2, 5, "a poke per line")
        pid = int(pidfile.read_text())
        assert not gone(pid)
        assert res.check_apply(True) is False  # a watch event put it out of state
        assert runs(log) == 2
    finally:
        stop()
    assert gone(pid)
    assert not [t for t in threading.enumerate() if t.name.startswith("watch-exec")]


def test_exec_watchcmd_that_ends_is_restarted_and_stop_is_prompt(tmp_path):
    res = make(ExecResource, cmd="true", watchcmd="sh -c 'echo bye >&2; exit 4'")
    stop = res.start_watch(lambda: None)
    wait_for(lambda: "restarting it in 1s" in res.ctx.report.text("warning"), 5, "the restart warning")
    assert "watchcmd exited with status 4: bye" in res.ctx.report.text("warning")
    started = time.monotonic()
    stop()  # while it waits to restart
    assert time.monotonic() - started < 0.5


def test_exec_interrupt_stops_a_running_command(tmp_path):
    res = make(ExecResource, cmd="sleep 30")
    errors: list[Exception] = []

    def work() -> None:
        try:
            res.check_apply(True)
        except ResourceError as err:
            errors.append(err)

    worker = threading.Thread(target=work)
    worker.start()
    wait_for(lambda: res._running, 5, "the command to run")
    res.interrupt()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert errors and "interrupted" in str(errors[0])


def test_exec_pollint_puts_it_out_of_state(tmp_path):
    log = tmp_path / "log"
    res = make(ExecResource, pollint=0.05, **append_cmd(log))
    res.check_apply(True)
    pokes = Pokes()
    stop = res.start_watch(pokes)
    try:
        wait_for(lambda: pokes.count >= 1, 5, "a poll to poke")
        assert res.check_apply(True) is False
    finally:
        stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("poll-exec")]


def test_exec_without_event_source_has_no_watch():
    assert make(ExecResource, cmd="true").start_watch(lambda: None) is None


def test_exec_autoedges_follow_cwd_and_creates():
    res = make(ExecResource, cmd="true", cwd="/srv/app/data/", creates="/var/lib/app/done")
    assert res.autoedge_requires() == ["/srv/app/data", "/srv/app", "/srv", "/var/lib/app", "/var/lib", "/var"]


def test_exec_orders_after_the_file_managing_its_cwd(tmp_path):
    spec = load_text(textwrap.dedent(f"""
        resources:
          exec:
          - name: build
            cmd: make
            cwd: {tmp_path}/src
          file:
          - name: src
            path: {tmp_path}/src/
        """))
    graph = spec.build()
    assert graph.requires[("exec", "build")] == {("file", "src")}


@pytest.mark.parametrize(("params", "field"), [
    ({"cmd": "true", "cwd": "relative"}, "cwd"),
    ({"cmd": "true", "creates": "x"}, "creates"),
    ({"cmd": "true", "state": "absent"}, "state"),
    ({"cmd": "echo 'unbalanced"}, "cmd"),
    ({"cmd": "true", "timeout": -1}, "timeout"),
    ({"cmd": "true", "shell": "/bin/sh", "args": ["x"]}, "args"),
    ({"cmd": "true", "env": {"A=B": "x"}}, "env"),
])
def test_exec_validation(params, field):
    with pytest.raises(FieldError) as info:
        ExecResource("bad", params).validate()
    assert info.value.field == field


# --- noop -----------------------------------------------------------------------

def test_noop_is_always_in_state():
    res = make(NoopResource, comment="anchor")
    assert res.check_apply(True) is True
    assert res.check_apply(False) is True
    res.refresh = True
    assert res.check_apply(True) is True
    assert "notification" in res.ctx.report.text()


# --- msg ------------------------------------------------------------------------

def test_msg_logs_once_at_its_level_and_again_on_refresh(caplog):
    caplog.set_level(logging.DEBUG, logger="mgmtd.msg")
    res = make(MsgResource, name="m", body="disk is filling up", priority="Warning", fields={"DISK": "sda"})
    assert res.check_apply(True) is False
    assert res.check_apply(True) is True
    res.refresh = True
    assert res.check_apply(True) is False
    records = [r for r in caplog.records if r.name == "mgmtd.msg"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    assert records[0].getMessage() == "msg[m]: disk is filling up (DISK=sda)"


def test_msg_priorities_and_noop(caplog):
    caplog.set_level(logging.DEBUG, logger="mgmtd.msg")
    assert make(MsgResource, body="x").level == logging.INFO
    assert make(MsgResource, body="x", priority="Err").level == logging.ERROR
    assert make(MsgResource, body="x", priority="debug").level == logging.DEBUG
    with pytest.raises(FieldError):
        make(MsgResource, body="x", priority="loud")
    res = make(MsgResource, body="quiet please")
    assert res.check_apply(False) is False
    assert not [r for r in caplog.records if r.name == "mgmtd.msg"]
    assert "would log: quiet please" in res.ctx.report.text()


def test_journal_datagram_uses_the_binary_form_only_for_multiline_values():
    from mgmtd.resources.journal import encode
    assert encode({"MESSAGE": "hi", "PRIORITY": "6"}) == b"MESSAGE=hi\nPRIORITY=6\n"
    assert encode({"MESSAGE": "a\nb"}) == b"MESSAGE\n" + (3).to_bytes(8, "little") + b"a\nb\n"


def test_msg_journal_sends_one_entry_with_its_fields_and_again_on_refresh(tmp_path, monkeypatch):
    import socket

    from mgmtd.resources import journal
    path = str(tmp_path / "journal.sock")
    monkeypatch.setattr(journal, "JOURNAL_SOCKET", path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journald:
        journald.bind(path)
        journald.settimeout(5)
        res = make(MsgResource, name="m", body="disk\nfull", priority="Err", journal=True,
                   fields={"DISK": "sda", "LEVEL": 3})
        assert res.check_apply(True) is False and res.check_apply(True) is True
        entry = journald.recv(65536)
        assert b"DISK=sda\nLEVEL=3\n" in entry and b"PRIORITY=3\n" in entry
        assert b"MESSAGE\n" + (9).to_bytes(8, "little") + b"disk\nfull\n" in entry
        assert b"SYSLOG_IDENTIFIER=mgmtd\n" in entry and b"MGMTD_RESOURCE=msg[m]\n" in entry
        res.refresh = True
        assert res.check_apply(True) is False
        assert b"DISK=sda" in journald.recv(65536)


def test_msg_journal_needs_upper_case_fields_and_a_running_journald(tmp_path, monkeypatch):
    from mgmtd.resources import journal
    with pytest.raises(FieldError, match="journal fields are upper case"):
        make(MsgResource, body="x", journal=True, fields={"disk": "sda"})
    make(MsgResource, body="x", fields={"disk": "sda"})  # only the journal needs them upper case
    monkeypatch.setattr(journal, "JOURNAL_SOCKET", str(tmp_path / "none"))
    res = make(MsgResource, body="x", journal=True)
    with pytest.raises(ResourceError, match=f"journald is not running here \\(no {tmp_path}/none\\)"):
        res.check_apply(True)


# --- timer ----------------------------------------------------------------------

def test_timer_ticks_poke_and_report_one_change_per_tick():
    res = make(TimerResource, interval=1)
    res.interval = 0.05  # whole seconds in graphs; faster here
    assert res.check_apply(True) is True  # no tick yet
    pokes = Pokes()
    stop = res.start_watch(pokes)
    try:
        wait_for(lambda: pokes.count >= 1, 5, "the first tick")
        assert res.check_apply(True) is False
        seen = pokes.count
        assert res.check_apply(True) is True or pokes.count > seen
        wait_for(lambda: pokes.count >= 3, 5, "three ticks")
    finally:
        stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("tick-timer")]
    count = pokes.count
    time.sleep(0.15)
    assert pokes.count == count


def test_timer_refresh_is_a_change_and_noop_only_reports():
    res = make(TimerResource, interval=5)
    res.refresh = True
    assert res.check_apply(False) is False
    assert "would notify" in res.ctx.report.text()
    assert res.check_apply(True) is False
    res.refresh = False
    assert res.check_apply(True) is True
    with pytest.raises(FieldError):
        make(TimerResource, interval=0)


# --- kv -------------------------------------------------------------------------

class FakeEtcd:
    """What kv uses of a python3-etcd3 client."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.watches: dict[int, tuple[str, object]] = {}
        self.next_id = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("connection refused")

    def get(self, key: str):
        self._check()
        return self.data.get(key), None

    def put(self, key: str, value: str) -> None:
        self._check()
        self.data[key] = value.encode()
        for watched, callback in list(self.watches.values()):
            if watched == key:
                callback(object())

    def delete(self, key: str) -> bool:
        self._check()
        return self.data.pop(key, None) is not None

    def add_watch_callback(self, key: str, callback) -> int:
        self._check()
        self.next_id += 1
        self.watches[self.next_id] = (key, callback)
        return self.next_id

    def cancel_watch(self, watch_id: int) -> None:
        self.watches.pop(watch_id, None)


def kv(etcd: FakeEtcd, **params) -> KVResource:
    return make(KVResource, name="kv1", ctx=Context(host="h1", etcd=lambda: etcd, report=Reports()), **params)


def test_kv_sets_the_key_then_is_in_state():
    etcd = FakeEtcd()
    res = kv(etcd, key="hello", value="world")
    assert res.key == ("kv", "kv1")  # the graph's key is still (kind, name)
    assert res.check_apply(True) is False
    assert etcd.data == {"/mgmtd/kv/hello": b"world"}
    assert res.check_apply(True) is True
    etcd.data["/mgmtd/kv/hello"] = b"drifted"
    assert res.check_apply(True) is False
    assert etcd.data["/mgmtd/kv/hello"] == b"world"


def test_kv_noop_reports_and_writes_nothing():
    etcd = FakeEtcd()
    res = kv(etcd, key="hello", value=42)
    assert res.check_apply(False) is False
    assert etcd.data == {}
    assert "would set /mgmtd/kv/hello to '42'" in res.ctx.report.text("info")


def test_kv_without_value_deletes_and_mapped_uses_the_host():
    etcd = FakeEtcd()
    etcd.data["/mgmtd/kv/kv1"] = b"old"
    res = kv(etcd)
    assert res.check_apply(True) is False
    assert etcd.data == {}
    assert res.check_apply(True) is True
    kv(etcd, key="k", value="v", mapped=True).check_apply(True)
    assert etcd.data == {"/mgmtd/kv/k/h1": b"v"}


def test_kv_skiplessthan():
    etcd = FakeEtcd()
    etcd.data["/mgmtd/kv/gen"] = b"7"
    res = kv(etcd, key="gen", value=3, skiplessthan=True)
    assert res.check_apply(True) is True
    assert etcd.data["/mgmtd/kv/gen"] == b"7"
    res.refresh = True
    assert res.check_apply(True) is False
    assert etcd.data["/mgmtd/kv/gen"] == b"3"
    with pytest.raises(FieldError):
        kv(etcd, key="gen", value="three", skiplessthan=True)


def test_kv_unreachable_etcd_is_a_resource_error():
    etcd = FakeEtcd()
    etcd.down = True
    with pytest.raises(ResourceError, match="connection refused"):
        kv(etcd, key="a", value="b").check_apply(True)

    def refuse():
        raise ConnectionError("no etcd endpoints known yet")

    res = make(KVResource, ctx=Context(etcd=refuse), key="a", value="b")
    with pytest.raises(ResourceError, match="etcd is unreachable: no etcd endpoints"):
        res.check_apply(True)
    with pytest.raises(ResourceError, match="no etcd connection"):
        make(KVResource, key="a", value="b").check_apply(True)


def test_kv_watch_pokes_on_change_and_stop_cancels():
    etcd = FakeEtcd()
    res = kv(etcd, key="hello", value="world")
    pokes = Pokes()
    stop = res.start_watch(pokes)
    assert stop is not None
    res.check_apply(True)  # the check arms the watch
    assert len(etcd.watches) == 1
    base = pokes.count
    etcd.put("/mgmtd/kv/hello", "changed elsewhere")
    assert pokes.count == base + 1
    stop()
    assert etcd.watches == {}


def test_kv_watch_is_started_again_after_a_failure_or_a_new_client():
    first, second = FakeEtcd(), FakeEtcd()
    current = [first]
    res = make(KVResource, name="kv1", ctx=Context(etcd=lambda: current[0], report=Reports()), value="v")
    stop = res.start_watch(lambda: None)
    try:
        res.check_apply(True)
        assert len(first.watches) == 1
        first.down = True
        with pytest.raises(ResourceError, match="cannot read /mgmtd/kv/kv1 from etcd"):
            res.check_apply(True)
        assert first.watches == {}
        first.down = False
        res.check_apply(True)
        assert len(first.watches) == 1
        current[0] = second
        res.check_apply(True)
        assert first.watches == {} and len(second.watches) == 1
        next(iter(second.watches.values()))[1](ConnectionError("stream broke"))
        assert second.watches == {}
    finally:
        stop()


def test_kv_rechecks_by_itself_after_etcd_failed(monkeypatch):
    monkeypatch.setattr("mgmtd.resources.kv.RECHECK_FIRST", 0.05)
    etcd = FakeEtcd()
    etcd.down = True
    res = kv(etcd, key="a", value="b")
    pokes = Pokes()
    stop = res.start_watch(pokes)
    try:
        with pytest.raises(ResourceError):
            res.check_apply(True)
        wait_for(lambda: pokes.count >= 1, 5, "a poke after etcd failed")
        etcd.down = False
        assert res.check_apply(True) is False
        assert len(etcd.watches) == 1
    finally:
        stop()


# --- graphs ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["exec1", "noop1", "msg1", "timer1", "kv1"])
def test_examples_load(name):
    path = EXAMPLES / f"{name}.yaml"
    assert path.read_text().startswith(f"# {name}: ")
    spec = load_file(str(path))
    assert spec.resources


def test_timer1_example_notifies_an_exec():
    spec = load_file(str(EXAMPLES / "timer1.yaml"))
    assert any(e.notify and e.source[0] == "timer" and e.target[0] == "exec" for e in spec.edges)


MGMT_EXEC = """
  - name: exec{n}
    cmd: sleep 10s
    shell: ''
    timeout: 0
    watchcmd: '{watch}'
    watchshell: ''
    ifcmd: '{ifcmd}'
    ifshell: ''
    pollint: 0
    state: present
"""


@pytest.mark.parametrize("text", [
    "graph: mygraph\nresources:\n  exec:" + MGMT_EXEC.format(n=1, watch="", ifcmd="")
    + MGMT_EXEC.format(n=2, watch="", ifcmd="true")
    + "edges:\n- name: e1\n  from:\n    kind: exec\n    name: exec1\n  to:\n    kind: exec\n    name: exec2\n",
    "graph: mygraph\nresources:\n  exec:" + MGMT_EXEC.format(n=1, watch="sleep 10s", ifcmd=""),
    "graph: mygraph\nresources:\n  noop:\n  - name: noop1\n    meta:\n      noop: true\n"
    "  exec:\n  - name: exec1\n    meta:\n      noop: true\n    cmd: 'rm -rf /'\n    shell: '/bin/bash'\n"
    "    timeout: 0\n    watchcmd: ''\n    pollint: 0\n    state: present\nedges: []\n",
    "graph: mygraph\ncomment: timer example\nresources:\n  timer:\n  - name: timer1\n    interval: 30\n"
    "  msg:\n  - name: msg1\n    body: mgmt logged this message\n    journal: true\nedges:\n- name: e1\n"
    "  from:\n    kind: timer\n    name: timer1\n  to:\n    kind: msg\n    name: msg1\n",
    "graph: mygraph\nresources:\n  kv:\n  - name: kv1\n    key: \"hello\"\n    value: \"world\"\nedges: []\n",
], ids=["exec1a+b", "exec1c", "noop2", "msg1", "kv1"])
def test_mgmt_examples_load_unchanged(text):
    assert load_text("---\n" + text).resources


def test_exec_leaves_no_children_behind(tmp_path):
    res = make(ExecResource, cmd="true")
    res.check_apply(True)
    # a child reaped between the listing and the look is gone too
    assert not [c for c in children_of(os.getpid(), recursive=False) if not gone(c)]
