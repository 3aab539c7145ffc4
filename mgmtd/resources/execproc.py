"""The processes an ``exec`` starts: how a command line becomes argv, the
environment and credentials it runs with, running it to its end with its
output captured, stopping it with everything it started, and the signal a
graph names for that."""

from __future__ import annotations

import grp
import os
import pwd
import selectors
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from mgmtd.resources.base import FieldError, ResourceError, shown

KILL_GRACE = 2.0           # seconds between the stop signal and SIGKILL for a stopped command
OUTPUT_LIMIT = 4000        # characters of command output kept for the debug report


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Signals the command and everything it started (it leads its own group)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float | None = None) -> None:
    """Sends ``sig`` to the group, then SIGKILL after ``grace`` seconds (default
    KILL_GRACE; at once when the command obeyed): a command that ignores ``sig``
    still stops."""
    kill_group(proc, sig)
    deadline = time.monotonic() + (KILL_GRACE if grace is None else grace)
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # also reaches children that outlived a leader which obeyed the signal
    kill_group(proc, signal.SIGKILL)


def signal_number(name: str | None) -> int:
    """mgmt's ``sig``: a signal by its full name (``SIGINT``); unset or '' =
    SIGTERM. A near miss is refused with the name meant, as mgmt does."""
    if not name:
        return signal.SIGTERM
    names = {sig.name: sig.value for sig in signal.Signals}
    if name in names:
        return names[name]
    for guess in (name.upper(), "SIG" + name.upper()):
        if guess in names:
            raise FieldError("sig", f"invalid sig {shown(name)}, did you mean {shown(guess)}?")
    raise FieldError("sig", f"invalid sig {shown(name)} (a signal name such as 'SIGINT')")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def clip(text: str) -> str:
    return text if len(text) <= OUTPUT_LIMIT else "..." + text[-OUTPUT_LIMIT:]


def split_command(command: str, shell: str | None, field_name: str, args: list | None = None) -> list[str]:
    if shell:
        return [shell, "-c", command]
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise FieldError(field_name, f"cannot split {field_name} {shown(command)}: {err}") from None
    if not argv:
        raise FieldError(field_name, f"{field_name} is empty")
    return argv + [str(arg) for arg in args or ()]


def resolve_program(argv: list[str]) -> list[str]:
    """A program without a slash is looked up on mgmtd's own PATH, as mgmt's
    Go does: the command's environment (only ``env``) may have no PATH."""
    if "/" in argv[0]:
        return argv
    found = shutil.which(argv[0])
    return [found, *argv[1:]] if found else argv


def environment(env: dict[str, Any] | None) -> dict[str, str]:
    """mgmt's meaning: the command gets exactly ``env``, nothing of mgmtd's own
    environment (unset = an empty one)."""
    return {key: str(value) for key, value in (env or {}).items()}


def _uid(user: str | int) -> int:
    if isinstance(user, int) or user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ResourceError(f"user {shown(user)} does not exist") from None


def _gid(group: str | int) -> int:
    if isinstance(group, int) or group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ResourceError(f"group {shown(group)} does not exist") from None


@dataclass(frozen=True)
class Credential:
    """Whom a command runs as: mgmt's getCredential. Nothing changes when
    user and group are mgmtd's own; otherwise both ids are set (an unset one
    stays mgmtd's) and the supplementary groups are dropped, which needs root."""

    uid: int
    gid: int

    def popen_args(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def credential(user: str | int | None, group: str | int | None,
               current: tuple[int, int] | None = None) -> Credential | None:
    if user in (None, "") and group in (None, ""):
        return None
    uid, gid = current or (os.getuid(), os.getgid())
    wanted = Credential(_uid(user) if user not in (None, "") else uid,
                        _gid(group) if group not in (None, "") else gid)
    if (wanted.uid, wanted.gid) == (uid, gid):
        return None
    if uid != 0:
        raise ResourceError("running a command as another user or group needs root "
                            f"(wanted uid {wanted.uid} gid {wanted.gid}, mgmtd runs as uid {uid} gid {gid})")
    return wanted


@dataclass
class Output:
    """A finished command: its status, its stdout, its stderr, and both as
    they arrived (mgmt's combined output, what ``ifequals`` compares)."""

    status: int
    stdout: str
    stderr: str
    combined: str


def collect_output(proc: subprocess.Popen, deadline: float | None) -> Output:
    """Reads both pipes as the command writes them until both close, then
    waits for it. Raises subprocess.TimeoutExpired past ``deadline`` (monotonic)."""
    out, err, both = bytearray(), bytearray(), bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(proc.args, 0)
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                both.extend(chunk)
    left = None if deadline is None else max(deadline - time.monotonic(), 0)
    status = proc.wait(timeout=left)
    return Output(status, out.decode(errors="replace"), err.decode(errors="replace"),
                  both.decode(errors="replace"))
