"""svc without systemd: names and object paths, the decision table from unit
properties to actions, error texts, validation and autoedges through the
loader, check_apply against a fake systemd bus, and the shared D-Bus layer
against a private dbus-daemon (connect, signals, losing and regaining it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading

import pytest
from jeepney import DBusAddress, HeaderFields, MatchRule, new_signal
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

from mgmtd.graph import autoedges
from mgmtd.resources import svc as svc_module
from mgmtd.resources.base import Context, ResourceError
from mgmtd.resources.dbus import Bus, BusError, Buses, buses
from mgmtd.resources.svc import SvcResource
from mgmtd.resources.svcplan import (
    Action,
    Observed,
    action_text,
    exit_text,
    job_problem,
    object_path,
    plan,
    unit_name,
    unit_problem,
)
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import load_text
from tests.harness import wait_for
from tests.unit.test_kinds import Reports

# --- names -------------------------------------------------------------------------

def test_unit_name_appends_service_once():
    assert unit_name("nginx") == "nginx.service"
    assert unit_name("nginx.service") == "nginx.service"
    assert unit_name("getty@tty1") == "getty@tty1.service"


@pytest.mark.parametrize("unit,problem", [
    (".service", "needs a unit name"),
    ("a b.service", "not a systemd unit name"),
    ("x/y.service", "not a systemd unit name"),
    ("getty@.service", "is a template"),
    ("a" * 250 + ".service", "longer than 255"),
])
def test_bad_unit_names(unit, problem):
    assert problem in unit_problem(unit)


def test_good_unit_names():
    for unit in ("nginx.service", "getty@tty1.service", "systemd-fsck@dev-disk-by\\x2duuid.service"):
        assert unit_problem(unit) == ""


def test_object_path_is_escaped_like_systemd():
    assert object_path("dbus.service") == "/org/freedesktop/systemd1/unit/dbus_2eservice"
    assert object_path("mgmtd-test-a.service") == \
        "/org/freedesktop/systemd1/unit/mgmtd_2dtest_2da_2eservice"
    assert object_path("1x.service") == "/org/freedesktop/systemd1/unit/_31x_2eservice"
    assert object_path("getty@tty1.service") == "/org/freedesktop/systemd1/unit/getty_40tty1_2eservice"


# --- the decision table -----------------------------------------------------------------

def seen(active="inactive", ufs="disabled", load="loaded", error="") -> Observed:
    return Observed(load, active, ufs, error)


@pytest.mark.parametrize("state,startup,refresh,observed,verbs", [
    ("running", "", False, seen("active"), []),
    ("running", "", False, seen("inactive"), ["start"]),
    ("running", "", False, seen("failed"), ["start"]),
    # a job under way (someone's stop) is never replaced: checked again when it lands
    ("running", "", False, seen("deactivating"), ["wait"]),
    ("running", "", False, seen("activating"), ["wait"]),
    ("running", "", False, seen("reloading"), []),          # a reload keeps it running
    ("stopped", "", False, seen("activating"), ["wait"]),
    ("stopped", "", False, seen("deactivating"), ["wait"]),
    ("stopped", "", False, seen("reloading"), ["wait"]),
    ("", "", False, seen("activating"), []),
    ("running", "enabled", False, seen("activating", "disabled"), ["enable", "wait"]),
    ("stopped", "", False, seen("active"), ["stop"]),
    ("stopped", "", False, seen("failed"), []),
    ("", "enabled", False, seen("inactive", "disabled"), ["enable"]),
    ("", "enabled", False, seen("inactive", "enabled"), []),
    ("", "enabled", False, seen("inactive", "enabled-runtime"), ["enable"]),
    ("", "disabled", False, seen("inactive", "enabled"), ["disable"]),
    ("", "disabled", False, seen("inactive", "static"), []),
    ("", "disabled", False, seen("inactive", "masked"), []),
    ("running", "enabled", False, seen("inactive", "disabled"), ["enable", "start"]),
    ("running", "", True, seen("active"), ["restart"]),
    ("running", "", True, seen("inactive"), ["restart"]),
    ("", "", True, seen("active"), ["try-restart"]),
    ("", "", True, seen("inactive"), []),
    ("stopped", "", True, seen("inactive"), []),
    ("", "", False, seen("active", "enabled"), []),
])
def test_plan(state, startup, refresh, observed, verbs):
    assert [a.verb for a in plan("x.service", state, startup, refresh, observed)] == verbs


@pytest.mark.parametrize("state,startup", [("stopped", ""), ("", "disabled"), ("stopped", "disabled")])
def test_a_unit_that_does_not_exist_is_stopped_and_disabled(state, startup):
    assert plan("x.service", state, startup, False, seen(load="not-found", ufs="")) == []


def test_plan_disables_a_runtime_enablement_at_runtime():
    assert plan("x.service", "", "disabled", False, seen(ufs="enabled-runtime")) == \
        [Action("disable", runtime=True)]


@pytest.mark.parametrize("observed,state,startup,message", [
    (seen(load="not-found", ufs=""), "running", "", "no such unit: x.service"),
    (seen(load="not-found", ufs=""), "", "enabled", "no such unit: x.service"),
    (seen(load="bad-setting", error="Unit has no ExecStart"), "running", "",
     "x.service failed to load (bad-setting): Unit has no ExecStart"),
    (seen(ufs="static"), "", "enabled", "x.service cannot be enabled: its unit file has no [Install] section"),
    (seen(load="masked", ufs="masked"), "running", "", "x.service is masked"),
    (seen(ufs="masked"), "", "enabled", "it is masked"),
])
def test_plan_refuses_with_one_line(observed, state, startup, message):
    with pytest.raises(ValueError) as err:
        plan("x.service", state, startup, False, observed)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_texts():
    assert action_text(Action("start"), "x.service", False, done=False) == "would start x.service"
    assert action_text(Action("enable"), "x.service", False, done=True) == "enabled x.service"
    assert action_text(Action("restart"), "x.service", True, done=True) == "restarted x.service (refresh)"
    assert action_text(Action("try-restart"), "x.service", True, done=False) == \
        "would restart x.service (refresh)"
    assert job_problem("start", "x.service", "done") == ""
    assert job_problem("start", "x.service", "failed", "exit-code", exit_text(1, 3)) == \
        "x.service failed to start: exit-code, main process exited with status 3 (journalctl -u x.service)"
    assert "killed by signal 9" in exit_text(2, 9)
    assert "canceled" in job_problem("stop", "x.service", "canceled")
    assert "a unit it requires failed" in job_problem("start", "x.service", "dependency")
    assert action_text(Action("wait", during="activating"), "x.service", False, done=False) == \
        "x.service is activating: would check it again when that ends"


# --- through the loader -------------------------------------------------------------------

def test_bad_fields_are_located():
    for text, words in [("    state: up\n", "state must be 'running', 'stopped'"),
                        ("    startup: boot\n", "startup must be"),
                        ("    session: 1\n", "session")]:
        with pytest.raises(GraphError) as err:
            load_text(f"graph: g\nresources:\n  svc:\n  - name: x\n{text}")
        assert words in str(err.value)
        assert "<graph>:" in str(err.value)


def test_autoedges_to_the_unit_file_and_its_package_tokens():
    spec = load_text("""\
graph: g
resources:
  file:
  - name: unit
    path: /etc/systemd/system/web.service
    content: "[Service]\\n"
  - name: dropins
    path: /etc/systemd/system/web.service.d/
    state: exists
  svc:
  - name: web
    state: running
""")
    edges = {(e.source, e.target) for e in autoedges(spec.resources)}
    assert (("file", "unit"), ("svc", "web")) in edges
    assert (("file", "dropins"), ("svc", "web")) in edges
    res = next(r for r in spec.resources if r.kind == "svc")
    assert "pkgfile:/lib/systemd/system/web.service" in res.autoedge_requires()
    assert "pkgfile:/usr/lib/systemd/system/web.service" in res.autoedge_requires()


def test_same_unit_twice_is_one_identity():
    a = SvcResource("web", {"state": "running"})
    b = SvcResource("web.service", {"state": "stopped"})
    assert a.identity() == b.identity()
    assert a.identity() != SvcResource("web", {"session": True}).identity()


# --- check_apply against a fake systemd ---------------------------------------------------------

class FakeSystemd:
    """Just enough of systemd's Manager for SvcResource: units by name, jobs
    that finish at once with a JobRemoved delivered to the subscriber."""

    def __init__(self, **units: dict) -> None:
        self.units = units                # by primary name
        self.aliases: dict[str, str] = {}   # alias -> primary name
        self.readied = 0
        self.observed = 0                 # GetAll of a unit's properties
        self.on_observe = None            # called with that count at each
        self.calls: list[str] = []
        self.subscribers: list = []
        self.job_result = "done"
        self.after_start = "active"
        self.jobs = 0
        self.attached: dict = {}

    # the Bus surface SvcResource uses
    def attachment(self, key, factory):
        if key not in self.attached:
            self.attached[key] = factory(self)
        return self.attached[key]

    def add_setup(self, key, setup) -> None:
        pass   # a real Bus runs it in ready()

    def ready(self) -> None:
        self.readied += 1

    def subscribe(self, rule, callback):
        self.subscribers.append((rule, callback))
        return type("Sub", (), {"close": lambda s: None})()

    def call(self, dest, path, interface, method, signature=None, body=(), timeout=None):
        self.calls.append(method)
        if method == "LoadUnit":   # systemd answers with the primary unit's path, as its signals name it
            return (object_path(self.aliases.get(body[0], body[0])),)
        if method in ("StartUnit", "StopUnit", "RestartUnit", "TryRestartUnit"):
            primary = self.aliases.get(body[0], body[0])
            unit = self.units[primary]
            self.jobs += 1
            job = f"/org/freedesktop/systemd1/job/{self.jobs}"
            if self.job_result == "done":
                unit["ActiveState"] = "inactive" if method == "StopUnit" else self.after_start
                unit["InvocationID"] = bytes([self.jobs])
            for rule, callback in self.subscribers:
                if rule.header_fields.get("member") == "JobRemoved":
                    callback(_signal("JobRemoved", (self.jobs, job, primary, self.job_result)))
            return (job,)
        if method == "EnableUnitFiles":
            for name in body[0]:
                self.units[name]["UnitFileState"] = "enabled"
            return (True, [])
        if method == "DisableUnitFiles":
            for name in body[0]:
                self.units[name]["UnitFileState"] = "disabled"
            return ([],)
        return ()

    def get_all(self, dest, path, interface):
        unit = next(u for name, u in self.units.items() if object_path(name) == path)
        if interface.endswith("Service"):
            return {"Result": "exit-code", "ExecMainCode": 1, "ExecMainStatus": 1}
        seen = dict(unit)
        self.observed += 1
        if self.on_observe is not None:
            self.on_observe(self.observed)
        return seen

    def deliver(self, member: str, body: tuple = (), path: str = "/org/freedesktop/systemd1") -> None:
        for rule, callback in self.subscribers:
            if rule.header_fields.get("member") == member:
                callback(_signal(member, body, path))


def _signal(member: str, body: tuple, path: str = "/org/freedesktop/systemd1"):
    class Header:
        fields = {HeaderFields.member: member, HeaderFields.path: path}

    class Msg:
        header = Header()
    Msg.body = body
    return Msg()


def unit(active="inactive", ufs="disabled", load="loaded") -> dict:
    return {"LoadState": load, "ActiveState": active, "UnitFileState": ufs, "NeedDaemonReload": False}


def svc(fake: FakeSystemd, **params) -> tuple[SvcResource, Reports]:
    res = SvcResource(params.pop("name", "web"), params)
    res.validate()
    reports = Reports()
    res.ctx = Context(report=reports)
    res.hold.get = lambda: fake
    return res, reports


def test_check_apply_starts_and_enables():
    fake = FakeSystemd(**{"web.service": unit()})
    res, reports = svc(fake, state="running", startup="enabled")
    assert res.check_apply(False) is False
    assert reports.text() == "would enable web.service\nwould start web.service"
    assert fake.calls == ["LoadUnit"]
    assert res.check_apply(True) is False
    assert fake.calls == ["LoadUnit", "LoadUnit", "EnableUnitFiles", "Reload", "StartUnit"]
    assert fake.units["web.service"]["ActiveState"] == "active"
    assert fake.units["web.service"]["UnitFileState"] == "enabled"
    assert res.check_apply(True) is True


def test_failed_start_job_is_one_clear_line():
    fake = FakeSystemd(**{"web.service": unit()})
    fake.job_result = "failed"
    res, _ = svc(fake, state="running")
    with pytest.raises(ResourceError) as err:
        res.check_apply(True)
    assert str(err.value) == ("web.service failed to start: exit-code, main process exited with status 1 "
                              "(journalctl -u web.service)")


def test_a_start_that_dies_at_once_is_an_error_not_a_loop():
    fake = FakeSystemd(**{"web.service": unit()})
    res, _ = svc(fake, state="running")
    assert res.check_apply(True) is False         # the job is done, the unit up
    fake.units["web.service"]["ActiveState"] = "failed"   # ... and its process exits 1
    starts = fake.calls.count("StartUnit")
    with pytest.raises(ResourceError) as err:
        res.check_apply(True)
    assert "web.service failed after it was started: exit-code" in str(err.value)
    assert fake.calls.count("StartUnit") == starts
    # its own failure signals poke it again: the same error, no new start (no loop)
    with pytest.raises(ResourceError, match="failed after it was started"):
        res.check_apply(True)
    assert fake.calls.count("StartUnit") == starts
    res.retrying = True                            # meta.retry: the engine's retry starts it again
    assert res.check_apply(True) is False
    assert fake.calls.count("StartUnit") == starts + 1


def test_a_unit_that_died_at_once_is_started_again_once_its_file_changed_or_reset():
    fake = FakeSystemd(**{"web.service": unit()})
    res, _ = svc(fake, state="running")
    res.check_apply(True)
    fake.units["web.service"]["ActiveState"] = "failed"
    for _ in range(2):
        with pytest.raises(ResourceError):
            res.check_apply(True)
    starts = fake.calls.count("StartUnit")
    fake.units["web.service"]["NeedDaemonReload"] = True   # the operator fixed the unit file
    assert res.check_apply(True) is False
    assert fake.calls.count("StartUnit") == starts + 1


def test_missing_unit_is_named():
    fake = FakeSystemd(**{"web.service": unit(load="not-found", ufs="")})
    res, _ = svc(fake, state="running")
    with pytest.raises(ResourceError, match="no such unit: web.service"):
        res.check_apply(True)


def test_refresh_restarts_a_running_unit():
    fake = FakeSystemd(**{"web.service": unit("active")})
    res, reports = svc(fake, state="running")
    res.refresh = True
    assert res.check_apply(True) is False
    assert "RestartUnit" in fake.calls
    assert "restarted web.service (refresh)" in reports.text()


def test_changed_unit_file_is_reloaded_before_the_start():
    fake = FakeSystemd(**{"web.service": {**unit(), "NeedDaemonReload": True}})
    res, reports = svc(fake, state="running")
    res.check_apply(True)
    assert fake.calls.index("Reload") < fake.calls.index("StartUnit")
    assert "reloading systemd" in reports.text()


def test_signals_poke_the_watch_of_their_unit_only():
    fake = FakeSystemd(**{"web.service": unit("active"), "db.service": unit("active")})
    res, _ = svc(fake, state="running")
    other, _ = svc(fake, name="db", state="running")
    pokes, other_pokes = [], []
    stop = res.start_watch(lambda: pokes.append(1))
    other.start_watch(lambda: other_pokes.append(1))
    assert len(fake.subscribers) == 4          # matched once for both units
    deliver = {rule.header_fields.get("member"): callback for rule, callback in fake.subscribers}
    deliver["PropertiesChanged"](_signal("PropertiesChanged", (), object_path("web.service")))
    assert (len(pokes), len(other_pokes)) == (1, 0)
    deliver["Reloading"](_signal("Reloading", (True,)))       # a reload begins: no event yet
    assert (len(pokes), len(other_pokes)) == (1, 0)
    deliver["Reloading"](_signal("Reloading", (False,)))      # ... and ends: every unit
    assert (len(pokes), len(other_pokes)) == (2, 1)
    deliver["JobRemoved"](_signal("JobRemoved", (7, "/org/freedesktop/systemd1/job/7", "db.service", "done")))
    assert (len(pokes), len(other_pokes)) == (2, 2)
    stop()
    deliver["UnitFilesChanged"](_signal("UnitFilesChanged", ()))
    assert (len(pokes), len(other_pokes)) == (2, 3)
    res.close()
    other.close()
    deliver["UnitFilesChanged"](_signal("UnitFilesChanged", ()))
    assert (len(pokes), len(other_pokes)) == (2, 3)


def test_an_alias_is_waited_for_and_watched_as_its_primary_unit(monkeypatch):
    """systemd names signals and object paths after the primary unit: a svc
    named by an alias (sshd for ssh) sees its job end and its drift."""
    monkeypatch.setattr(svc_module, "JOB_WAIT", 2.0)
    fake = FakeSystemd(**{"ssh.service": unit()})
    fake.aliases["sshd.service"] = "ssh.service"
    res, reports = svc(fake, name="sshd", state="running")
    pokes: list = []
    res.start_watch(lambda: pokes.append(1))
    assert res.check_apply(True) is False      # not "did not finish within 2s"
    assert reports.text() == "started sshd.service"
    assert fake.units["ssh.service"]["ActiveState"] == "active"
    before = len(pokes)
    fake.deliver("PropertiesChanged", (), object_path("ssh.service"))   # a `systemctl stop ssh`
    assert len(pokes) == before + 1
    fake.deliver("JobRemoved", (9, "/org/freedesktop/systemd1/job/9", "ssh.service", "done"))
    assert len(pokes) == before + 2
    res.close()


def test_a_job_is_waited_for_by_its_path_whatever_unit_it_names(monkeypatch):
    monkeypatch.setattr(svc_module, "JOB_WAIT", 2.0)
    fake = FakeSystemd(**{"web.service": unit()})
    res, _ = svc(fake, state="running")
    _, events = res._unit_events()
    signals = events.signals
    signals._signal(_signal("JobRemoved", (1, "/org/freedesktop/systemd1/job/1", "other.service", "failed")))
    assert events.wait_job("/org/freedesktop/systemd1/job/1", 0, threading.Event()) == "failed"
    assert events.wait_job("/org/freedesktop/systemd1/job/2", 0, threading.Event()) is None


def test_check_apply_readies_the_bus_first():
    fake = FakeSystemd(**{"web.service": unit("active")})
    res, _ = svc(fake, state="running")
    assert res.check_apply(True) is True
    assert fake.readied == 1


# --- a unit between states (a job of someone else's under way) ------------------------------------

def land(fake: FakeSystemd, name: str, active: str, at: int = 1):
    """At the ``at``-th observation, the unit lands in ``active`` (from another
    thread, as systemd's signal would come) and says so."""
    def on_observe(count: int) -> None:
        if count == at:
            def later():
                fake.units[name]["ActiveState"] = active
                fake.deliver("PropertiesChanged", (), object_path(name))
            threading.Thread(target=later).start()
    fake.on_observe = on_observe


def test_a_starting_unit_is_waited_for_then_in_state():
    fake = FakeSystemd(**{"web.service": unit("activating")})
    res, reports = svc(fake, state="running")
    res.start_watch(lambda: None)
    land(fake, "web.service", "active")
    assert res.check_apply(True) is True          # it landed running: nothing was done
    assert fake.observed == 2                     # looked at again after the signal
    assert "StartUnit" not in fake.calls
    assert reports.text() == ""


def test_stopped_while_starting_waits_then_stops():
    fake = FakeSystemd(**{"web.service": unit("activating")})
    res, reports = svc(fake, state="stopped")
    res.start_watch(lambda: None)
    land(fake, "web.service", "active")
    assert res.check_apply(True) is False
    assert fake.calls.count("StopUnit") == 1
    assert fake.units["web.service"]["ActiveState"] == "inactive"
    assert reports.text() == "stopped web.service"


def test_enabled_while_starting_enables_then_waits():
    fake = FakeSystemd(**{"web.service": unit("activating")})
    res, reports = svc(fake, state="running", startup="enabled")
    res.start_watch(lambda: None)
    land(fake, "web.service", "active")
    assert res.check_apply(True) is False         # enabled: a change
    assert fake.observed == 2
    assert fake.calls.count("EnableUnitFiles") == 1
    assert "StartUnit" not in fake.calls
    assert reports.text() == "enabled web.service"


def test_a_unit_stuck_between_states_is_an_error_not_in_state(monkeypatch):
    monkeypatch.setattr(svc_module, "JOB_WAIT", 0.3)
    fake = FakeSystemd(**{"web.service": unit("activating")})
    res, _ = svc(fake, state="stopped")
    res.start_watch(lambda: None)
    with pytest.raises(ResourceError) as err:
        res.check_apply(True)
    assert str(err.value) == ("web.service is still activating after 0.3s "
                              "(a start or stop under way that does not end)")
    assert "StopUnit" not in fake.calls


def test_a_wait_ends_on_interrupt():
    fake = FakeSystemd(**{"web.service": unit("deactivating")})
    res, _ = svc(fake, state="running")
    res.start_watch(lambda: None)
    fake.on_observe = lambda count: threading.Thread(target=res.interrupt).start()
    with pytest.raises(ResourceError, match="interrupted: mgmtd is stopping"):
        res.check_apply(True)


def test_noop_between_states_says_so_and_is_not_in_state():
    fake = FakeSystemd(**{"web.service": unit("activating")})
    res, reports = svc(fake, state="stopped")
    assert res.check_apply(False) is False
    assert reports.text() == "web.service is activating: would check it again when that ends"
    assert fake.observed == 1


# --- the D-Bus layer against a private bus ----------------------------------------------------

DAEMON = shutil.which("dbus-daemon")


class PrivateBus:
    def __init__(self, tmp_path) -> None:
        self.socket = tmp_path / "bus"
        self.address = f"unix:path={self.socket}"
        self.config = tmp_path / "bus.conf"
        self.config.write_text(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>{self.address}</listen>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/>
<allow own="*"/></policy></busconfig>""")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen([DAEMON, f"--config-file={self.config}", "--nofork", "--nopidfile"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.accepting, timeout=10, what="the private bus")

    def accepting(self) -> bool:
        """The socket file appears before dbus-daemon listens on it."""
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def private_bus(tmp_path):
    if DAEMON is None:
        pytest.skip("no dbus-daemon")
    bus = PrivateBus(tmp_path)
    bus.start()
    yield bus
    bus.stop()


def test_bus_calls_signals_and_comes_back(private_bus):
    bus = Bus(private_bus.address)
    seen_signals: list = []
    event = threading.Event()

    def callback(msg):
        seen_signals.append(msg)
        event.set()

    bus.subscribe(MatchRule(type="signal", interface="org.freedesktop.DBus", member="NameOwnerChanged"),
                  callback)
    bus.ready()   # the match is added here, not by subscribe
    own_id, = bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId")
    assert own_id
    other = Bus(private_bus.address)
    other.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId")
    wait_for(lambda: any(m is not None for m in seen_signals), timeout=10, what="NameOwnerChanged")
    other.close()

    with pytest.raises(BusError) as err:
        bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NoSuchMethod")
    assert err.value.name == "org.freedesktop.DBus.Error.UnknownMethod"

    seen_signals.clear()
    private_bus.stop()
    wait_for(lambda: None in seen_signals, timeout=10, what="the loss reported to subscribers")
    with pytest.raises(BusError, match="cannot connect to the D-Bus"):
        bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId")
    seen_signals.clear()
    private_bus.start()
    wait_for(lambda: None in seen_signals, timeout=20, what="the reconnection reported to subscribers")
    assert bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId")
    seen_signals.clear()
    third = Bus(private_bus.address)   # the match was added again on the new connection
    third.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId")
    wait_for(lambda: any(m is not None for m in seen_signals), timeout=10, what="a signal after reconnecting")
    third.close()
    bus.close()


def test_buses_are_shared_and_counted():
    shared: dict = {}
    registry = buses(shared)
    assert buses(shared) is registry and isinstance(registry, Buses)
    one = registry.acquire("unix:path=/nonexistent/bus")
    two = registry.acquire("unix:path=/nonexistent/bus")
    assert one is two
    registry.release(one)
    assert not one.closed.is_set()
    registry.release(two)
    assert one.closed.is_set()
    assert registry.acquire("unix:path=/nonexistent/bus") is not one


def test_no_bus_is_one_line():
    res = SvcResource("web", {"state": "running"})
    res.validate()
    res.ctx = Context(report=Reports())
    res.hold.address = lambda: "unix:path=/nonexistent/bus"
    with pytest.raises(ResourceError) as err:
        res.check_apply(True)
    assert str(err.value).startswith("web.service: cannot connect to the D-Bus /nonexistent/bus: ")
    res.close()


def _call_counter(bus: Bus) -> list:
    """Counts every message the bus sends from now on (calls and AddMatch)."""
    sent: list = []
    real = bus._call_on

    def counting(conn, msg, timeout):
        sent.append(msg.header.fields.get(HeaderFields.member))
        return real(conn, msg, timeout)
    bus._call_on = counting
    return sent


def _svc_on(bus: Bus) -> SvcResource:
    res = SvcResource("web", {"state": "running"})
    res.validate()
    res.ctx = Context(report=Reports())
    res.hold.get = lambda: bus
    return res


GET_ID = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId")


def test_start_watch_does_no_io_and_bus_errors_are_resource_errors(private_bus):
    """start_watch runs on the engine's control thread: registering only, even
    on an open connection. The bus work is check_apply's, whose errors are
    ResourceErrors (this bus has no systemd to Subscribe to)."""
    bus = Bus(private_bus.address)
    bus.call(*GET_ID)
    sent = _call_counter(bus)
    res = _svc_on(bus)
    stop = res.start_watch(lambda: None)
    assert sent == []
    with pytest.raises(ResourceError) as err:
        res.check_apply(True)
    assert str(err.value).startswith("web.service: no systemd on the system bus: ")
    assert "Subscribe" in sent
    stop()
    res.close()
    bus.close()


def test_a_failed_setup_is_run_again(private_bus):
    bus = Bus(private_bus.address)
    bus.call(*GET_ID)
    runs: list = []

    def setup(call):
        runs.append(1)
        if len(runs) == 1:
            raise BusError("no reply within 25s", "timeout")
        call(*GET_ID)
    bus.add_setup("k", setup)
    assert runs == []                     # no I/O when registering
    with pytest.raises(BusError, match="no reply"):
        bus.ready()
    bus.ready()
    bus.ready()
    assert len(runs) == 2                 # again after it failed, then never again on this connection
    bus.close()


def test_a_setup_registered_while_readying_runs_in_the_same_pass(private_bus):
    """The window where a connection is being set up: what is registered
    meanwhile is done before ready() returns."""
    bus = Bus(private_bus.address)
    runs: list = []
    bus.add_setup("first", lambda call: (runs.append("first"), bus.add_setup("second", second)))

    def second(call):
        runs.append("second")
    bus.ready()
    assert runs == ["first", "second"]
    bus.close()


def test_a_failed_add_match_is_added_again(private_bus):
    bus = Bus(private_bus.address)
    got: list = []
    bus.subscribe(MatchRule(type="signal", interface="org.freedesktop.DBus", member="NameOwnerChanged"),
                  lambda msg: msg is not None and got.append(msg))
    real = bus._add_match
    failures = [BusError("no reply within 25s", "timeout")]

    def flaky(conn, rule):
        if failures:
            raise failures.pop()
        real(conn, rule)
    bus._add_match = flaky
    with pytest.raises(BusError):
        bus.ready()
    bus.ready()
    other = Bus(private_bus.address)
    other.call(*GET_ID)
    wait_for(lambda: got, timeout=10, what="a signal through the match added again")
    other.close()
    bus.close()


def test_the_local_match_keeps_the_path_namespace():
    bus = Bus("unix:path=/nonexistent/bus")
    sub = bus.subscribe(MatchRule(type="signal", sender="org.freedesktop.systemd1",
                                  path_namespace="/org/freedesktop/systemd1/unit",
                                  interface="org.freedesktop.DBus.Properties", member="PropertiesChanged"),
                        lambda msg: None)
    inside = new_signal(DBusAddress("/org/freedesktop/systemd1/unit/web_2eservice",
                                    interface="org.freedesktop.DBus.Properties"), "PropertiesChanged")
    outside = new_signal(DBusAddress("/org/freedesktop/systemd1/job/7",
                                     interface="org.freedesktop.DBus.Properties"), "PropertiesChanged")
    assert sub.local.matches(inside)
    assert not sub.local.matches(outside)


TRUSTED = "org.example.Trusted"


class Peer:
    """Another client of the bus (jeepney's blocking connection)."""

    def __init__(self, address: str, owns: str | None = None) -> None:
        self.conn = open_dbus_connection(address)
        if owns:
            reply = self.conn.send_and_get_reply(message_bus.RequestName(owns))
            assert reply.body == (1,), reply.body   # the primary owner

    def signal(self, text: str, to: str | None = None) -> None:
        msg = new_signal(DBusAddress("/org/example", interface="org.example.I"), "Ping", "s", (text,))
        if to:   # unicast: straight to one peer, past its match rules
            msg.header.fields[HeaderFields.destination] = to
        self.conn.send(msg)
        # a round trip: the bus has routed the signal before it answers
        self.conn.send_and_get_reply(message_bus.GetId())

    def release(self) -> None:
        self.conn.send_and_get_reply(message_bus.ReleaseName(TRUSTED))

    def close(self) -> None:
        self.conn.close()


def test_signals_from_anyone_but_the_names_owner_are_dropped(private_bus):
    bus = Bus(private_bus.address)
    got: list = []
    bus.subscribe(MatchRule(type="signal", sender=TRUSTED, interface="org.example.I", member="Ping"),
                  lambda msg: got.append(msg.body[0] if msg is not None else None))
    owner = Peer(private_bus.address, owns=TRUSTED)
    forger = Peer(private_bus.address)
    bus.ready()
    me = bus.conn.unique_name
    forger.signal("forged", to=me)
    owner.signal("one")
    wait_for(lambda: "one" in got, timeout=10, what="the owner's signal")
    assert got == ["one"]

    # the name changes hands: the old owner is now anyone, the new one trusted
    successor = Peer(private_bus.address)
    owner.release()
    successor.conn.send_and_get_reply(message_bus.RequestName(TRUSTED))
    wait_for(lambda: bus.owners.get(TRUSTED) == successor.conn.unique_name, timeout=10,
             what="the new owner seen")
    owner.signal("old owner", to=me)
    successor.signal("two")
    wait_for(lambda: "two" in got, timeout=10, what="the new owner's signal")
    assert [text for text in got if text is not None] == ["one", "two"]
    assert None in got          # told that the name changed hands: anything may have changed
    for peer in (owner, forger, successor):
        peer.close()
    bus.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_closing_a_connection_closes_all_its_fds(private_bus):
    before = _open_fds()
    for _ in range(10):
        bus = Bus(private_bus.address)
        bus.call(*GET_ID)
        bus.close()
    wait_for(lambda: _open_fds() <= before, timeout=10,
             what=f"the fds back to {before} (now {_open_fds()})")
