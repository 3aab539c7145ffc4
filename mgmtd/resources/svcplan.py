"""What a ``svc`` must do, decided from the unit's properties alone (no bus):
unit names and object paths, the actions that bring a unit into state, and
the one-line messages for units and jobs that went wrong."""

from __future__ import annotations

import re
from dataclasses import dataclass

UNIT_PREFIX = "/org/freedesktop/systemd1/unit/"
SUFFIX = ".service"
NAME_MAX = 255
# systemd's unit name characters (unit_name_is_valid), '@' for templates' instances
_UNIT_CHARS = re.compile(r"[A-Za-z0-9:_.\\@-]+")

# UnitFileState values that no EnableUnitFiles changes: why
CANNOT_ENABLE = {
    "static": "its unit file has no [Install] section",
    "indirect": "it is enabled only through another unit (Also=)",
    "generated": "it is generated at boot (a generator made it)",
    "transient": "it is a transient unit (created at runtime)",
    "masked": "it is masked (systemctl unmask it first)",
    "masked-runtime": "it is masked until reboot (systemctl unmask --runtime it first)",
    "bad": "its unit file is invalid",
    "invalid": "its unit file is invalid",
    "": "it has no unit file",
}


def unit_name(name: str) -> str:
    """mgmt's unit for a svc ``name``: ``name.service``. A name that already
    ends in ``.service`` is taken as the unit itself (mgmt would make it
    ``x.service.service``, a unit that cannot exist)."""
    return name if name.endswith(SUFFIX) else name + SUFFIX


def unit_problem(unit: str) -> str:
    """Why ``unit`` cannot be a systemd unit name, or ""."""
    stem = unit[: -len(SUFFIX)]
    if not stem:
        return "svc needs a unit name"
    if len(unit) > NAME_MAX:
        return f"unit name {unit[:40]}... is longer than {NAME_MAX} characters"
    if not _UNIT_CHARS.fullmatch(unit):
        return (f"{unit!r} is not a systemd unit name (letters, digits and ':', '_', '.', '\\', '@', "
                "'-' only)")
    if stem.endswith("@"):
        return f"{unit} is a template: name one of its instances (like {stem}foo)"
    return ""


def object_path(unit: str) -> str:
    """The unit's D-Bus object path, escaped as systemd does (bus_label_escape):
    every byte but ASCII letters and digits as _XX, a leading digit too."""
    out = []
    for index, byte in enumerate(unit.encode()):
        char = chr(byte)
        if (char.isascii() and char.isalpha()) or (char.isdigit() and index > 0):
            out.append(char)
        else:
            out.append(f"_{byte:02x}")
    return UNIT_PREFIX + "".join(out)


@dataclass(frozen=True)
class Observed:
    """The unit's properties a decision reads."""

    load_state: str                 # loaded, not-found, masked, error, bad-setting
    active_state: str               # active, inactive, failed, activating, deactivating, reloading
    unit_file_state: str            # enabled, disabled, static, masked, ...
    load_error: str = ""            # LoadError's message, when loading failed

    @property
    def running(self) -> bool:
        return self.active_state == "active"

    @property
    def changing(self) -> bool:
        """Between states, a job of systemd's (or a restart) under way: its end
        is a signal of its own, so nothing cancels it."""
        return self.active_state in ("activating", "deactivating", "reloading")


@dataclass(frozen=True)
class Action:
    verb: str            # enable, disable, start, stop, restart, try-restart, wait
    runtime: bool = False  # disable: the enablement lasts until reboot only
    during: str = ""     # wait: the ActiveState whose end is awaited


def settles_into(state: str, seen: Observed) -> bool:
    """The unit is between states and whether it ends up in ``state`` is not
    known yet: not in state, but nothing to do until it lands. (A reload
    under way keeps a unit running.)"""
    if not seen.changing:
        return False
    return not (state == "running" and seen.active_state == "reloading")


def load_problem(unit: str, seen: Observed) -> str:
    """Why the unit cannot be managed at all, or ""."""
    if seen.load_state == "not-found":
        return f"no such unit: {unit} (no unit file in systemd's search path)"
    if seen.load_state in ("error", "bad-setting"):
        why = f": {seen.load_error}" if seen.load_error else ""
        return f"{unit} failed to load ({seen.load_state}){why}"
    return ""


def not_wanted(state: str, startup: str) -> bool:
    """Only absence is asked for (stopped, disabled, or not managed)."""
    return state in ("", "stopped") and startup in ("", "disabled")


def plan(unit: str, state: str, startup: str, refresh: bool, seen: Observed) -> list[Action]:
    """The actions, in order, that bring the unit to ``state``/``startup`` (and
    restart it for a refresh); [] when it is in state. A last ``wait`` means
    the unit is between states (a job under way): check again when it lands.
    Raises ValueError with a one-line reason when no action can."""
    problem = load_problem(unit, seen)
    if problem and seen.load_state == "not-found" and not_wanted(state, startup) and not refresh:
        return []   # a unit that does not exist neither runs nor starts at boot
    if problem:
        raise ValueError(problem)
    actions: list[Action] = []
    ufs = seen.unit_file_state
    if startup == "enabled" and ufs != "enabled":
        if ufs in CANNOT_ENABLE:
            raise ValueError(f"{unit} cannot be enabled: {CANNOT_ENABLE[ufs]} (unit file state {ufs or 'none'})")
        actions.append(Action("enable"))
    elif startup == "disabled" and ufs in ("enabled", "enabled-runtime", "linked", "linked-runtime"):
        actions.append(Action("disable", runtime=ufs.endswith("-runtime")))
    if refresh and state == "running":
        actions.append(Action("restart"))   # starts it as well when it is down
    elif refresh and not state and seen.running:
        actions.append(Action("try-restart"))
    elif state and seen.changing:
        # never replace a start or stop under way (someone's `systemctl stop` would fail)
        if settles_into(state, seen):
            actions.append(Action("wait", during=seen.active_state))
    elif state == "running" and not seen.running:
        if seen.load_state == "masked":
            raise ValueError(f"{unit} is masked: it cannot be started (systemctl unmask it first)")
        actions.append(Action("start"))
    elif state == "stopped" and seen.active_state not in ("inactive", "failed"):
        actions.append(Action("stop"))
    return actions


NOOP_WORDS = {"enable": "enable", "disable": "disable", "start": "start", "stop": "stop",
              "restart": "restart", "try-restart": "restart"}
DONE_WORDS = {"enable": "enabled", "disable": "disabled", "start": "started", "stop": "stopped",
              "restart": "restarted", "try-restart": "restarted"}


def action_text(action: Action, unit: str, refresh: bool, done: bool) -> str:
    """'would start x.service' (noop) or 'started x.service'."""
    if action.verb == "wait":
        return f"{unit} is {action.during}: would check it again when that ends"
    words = DONE_WORDS if done else NOOP_WORDS
    verb = words[action.verb] if done else "would " + words[action.verb]
    why = " (refresh)" if refresh and action.verb in ("restart", "try-restart") else ""
    when = " (enabled until reboot)" if action.runtime else ""
    return f"{verb} {unit}{when}{why}"


def job_problem(verb: str, unit: str, result: str, service_result: str = "", exit_status: str = "") -> str:
    """The error for a job that did not end 'done' (or 'skipped'), or ""."""
    if result in ("done", "skipped"):
        return ""
    word = NOOP_WORDS.get(verb, verb)
    if result == "failed":
        detail = f": {service_result}" if service_result and service_result != "success" else ""
        status = f", {exit_status}" if exit_status else ""
        return f"{unit} failed to {word}{detail}{status} (journalctl -u {unit})"
    if result == "canceled":
        return f"{word} of {unit} was canceled (another job for it replaced ours)"
    if result == "timeout":
        return f"{word} of {unit} timed out (systemd's job timeout)"
    if result == "dependency":
        return f"{unit} did not {word}: a unit it requires failed"
    return f"{word} of {unit} ended with systemd job result {result!r}"


def exit_text(code: int, status: int) -> str:
    """ExecMainCode/ExecMainStatus (a CLD_* code and a status or signal) in words."""
    if code == 1:        # CLD_EXITED
        return f"main process exited with status {status}"
    if code in (2, 3):   # CLD_KILLED, CLD_DUMPED
        return f"main process killed by signal {status}"
    return ""
