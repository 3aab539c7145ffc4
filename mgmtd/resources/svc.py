"""``svc``: a systemd service, running or stopped, enabled or disabled
(mgmt's svc), through systemd's D-Bus API.

Every svc of an engine shares one connection to the bus (``dbus.buses``).
Drift arrives as signals: the unit's PropertiesChanged, JobRemoved for the
unit, UnitFilesChanged and the end of a daemon-reload. A start or stop waits
for its job's JobRemoved, so a failed start is this resource's error."""

from __future__ import annotations

import os
import pwd
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from jeepney import HeaderFields, MatchRule, Message

from mgmtd.resources.base import Field, FieldError, Resource, ResourceError, shown
from mgmtd.resources.dbus import (
    Bus,
    BusError,
    BusHold,
    Caller,
    buses,
    session_address,
    system_address,
)
from mgmtd.resources.svcplan import (
    UNIT_PREFIX,
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

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
UNIT_PATHS = UNIT_PREFIX.rstrip("/")
JOB_WAIT = 300.0        # seconds a start or stop may take before it is this resource's error
JOBS_KEPT = 4096        # finished jobs (of every unit) remembered for a waiter not yet asking
JOB_METHODS = {"start": "StartUnit", "stop": "StopUnit", "restart": "RestartUnit",
               "try-restart": "TryRestartUnit"}


def _subscribe_manager(call: Caller) -> None:
    """systemd sends unit and job signals only while a client is subscribed;
    a subscription lasts as long as the connection."""
    try:
        call(SYSTEMD, MANAGER_PATH, MANAGER, "Subscribe")
    except BusError as err:
        if not err.name.endswith("AlreadySubscribed"):
            raise


class SystemdSignals:
    """systemd's signals on one bus connection, matched once for every svc of
    the engine (four match rules whatever the number of units: the bus caps
    rules per connection, 512 on dbus-daemon's system bus) and handed to the
    ``UnitEvents`` of the unit they are about, by the unit's object path as
    LoadUnit gave it (systemd names a unit by its primary name, never by an
    alias). Finished jobs are kept by job path, as systemctl waits for them."""

    def __init__(self, bus: Bus) -> None:
        self.lock = threading.Lock()
        self.units: dict[str, set[UnitEvents]] = {}     # by object path
        self.jobs: OrderedDict[str, str] = OrderedDict()   # finished job path -> result
        self.cond = threading.Condition(self.lock)
        manager = {"type": "signal", "sender": SYSTEMD, "path": MANAGER_PATH, "interface": MANAGER}
        rules = [MatchRule(type="signal", sender=SYSTEMD, path_namespace=UNIT_PATHS,
                           interface="org.freedesktop.DBus.Properties", member="PropertiesChanged"),
                 MatchRule(**manager, member="JobRemoved"),
                 MatchRule(**manager, member="UnitFilesChanged"),
                 MatchRule(**manager, member="Reloading")]
        for rule in rules:
            bus.subscribe(rule, self._signal)

    def add(self, events: UnitEvents) -> None:
        with self.lock:
            self.units.setdefault(events.path, set()).add(events)

    def remove(self, events: UnitEvents) -> None:
        with self.lock:
            self.units.get(events.path, set()).discard(events)

    def rekey(self, events: UnitEvents, path: str) -> None:
        """``events`` is about the unit at ``path`` from now on."""
        with self.lock:
            if events.path == path:
                return
            self.units.get(events.path, set()).discard(events)
            events.path = path
            self.units.setdefault(path, set()).add(events)

    def _for(self, path: str | None) -> list[UnitEvents]:
        with self.lock:
            if path is None:
                return [events for group in self.units.values() for events in group]
            return list(self.units.get(path, ()))

    def wait_job(self, job: str, deadline: float, stop: threading.Event) -> str | None:
        """The job's result, or None when the deadline passed or ``stop`` was set."""
        with self.cond:
            while job not in self.jobs:
                left = deadline - time.monotonic()
                if left <= 0 or stop.is_set():
                    return None
                self.cond.wait(min(left, 0.5))
            return self.jobs.pop(job)

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def _signal(self, msg: Message | None) -> None:
        if msg is None:        # the connection was lost or is back: anything may have changed
            for events in self._for(None):
                events.changed()
            return
        member = msg.header.fields.get(HeaderFields.member)
        if member == "PropertiesChanged":
            for events in self._for(msg.header.fields.get(HeaderFields.path)):
                events.changed()
        elif member == "JobRemoved" and len(msg.body) == 4:
            _, job, unit, result = msg.body
            with self.cond:
                self.jobs[job] = result
                while len(self.jobs) > JOBS_KEPT:
                    self.jobs.popitem(last=False)
                self.cond.notify_all()
            for events in self._for(object_path(unit)):
                events.changed()
        elif member == "UnitFilesChanged" or (member == "Reloading" and msg.body[:1] == (False,)):
            for events in self._for(None):   # the end of a reload, not its start
                events.changed()


class UnitEvents:
    """The signals about one unit: they poke the resource's watch and wake a
    check that waits for the unit to land in a state."""

    def __init__(self, signals: SystemdSignals, unit: str) -> None:
        self.unit = unit
        self.path = object_path(unit)   # until LoadUnit names the primary unit
        self.signals = signals
        self.poke: Callable[[], None] | None = None
        self.seen = 0                   # signals about the unit so far
        self.cond = threading.Condition()
        signals.add(self)

    def changed(self) -> None:
        with self.cond:
            self.seen += 1
            self.cond.notify_all()
        poke = self.poke
        if poke is not None:
            poke()

    def count(self) -> int:
        with self.cond:
            return self.seen

    def wait_change(self, since: int, deadline: float, stop: threading.Event) -> bool:
        """True once a signal about the unit came after ``count()`` was
        ``since``; False when the deadline passed or ``stop`` was set."""
        with self.cond:
            while self.seen == since:
                left = deadline - time.monotonic()
                if left <= 0 or stop.is_set():
                    return False
                self.cond.wait(min(left, 0.5))
            return True

    def wait_job(self, job: str, deadline: float, stop: threading.Event) -> str | None:
        return self.signals.wait_job(job, deadline, stop)

    def rekey(self, path: str) -> None:
        self.signals.rekey(self, path)

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()
        self.signals.wake()

    def close(self) -> None:
        self.poke = None
        self.signals.remove(self)


class SvcResource(Resource):
    kind = "svc"
    FIELDS = {
        "state": Field((str,), "", doc="running, stopped, or '' (not managed)"),
        "startup": Field((str,), "", doc="enabled, disabled, or '' (not managed)"),
        "session": Field((bool,), False, doc="the user's own service manager (systemd --user) "
                         "instead of the system's"),
    }

    def __init__(self, name: str, params: dict, meta=None) -> None:
        super().__init__(name, params, meta)
        self.unit = unit_name(name)
        self.hold = BusHold(lambda: buses(self.ctx.shared), self._address)
        self.lock = threading.Lock()
        self.events: UnitEvents | None = None
        self.stopping = threading.Event()
        self.started: bytes | None = None   # InvocationID of a start of ours not yet seen running
        # a start of ours that died before it ran, and its error: the unit is not
        # started again while it stays failed in that same invocation (its own
        # failure signals would otherwise restart it in a loop), unless the
        # engine retries (meta.retry), a refresh asks, or its unit file changed
        self.gave_up: tuple[bytes, str] | None = None

    def _address(self) -> str:
        if self.session:
            return session_address(os.getuid(), dict(os.environ))
        return system_address(dict(os.environ))

    def identity(self) -> tuple:
        return ("svc", bool(self.session), self.unit)

    def validate(self) -> None:
        if self.state not in ("running", "stopped", ""):
            raise FieldError("state", f"state must be 'running', 'stopped' or '' (not managed), "
                             f"not {shown(self.state)}")
        if self.startup not in ("enabled", "disabled", ""):
            raise FieldError("startup", f"startup must be 'enabled', 'disabled' or '' (not managed), "
                             f"not {shown(self.startup)}")
        problem = unit_problem(self.unit)
        if problem:
            raise FieldError("name", problem)

    # --- autoedges ----------------------------------------------------------------
    def autoedge_requires(self) -> list[str]:
        """After the package shipping the unit file, the file resource writing
        it (``file:PATH``) and the one managing its drop-in directory."""
        unit = self.unit
        if self.session:
            dirs = ["/etc/systemd/user"]
            try:
                dirs.append(os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".config/systemd/user"))
            except KeyError:
                pass
            shipped = ["/usr/lib/systemd/user", "/lib/systemd/user"]
        else:
            dirs = ["/etc/systemd/system"]
            shipped = ["/lib/systemd/system", "/usr/lib/systemd/system"]
        return ([f"pkgfile:{d}/{unit}" for d in shipped] + [f"file:{d}/{unit}" for d in dirs]
                + [f"{d}/{unit}.d" for d in dirs])

    # --- the bus ------------------------------------------------------------------------
    def _unit_events(self) -> tuple[Bus, UnitEvents]:
        """Registers what this svc needs on the bus; no I/O (start_watch runs
        on the engine's control thread): the next ``bus.ready()`` does it."""
        bus = self.hold.get()
        bus.add_setup("systemd", _subscribe_manager)
        with self.lock:
            if self.events is None:
                self.events = UnitEvents(bus.attachment("systemd", SystemdSignals), self.unit)
            return bus, self.events

    def _bus_error(self, err: BusError) -> ResourceError:
        if err.name.endswith("ServiceUnknown") or err.name.endswith("NameHasNoOwner"):
            where = "the user's session" if self.session else "the system bus"
            return ResourceError(f"{self.unit}: no systemd on {where}: {err}")
        return ResourceError(f"{self.unit}: {err}")

    def start_watch(self, poke: Callable[[], None]) -> Callable[[], None] | None:
        _, events = self._unit_events()
        events.poke = poke

        def stop() -> None:
            events.poke = None
        return stop

    def close(self) -> None:
        with self.lock:
            events, self.events = self.events, None
        if events is not None:
            events.close()
        self.hold.close()

    def interrupt(self) -> None:
        self.stopping.set()
        events = self.events
        if events is not None:
            events.wake()

    # --- check/apply --------------------------------------------------------------------
    def check_apply(self, apply: bool) -> bool:
        try:
            bus, events = self._unit_events()
            bus.ready()   # systemd's Subscribe and the signal matches, before looking
            return self._check_apply(bus, events, apply)
        except BusError as err:
            raise self._bus_error(err) from None

    def _observe(self, bus: Bus, events: UnitEvents) -> tuple[str, dict]:
        path, = bus.call(SYSTEMD, MANAGER_PATH, MANAGER, "LoadUnit", "s", (self.unit,))
        events.rekey(path)   # an alias is loaded as its primary unit, whose signals these are
        return path, bus.get_all(SYSTEMD, path, UNIT)

    def _check_apply(self, bus: Bus, events: UnitEvents, apply: bool) -> bool:
        """A unit between states (a job of someone else's under way) is waited
        for, holding this check (so the engine is not converged meanwhile)
        until a signal about the unit, then looked at again."""
        deadline = time.monotonic() + JOB_WAIT
        changed = False
        while True:
            since = events.count()
            path, props, actions = self._plan(bus, events)
            if not actions:
                return not changed
            todo = [action for action in actions if action.verb != "wait"]
            if not apply:
                for action in actions:
                    self.ctx.report("info", action_text(action, self.unit, self.refresh, done=False))
                return False
            if todo:   # then, if it is still between states, wait: at most once per signal
                self._act(bus, events, path, props, todo)
                changed = True
            if actions[-1].verb != "wait":
                return False
            if self.stopping.is_set():
                raise ResourceError("interrupted: mgmtd is stopping")
            if not events.wait_change(since, deadline, self.stopping):
                if self.stopping.is_set():
                    raise ResourceError("interrupted: mgmtd is stopping")
                raise ResourceError(f"{self.unit} is still {actions[-1].during} after {JOB_WAIT:g}s "
                                    "(a start or stop under way that does not end)")

    def _plan(self, bus: Bus, events: UnitEvents) -> tuple[str, dict, list[Action]]:
        path, props = self._observe(bus, events)
        error = props.get("LoadError") or ("", "")
        seen = Observed(props.get("LoadState", ""), props.get("ActiveState", ""),
                        props.get("UnitFileState", ""), error[1] if len(error) > 1 else "")
        invocation = props.get("InvocationID") or None
        if seen.running:
            self.started = None
        elif (self.state == "running" and seen.active_state == "failed" and self.started is not None
              and invocation == self.started):
            # our own start that died before it was ever seen running: an error, not a loop
            self.started = None
            raise self._give_up(invocation, self._failure(bus, path, "start", "failed", after=True))
        if self.gave_up is not None:
            failed_again = (self.state == "running" and seen.active_state == "failed"
                            and invocation == self.gave_up[0])
            if not failed_again or self.retrying or self.refresh or props.get("NeedDaemonReload"):
                self.gave_up = None
            else:
                raise ResourceError(self.gave_up[1])
        try:
            return path, props, plan(self.unit, self.state, self.startup, self.refresh, seen)
        except ValueError as err:
            raise ResourceError(str(err)) from None

    def _act(self, bus: Bus, events: UnitEvents, path: str, props: dict, actions: list[Action]) -> None:
        if props.get("NeedDaemonReload") and any(a.verb in JOB_METHODS for a in actions):
            self.ctx.report("info", f"reloading systemd: the unit file of {self.unit} changed on disk")
            bus.call(SYSTEMD, MANAGER_PATH, MANAGER, "Reload", timeout=JOB_WAIT)
        for action in actions:
            if action.verb in JOB_METHODS:
                self._job(bus, events, path, action)
            else:
                self._startup(bus, action)
            self.ctx.report("info", action_text(action, self.unit, self.refresh, done=True))

    def _startup(self, bus: Bus, action: Action) -> None:
        if action.verb == "enable":
            carries, _ = bus.call(SYSTEMD, MANAGER_PATH, MANAGER, "EnableUnitFiles", "asbb",
                                  ([self.unit], False, True))
            if not carries:
                raise ResourceError(f"{self.unit} cannot be enabled: its unit file has no [Install] section")
        else:
            bus.call(SYSTEMD, MANAGER_PATH, MANAGER, "DisableUnitFiles", "asb", ([self.unit], action.runtime))
        # as systemctl enable/disable do, so the manager sees the new symlinks
        bus.call(SYSTEMD, MANAGER_PATH, MANAGER, "Reload", timeout=JOB_WAIT)

    def _job(self, bus: Bus, events: UnitEvents, path: str, action: Action) -> None:
        if self.stopping.is_set():
            raise ResourceError("interrupted: mgmtd is stopping")
        job, = bus.call(SYSTEMD, MANAGER_PATH, MANAGER, JOB_METHODS[action.verb], "ss", (self.unit, "replace"))
        result = events.wait_job(job, time.monotonic() + JOB_WAIT, self.stopping)
        if result is None:
            if self.stopping.is_set():
                raise ResourceError("interrupted: mgmtd is stopping")
            raise ResourceError(f"{action.verb} of {self.unit} did not finish within {JOB_WAIT:g}s "
                                "(its job is still queued or running)")
        problem = job_problem(action.verb, self.unit, result)
        if problem and result == "failed":
            problem = self._failure(bus, path, action.verb, result)
        if problem:
            raise ResourceError(problem)
        if action.verb in ("start", "restart", "try-restart"):
            props = bus.get_all(SYSTEMD, path, UNIT)
            if props.get("ActiveState") == "failed":
                raise self._give_up(props.get("InvocationID") or None,
                                    self._failure(bus, path, action.verb, "failed", after=True))
            self.started = props.get("InvocationID") or None

    def _give_up(self, invocation: bytes | None, message: str) -> ResourceError:
        if invocation is not None:
            self.gave_up = (invocation, message)
        return ResourceError(message)

    def _failure(self, bus: Bus, path: str, verb: str, result: str, after: bool = False) -> str:
        """A failed job's message, with the service's Result and its main process's end."""
        try:
            service = bus.get_all(SYSTEMD, path, SERVICE)
        except BusError:
            service = {}
        how = exit_text(service.get("ExecMainCode", 0), service.get("ExecMainStatus", 0))
        text = job_problem(verb, self.unit, result, service.get("Result", ""), how)
        return text.replace(" failed to start", " failed after it was started", 1) if after else text
