"""``hostname``: the host's pretty, static and transient hostnames (mgmt's
hostname), through systemd-hostnamed when it can be reached on the system
bus, else directly: /etc/hostname, PRETTY_HOSTNAME in /etc/machine-info and
the kernel's hostname (sethostname).

Drift is seen without hostnamed either way: inotify on both files, and the
kernel's poll notification on /proc/sys/kernel/hostname, which wakes a
poll() with POLLPRI when the UTS hostname changes (how hostnamed itself
learns of it)."""

from __future__ import annotations

import os
import re
import select
import socket
import tempfile
import threading
from collections.abc import Callable

from mgmtd.resources.base import Field, FieldError, Resource, ResourceError, shown
from mgmtd.resources.dbus import BusError, BusHold, buses, system_address

HOSTNAMED = "org.freedesktop.hostname1"
HOSTNAMED_PATH = "/org/freedesktop/hostname1"
ETC_HOSTNAME = "/etc/hostname"
MACHINE_INFO = "/etc/machine-info"
KERNEL_HOSTNAME = "/proc/sys/kernel/hostname"
HOST_NAME_MAX = 64
_LABELS = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")

# the three names, in the order mgmt sets them: (field, hostnamed property, setter, words)
NAMES = (("pretty_hostname", "PrettyHostname", "SetPrettyHostname", "pretty hostname"),
         ("static_hostname", "StaticHostname", "SetStaticHostname", "static hostname"),
         ("transient_hostname", "Hostname", "SetHostname", "transient hostname"))


def hostname_problem(name: str) -> str:
    """Why ``name`` cannot be a static or transient hostname, or "" (systemd's
    rule: dot-separated labels of letters, digits and '-', at most 64 characters)."""
    if len(name) > HOST_NAME_MAX:
        return f"{shown(name)} is longer than {HOST_NAME_MAX} characters"
    if not _LABELS.fullmatch(name):
        return f"{shown(name)} is not a valid hostname (letters, digits and '-', labels separated by '.')"
    return ""


def static_from(text: str) -> str:
    """/etc/hostname's name: its first line that is not empty or a comment."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    return ""


def env_unquote(value: str) -> str:
    """A value as systemd reads an environment-style file: '...' literal,
    "..." with \\ before \\, ", ` and $ dropped, unquoted text with \\
    escaping the next character; whitespace around it ignored."""
    out: list[str] = []
    quote = ""
    chars = iter(value.strip())
    for char in chars:
        if quote == "'":
            quote = "" if char == "'" else quote
            if quote:
                out.append(char)
        elif char == "\\":
            following = next(chars, "")
            if quote == '"' and following not in '"\\`$':
                out.append(char)
            out.append(following)
        elif quote == '"' and char == '"':
            quote = ""
        elif not quote and char in "'\"":
            quote = char
        else:
            out.append(char)
    return "".join(out)


def env_value(text: str, key: str) -> str:
    """A variable of an environment-style file (/etc/machine-info), unquoted."""
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() == key:
            return env_unquote(value)
    return ""


def env_quote(value: str) -> str:
    """Double-quoted as systemd writes such files (\\, ", ` and $ escaped)."""
    return '"' + re.sub(r'([\\"`$])', r"\\\1", value) + '"'


def with_env(text: str, key: str, value: str) -> str:
    """``text`` with ``key`` set to ``value``; its other lines kept as they are."""
    lines = text.splitlines()
    line = f"{key}={env_quote(value)}"
    for index, old in enumerate(lines):
        name, sep, _ = old.strip().partition("=")
        if sep and name.strip() == key:
            lines[index] = line
            break
    else:
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Temp file in the same directory, fsync, rename: never half a file."""
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(prefix=".mgmtd-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


class HostnameResource(Resource):
    kind = "hostname"
    FIELDS = {
        "hostname": Field((str,), "", doc="the name for each of the three not given; default: the "
                          "resource's name"),
        "pretty_hostname": Field((str,), None, doc="free-form name for people; '' = not managed"),
        "static_hostname": Field((str,), None, doc="/etc/hostname, used at boot; '' = not managed"),
        "transient_hostname": Field((str,), None, doc="the kernel's hostname now; '' = not managed"),
    }

    def __init__(self, name: str, params: dict, meta=None) -> None:
        super().__init__(name, params, meta)
        self.hold = BusHold(lambda: buses(self.ctx.shared), lambda: system_address(dict(os.environ)))
        self.fallback_said = False

    def identity(self) -> tuple:
        return ("hostname",)   # one host, one hostname: two resources would fight

    def wanted(self, field_name: str) -> str:
        """What a name should be; '' when it is not managed (mgmt's rule: unset
        falls back to ``hostname``, and that to the resource's name)."""
        value = getattr(self, field_name)
        if value is not None:
            return value
        return self.hostname or self.name

    def validate(self) -> None:
        for field_name in ("static_hostname", "transient_hostname"):
            value = self.wanted(field_name)
            problem = hostname_problem(value) if value else ""
            if problem:
                origin = field_name if getattr(self, field_name) is not None else (
                    "hostname" if self.hostname else "name")
                raise FieldError(origin, f"{field_name.replace('_', ' ')}: {problem}")
        if "\n" in self.wanted("pretty_hostname"):
            raise FieldError("pretty_hostname", "pretty_hostname must be one line")

    # --- events ----------------------------------------------------------------
    def watch_paths(self) -> list[str]:
        return [ETC_HOSTNAME, MACHINE_INFO]

    def start_watch(self, poke: Callable[[], None]) -> Callable[[], None] | None:
        if not self.wanted("transient_hostname"):
            return None
        return KernelHostnameWatch(poke).start()

    def close(self) -> None:
        self.hold.close()

    # --- check/apply -------------------------------------------------------------
    def check_apply(self, apply: bool) -> bool:
        via_hostnamed = self._hostnamed_names()
        current = via_hostnamed or self._direct_names()
        in_state = True
        for field_name, prop, setter, words in NAMES:
            want = self.wanted(field_name)
            if not want or current[prop] == want:
                continue
            in_state = False
            if not apply:
                self.ctx.report("info", f"would set the {words} to {want!r} (now {current[prop]!r})")
                continue
            try:
                if via_hostnamed:
                    self._set_via_hostnamed(prop, setter, want)
                else:
                    self._set_directly(prop, want)
            except BusError as err:
                raise ResourceError(f"cannot set the {words} through hostnamed: {err}") from None
            except OSError as err:
                raise ResourceError(f"cannot set the {words}: {err.strerror or err}") from None
            self.ctx.report("info", f"set the {words} to {want!r} (was {current[prop]!r})")
        return in_state

    def _hostnamed_names(self) -> dict[str, str] | None:
        """The names as hostnamed has them, or None when it cannot be reached
        (no bus, not installed, masked): then the files are the truth."""
        try:
            props = self.hold.get().get_all(HOSTNAMED, HOSTNAMED_PATH, HOSTNAMED)
        except BusError as err:
            if not self.fallback_said:
                self.fallback_said = True
                self.ctx.report("info", f"hostnamed not available ({err}): writing {ETC_HOSTNAME} "
                                f"and {MACHINE_INFO} directly")
            return None
        self.fallback_said = False
        return {prop: str(props.get(prop, "")) for _, prop, _, _ in NAMES}

    def _direct_names(self) -> dict[str, str]:
        return {"PrettyHostname": env_value(_read(MACHINE_INFO), "PRETTY_HOSTNAME"),
                "StaticHostname": static_from(_read(ETC_HOSTNAME)),
                "Hostname": socket.gethostname()}

    def _set_via_hostnamed(self, prop: str, setter: str, want: str) -> None:
        bus = self.hold.get()
        bus.call(HOSTNAMED, HOSTNAMED_PATH, HOSTNAMED, setter, "sb", (want, False))
        if prop == "Hostname" and socket.gethostname() != want:
            # hostnamed (systemd >= 249) keeps the kernel's hostname at a static
            # one that is set: a transient name apart from it is set here
            socket.sethostname(want)

    def _set_directly(self, prop: str, want: str) -> None:
        if prop == "PrettyHostname":
            write_atomically(MACHINE_INFO, with_env(_read(MACHINE_INFO), "PRETTY_HOSTNAME", want))
        elif prop == "StaticHostname":
            write_atomically(ETC_HOSTNAME, want + "\n")
        else:
            socket.sethostname(want)


class KernelHostnameWatch:
    """Pokes when the kernel's hostname changes: /proc/sys/kernel/hostname
    reports POLLPRI (and POLLERR) to a poll() once per change."""

    def __init__(self, poke: Callable[[], None]) -> None:
        self.poke = poke
        self.wake_r, self.wake_w = os.pipe()
        self.thread = threading.Thread(target=self._run, name="hostname-watch", daemon=True)

    def start(self) -> Callable[[], None]:
        self.thread.start()
        return self.stop

    def stop(self) -> None:
        os.write(self.wake_w, b"x")
        self.thread.join(timeout=5)
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _run(self) -> None:
        try:
            fd = os.open(KERNEL_HOSTNAME, os.O_RDONLY)
        except OSError:
            return   # no /proc: inotify on the files is all there is
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI | select.POLLERR)
            poller.register(self.wake_r, select.POLLIN)
            while True:
                ready = poller.poll()
                if any(ready_fd == self.wake_r for ready_fd, _ in ready):
                    return
                self.poke()
        finally:
            os.close(fd)
