"""svc without systemd: names and object paths, the decision table from unit
properties to actions, error texts, validation and autoedges through the
loader, check_apply against a fake systemd bus, and the shared D-Bus layer
against a private dbus-daemon (connect, signals, losing and regaining it)."""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest
from jeepney import HeaderFields, MatchRule

from mgmtd.graph import autoedges
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
    ("running", "", False, seen("deactivating"), []),       # someone's stop runs: its end is an event
    ("stopped", "", False, seen("activating"), []),
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
        self.units = units
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
        setup(lambda *args, **kw: ())

    def subscribe(self, rule, callback):
        self.subscribers.append((rule, callback))
        return type("Sub", (), {"close": lambda s: None})()

    def call(self, dest, path, interface, method, signature=None, body=(), timeout=None):
        self.calls.append(method)
        if method == "LoadUnit":
            return (object_path(body[0]),)
        if method in ("StartUnit", "StopUnit", "RestartUnit", "TryRestartUnit"):
            unit = self.units[body[0]]
            self.jobs += 1
            job = f"/org/freedesktop/systemd1/job/{self.jobs}"
            if self.job_result == "done":
                unit["ActiveState"] = "inactive" if method == "StopUnit" else self.after_start
                unit["InvocationID"] = bytes([self.jobs])
            for rule, callback in self.subscribers:
                if rule.header_fields.get("member") == "JobRemoved":
                    callback(_signal("JobRemoved", (self.jobs, job, body[0], self.job_result)))
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
        return unit


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
    assert res.check_apply(True) is False          # a retry starts it again
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
        wait_for(self.socket.exists, timeout=10, what="the private bus")

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
