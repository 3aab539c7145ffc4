"""The local account database, as the ``user`` and ``group`` kinds see it:
/etc/passwd and /etc/group read directly (parsed by pure functions, cached by
file identity), changed only through the shadow tools (useradd, usermod,
userdel, groupadd, groupmod, groupdel), whose exit codes become one-line errors.

Why not ``pwd``/``grp``: they answer through NSS, which may add accounts from
LDAP or sssd that the shadow tools neither see nor change (a user "exists" that
useradd would still create), and may answer from nscd's cache, stale for a
while right after a useradd (the check would see the old state and apply
again). The files are what the tools change, so they are what the check reads."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from mgmtd.resources.base import FieldError, Meta, Resource, ResourceError, shown

NAME_MAX = 32       # longest user or group name the shadow tools accept
TOOL_TIMEOUT = 120  # seconds; the tools wait for the files' locks a few seconds at most

# Upstream shadow-utils' rule (chkname.c): the portable filename characters, a
# final '$' for Samba machine accounts, no leading '-'. Debian's shadow accepts
# more (any character but ':', ',' and blanks), but a name outside this set is
# not portable and breaks other tools (a numeric name reads as an id).
_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?")


def name_problem(name: str, what: str = "user") -> str:
    """Why shadow-utils would refuse ``name`` as a user (or group) name, or ""."""
    if not name:
        return f"{what} name is empty"
    if len(name) > NAME_MAX:
        return f"{what} name {shown(name)} is longer than {NAME_MAX} characters"
    if name.startswith("-"):
        return f"{what} name {shown(name)} must not start with '-'"
    if name in (".", "..") or name.isdigit():
        why = "would be read as an id" if name.isdigit() else "is a directory name"
        return f"{what} name {shown(name)} {why}"
    if not _NAME.fullmatch(name):
        return (f"{what} name {shown(name)} is not valid: letters, digits, '_', '.', '-' "
                "(not first) and a final '$' only")
    return ""


def path_problem(value: str, what: str) -> str:
    """Why ``value`` cannot be a passwd path field (home, shell), or ""."""
    if not value.startswith("/"):
        return f"{what} must be an absolute path, not {shown(value)}"
    if any(ch in value for ch in ":\n"):
        return f"{what} {shown(value)} must not contain ':' or a newline (passwd's separators)"
    return ""


# --- parsing (pure) -------------------------------------------------------------

@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def colon_records(text: str, count: int) -> list[list[str]]:
    """The records of a passwd-style file with at least ``count`` fields.
    Blank lines, comments and NIS compat lines (``+``/``-``: entries that
    come from elsewhere, not this file) are no local accounts."""
    records = []
    for line in text.splitlines():
        if not line.strip() or line[0] in "#+-":
            continue
        fields = line.split(":")
        if len(fields) >= count:
            records.append(fields)
    return records


def _id(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def parse_passwd(text: str) -> dict[str, PasswdEntry]:
    """Users by name; the first line of a name wins, as with the C library."""
    users: dict[str, PasswdEntry] = {}
    for name, _pw, uid, gid, _gecos, home, shell, *_ in colon_records(text, 7):
        uid_n, gid_n = _id(uid), _id(gid)
        if name and uid_n is not None and gid_n is not None and name not in users:
            users[name] = PasswdEntry(name, uid_n, gid_n, home, shell)
    return users


def parse_group(text: str) -> dict[str, GroupEntry]:
    groups: dict[str, GroupEntry] = {}
    for name, _pw, gid, members, *_ in colon_records(text, 4):
        gid_n = _id(gid)
        if name and gid_n is not None and name not in groups:
            listed = tuple(m.strip() for m in members.split(",") if m.strip())
            groups[name] = GroupEntry(name, gid_n, listed)
    return groups


@dataclass(frozen=True)
class Accounts:
    """One consistent look at the users and groups."""

    users: dict[str, PasswdEntry]
    groups: dict[str, GroupEntry]

    # Indexes, built on first use: one snapshot serves every resource's check
    # until a file changes (the frozen dataclass still takes cached_property's
    # direct write; two threads racing build the same value).
    @cached_property
    def _groups_by_gid(self) -> dict[int, list[GroupEntry]]:
        index: dict[int, list[GroupEntry]] = {}
        for entry in self.groups.values():
            index.setdefault(entry.gid, []).append(entry)
        return index

    @cached_property
    def _memberships(self) -> dict[str, list[GroupEntry]]:
        index: dict[str, list[GroupEntry]] = {}
        for entry in self.groups.values():
            for member in dict.fromkeys(entry.members):
                index.setdefault(member, []).append(entry)
        return index

    def user_with_uid(self, uid: int, besides: str) -> PasswdEntry | None:
        """Another user than ``besides`` holding ``uid``."""
        return next((u for u in self.users.values() if u.uid == uid and u.name != besides), None)

    def group_with_gid(self, gid: int, besides: str = "") -> GroupEntry | None:
        return next((g for g in self._groups_by_gid.get(gid, ()) if g.name != besides), None)

    def groups_with_gid(self, gid: int) -> list[GroupEntry]:
        return self._groups_by_gid.get(gid, [])

    def supplementary(self, user: str, primary_gid: int) -> frozenset[str]:
        """The groups listing ``user`` as a member, but those sharing its
        primary gid: membership of the primary group is implied (mgmt leaves
        them out the same way)."""
        return frozenset(g.name for g in self._memberships.get(user, ()) if g.gid != primary_gid)

    def primary_users(self, gid: int) -> list[str]:
        return sorted(u.name for u in self.users.values() if u.gid == gid)


# --- reading, cached ---------------------------------------------------------------

class AccountFiles:
    """The account files of one directory, each parsed once per version: a
    version is the file's (inode, mtime, size), taken from the descriptor the
    content is read from, so a file replaced meanwhile is never cached under
    the old one's identity. The shadow tools replace the files by rename
    (a new inode), so every change they make is seen."""

    def __init__(self, directory: str = "/etc") -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._parsed: dict[str, tuple[tuple[int, int, int], Any]] = {}
        self._last: Accounts | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _read(self, name: str, parse: Callable[[str], Any]) -> Any:
        path = self.path(name)
        try:
            with open(path, "rb") as handle:
                st = os.fstat(handle.fileno())
                version = (st.st_ino, st.st_mtime_ns, st.st_size)
                with self._lock:
                    cached = self._parsed.get(name)
                if cached is not None and cached[0] == version:
                    return cached[1]
                data = handle.read()
        except FileNotFoundError:
            return parse("")
        except OSError as err:
            raise ResourceError(f"cannot read {path}: {err.strerror}") from None
        value = parse(data.decode("utf-8", errors="replace"))
        with self._lock:
            self._parsed[name] = (version, value)
        return value

    def snapshot(self) -> Accounts:
        users, groups = self._read("passwd", parse_passwd), self._read("group", parse_group)
        with self._lock:
            last = self._last
            if last is None or last.users is not users or last.groups is not groups:
                last = self._last = Accounts(users, groups)
            return last


def system_files(shared: dict[str, Any]) -> AccountFiles:
    """The engine's reader of /etc's account files, kept in the context's
    ``shared`` dict: every user and group resource of the engine reads through
    it, so each file version is parsed once for all of them."""
    files = shared.get("accounts")
    return files if files is not None else shared.setdefault("accounts", AccountFiles("/etc"))


# --- changing, through the shadow tools ---------------------------------------------

Runner = Callable[[list[str]], subprocess.CompletedProcess]

# Exit codes of the shadow tools (their man pages), as a reason in a message.
_COMMON = {1: "cannot update /etc/passwd", 2: "invalid command syntax", 3: "invalid argument",
           10: "cannot update /etc/group"}
EXIT_MEANINGS: dict[str, dict[int, str]] = {
    "useradd": {4: "uid already in use", 6: "group does not exist", 9: "name already in use",
                12: "cannot create the home directory"},
    "usermod": {4: "uid already in use", 6: "user or group does not exist", 8: "user is logged in",
                9: "name already in use", 12: "cannot move the home directory"},
    "userdel": {6: "user does not exist", 8: "user is logged in", 12: "cannot remove the home directory"},
    "groupadd": {4: "gid already in use", 9: "name already in use"},
    "groupmod": {4: "gid already in use", 6: "group does not exist", 9: "name already in use"},
    "groupdel": {6: "group does not exist", 8: "it is a user's primary group"},
}


def run_subprocess(argv: list[str]) -> subprocess.CompletedProcess:
    # C locale: the tools' messages end up in our one-line errors, in English
    env = {**os.environ, "LC_ALL": "C"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=TOOL_TIMEOUT,
                          stdin=subprocess.DEVNULL)


def failure(argv: list[str], returncode: int, stderr: str) -> str:
    """One line: which tool failed, what its exit code means, what it said."""
    tool = argv[0]
    meaning = EXIT_MEANINGS.get(tool, {}).get(returncode) or _COMMON.get(returncode) or "failed"
    said = [line.strip() for line in stderr.splitlines() if line.strip()]
    # a warning may come first ("missing or non-executable shell"): the error is last
    detail = said[-1].removeprefix(f"{tool}: ") if said else ""
    return f"{tool} failed ({meaning}, exit {returncode})" + (f": {detail}" if detail else "")


def run_tool(argv: list[str], runner: Runner = run_subprocess) -> None:
    """Runs a shadow tool; raises ResourceError with one clear line when it fails."""
    try:
        done = runner(argv)
    except FileNotFoundError:
        raise ResourceError(f"{argv[0]} not found: the shadow tools (package passwd) are "
                            "needed to manage users and groups") from None
    except subprocess.TimeoutExpired:
        raise ResourceError(f"{argv[0]} did not finish within {TOOL_TIMEOUT} s") from None
    if done.returncode != 0:
        raise ResourceError(failure(argv, done.returncode, done.stderr or ""))


@dataclass(frozen=True)
class Plan:
    """What to run to bring a user or group into state, and how to say it."""

    argv: list[str]
    what: str                         # "create user x"
    would: str                        # "create user x (uid 1002)", for noop
    done: str                         # "created user x (uid 1002)", for the log
    # why it cannot run now (a group missing, the uid taken): an error when
    # applying; noop only mentions it, since resources before it may fix it
    problems: list[str] = field(default_factory=list)

    def refusal(self) -> str:
        return f"cannot {self.what}: {'; '.join(self.problems)}"

    def noop_line(self) -> str:
        return f"would {self.would}" + (f"; now {'; '.join(self.problems)}" if self.problems else "")


class AccountResource(Resource):
    """What user and group share: the account files they read (the engine's
    /etc, or a test's), the tools' runner, and the checks of name and state."""

    STATES = ("exists", "absent")

    def __init__(self, name: str, params: dict[str, Any], meta: Meta | None = None) -> None:
        super().__init__(name, params, meta)
        self.files: AccountFiles | None = None   # None: the engine's, /etc (tests give their own)
        self.runner: Runner = run_subprocess

    def account_files(self) -> AccountFiles:
        return self.files if self.files is not None else system_files(self.ctx.shared)

    def validate(self) -> None:
        problem = name_problem(self.name, self.kind)
        if problem:
            raise FieldError("name", problem)
        if self.state not in self.STATES:
            raise FieldError("state", f"state must be 'exists' or 'absent', not {shown(self.state)}")

    def plan(self) -> Plan | None:
        """What brings the account into state; None when it is."""
        raise NotImplementedError

    # --- check/apply; a refresh changes nothing -------------------------------------
    def check_apply(self, apply: bool) -> bool:
        todo = self.plan()
        if todo is None:
            return True
        if not apply:
            self.ctx.report("info", todo.noop_line())
            return False
        if todo.problems:
            raise ResourceError(todo.refusal())
        run_tool(todo.argv, self.runner)
        self.ctx.report("info", todo.done)
        return False
