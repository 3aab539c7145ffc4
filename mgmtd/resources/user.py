"""``user``: a local user account (mgmt's user), created, changed and deleted
with useradd, usermod and userdel.

The check reads /etc/passwd and /etc/group (accounts.py says why not NSS).
Only the fields given are managed; a change runs usermod with just the fields
that differ. Like mgmt: no ``--create-home`` flag (useradd creates the home
directory only when /etc/login.defs says CREATE_HOME yes; Debian's does not: a
file resource manages it), usermod does not move the home directory's content,
and userdel keeps it."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from mgmtd.resources.accounts import (
    AccountResource,
    Accounts,
    PasswdEntry,
    Plan,
    name_problem,
    path_problem,
)
from mgmtd.resources.base import ID_MAX, Field, FieldError, shown

STATES = ("exists", "absent")


def clean_home(homedir: str) -> str:
    """The home as passwd stores it: cleaned, no trailing slash (mgmt's
    filepath.Clean, which also folds a leading '//')."""
    return "/" + posixpath.normpath(homedir).lstrip("/")


def listing(names: Iterable[str]) -> str:
    return ",".join(sorted(names)) or "(none)"


@dataclass(frozen=True)
class UserSpec:
    """What a user resource asks for; None = not managed."""

    name: str
    state: str = "exists"
    uid: int | None = None
    gid: int | None = None
    group: str | None = None
    groups: tuple[str, ...] | None = None
    home: str | None = None          # cleaned
    shell: str | None = None
    allowduplicateuid: bool = False


def _creation_details(spec: UserSpec) -> str:
    parts = []
    if spec.uid is not None:
        parts.append(f"uid {spec.uid}")
    if spec.gid is not None:
        parts.append(f"gid {spec.gid}")
    if spec.group is not None:
        parts.append(f"group {spec.group}")
    if spec.groups is not None:
        parts.append(f"groups {listing(spec.groups)}")
    if spec.home is not None:
        parts.append(f"home {spec.home}")
    if spec.shell is not None:
        parts.append(f"shell {spec.shell or '(empty)'}")
    return f" ({', '.join(parts)})" if parts else ""


def missing_groups(spec: UserSpec, accounts: Accounts, fields: set[str]) -> list[str]:
    """The groups named in ``fields`` that do not exist (useradd/usermod would
    fail with exit 6), as a message each."""
    missing = []
    if "gid" in fields and accounts.group_with_gid(spec.gid or 0) is None:
        missing.append(f"no group has gid {spec.gid}")
    names = [spec.group] if "group" in fields and spec.group is not None else []
    if "groups" in fields:
        names += spec.groups or ()
    for name in names:
        if name not in accounts.groups:
            missing.append(f"group {name} does not exist")
    return missing


def uid_taken(spec: UserSpec, accounts: Accounts) -> list[str]:
    """Why the uid cannot be given to this user (useradd/usermod exit 4), or nothing."""
    if spec.uid is None or spec.allowduplicateuid:
        return []
    other = accounts.user_with_uid(spec.uid, besides=spec.name)
    if other is None:
        return []
    return [f"uid {spec.uid} is already user {other.name}'s (allowduplicateuid: true lets users share it)"]


def differences(spec: UserSpec, current: PasswdEntry, accounts: Accounts) -> list[tuple[str, str, str]]:
    """(field, now, wanted) for each managed field that is not as asked."""
    found = []
    if spec.uid is not None and current.uid != spec.uid:
        found.append(("uid", str(current.uid), str(spec.uid)))
    if spec.gid is not None and current.gid != spec.gid:
        found.append(("gid", str(current.gid), str(spec.gid)))
    if spec.group is not None:
        wanted = accounts.groups.get(spec.group)
        if wanted is None or wanted.gid != current.gid:
            now = accounts.group_with_gid(current.gid)
            found.append(("group", now.name if now else str(current.gid), spec.group))
    if spec.groups is not None:
        # the groups sharing the primary gid are implied on both sides
        primary = {g.name for g in accounts.groups_with_gid(current.gid)}
        now_set = accounts.supplementary(spec.name, current.gid)
        wanted_set = frozenset(spec.groups) - primary
        if now_set != wanted_set:
            found.append(("groups", listing(now_set), listing(wanted_set)))
    # passwd may hold "/home/x/" or "/home//x": the same home (mgmt compares cleaned too)
    if spec.home is not None and (not current.home or clean_home(current.home) != spec.home):
        found.append(("home", current.home or "(empty)", spec.home))
    if spec.shell is not None and current.shell != spec.shell:
        found.append(("shell", current.shell or "(empty)", spec.shell or "(empty)"))
    return found


def _options(spec: UserSpec, fields: set[str]) -> list[str]:
    argv = []
    if "uid" in fields:
        if spec.allowduplicateuid:
            argv.append("--non-unique")
        argv += ["--uid", str(spec.uid)]
    if "gid" in fields:
        argv += ["--gid", str(spec.gid)]
    if "group" in fields:
        argv += ["--gid", str(spec.group)]
    if "groups" in fields:
        argv += ["--groups", ",".join(dict.fromkeys(spec.groups or ()))]
    if "home" in fields:
        argv += ["--home", str(spec.home)]
    if "shell" in fields:
        argv += ["--shell", str(spec.shell)]
    return argv


def plan(spec: UserSpec, accounts: Accounts) -> Plan | None:
    """What brings the user into state; None when it is."""
    current = accounts.users.get(spec.name)
    if spec.state == "absent":
        if current is None:
            return None
        return Plan(["userdel", spec.name], f"delete user {spec.name}", f"delete user {spec.name}",
                    f"deleted user {spec.name}")
    if current is None:
        given = {f for f in ("uid", "gid", "group", "groups", "home", "shell")
                 if getattr(spec, f) is not None}
        details = _creation_details(spec)
        return Plan(["useradd", *_options(spec, given), spec.name], f"create user {spec.name}",
                    f"create user {spec.name}{details}",
                    f"created user {spec.name}{details}",
                    uid_taken(spec, accounts) + missing_groups(spec, accounts, given))
    changes = differences(spec, current, accounts)
    if not changes:
        return None
    changed = {name for name, _, _ in changes}
    said = ", ".join(f"{name} {now} -> {wanted}" for name, now, wanted in changes)
    return Plan(["usermod", *_options(spec, changed), spec.name], f"change user {spec.name}",
                f"change {said}", f"changed {said}",
                (uid_taken(spec, accounts) if "uid" in changed else [])
                + missing_groups(spec, accounts, changed))


class UserResource(AccountResource):
    kind = "user"
    FIELDS = {
        "state": Field((str,), "exists", doc="exists or absent"),
        "uid": Field((int,), None, doc="user id; unique unless allowduplicateuid", min=0, max=ID_MAX),
        "gid": Field((int,), None, doc="primary group, by gid (not with group)", min=0, max=ID_MAX),
        "group": Field((str,), None, doc="primary group, by name (not with gid)"),
        "groups": Field((list,), None, doc="supplementary groups, exactly these; [] for none"),
        "homedir": Field((str,), None, doc="home directory, absolute, ending in '/'; not created"),
        "shell": Field((str,), None, doc="login shell, e.g. /bin/bash or /usr/sbin/nologin"),
        "allowduplicateuid": Field((bool,), False, doc="uid may be shared with other users "
                                   "(useradd --non-unique)"),
    }

    def validate(self) -> None:
        super().validate()
        if self.gid is not None and self.group is not None:
            raise FieldError("group", "give gid or group, not both")
        if self.group is not None:
            problem = name_problem(self.group, "group")
            if problem:
                raise FieldError("group", problem)
        for entry in self.groups or ():
            if not isinstance(entry, str):
                raise FieldError("groups", f"groups must be group names, not {shown(entry)}")
            problem = name_problem(entry, "group")
            if problem:
                raise FieldError("groups", problem)
            if entry == self.group:
                raise FieldError("groups", f"primary group {entry} must not appear in groups")
            if entry == self.name:
                raise FieldError("groups", f"user name {entry} must not appear in groups")
        if self.homedir is not None:
            problem = path_problem(self.homedir, "homedir")
            if problem:
                raise FieldError("homedir", problem)
            if not self.homedir.endswith("/"):
                raise FieldError("homedir", f"homedir is a directory: it ends with '/' "
                                 f"({shown(self.homedir + '/')})")
        if self.shell:   # "" = the empty field: login's default shell
            problem = path_problem(self.shell, "shell")
            if problem:
                raise FieldError("shell", problem)

    def spec(self) -> UserSpec:
        return UserSpec(self.name, self.state, self.uid, self.gid, self.group,
                        tuple(self.groups) if self.groups is not None else None,
                        clean_home(self.homedir) if self.homedir is not None else None,
                        self.shell, self.allowduplicateuid)

    # --- autoedges / watches -------------------------------------------------------
    def autoedge_provides(self) -> list[str]:
        if self.state == "absent":
            # mgmt's reversed edges: a user leaves its groups before they go
            return [f"userdel:{token}" for token in self._group_tokens()]
        tokens = [f"user:{self.name}"]
        if self.homedir is not None:
            tokens.append(clean_home(self.homedir))
        return tokens

    def autoedge_requires(self) -> list[str]:
        if self.state == "absent":
            return []
        tokens = self._group_tokens()
        if self.shell:
            tokens.append(f"pkgfile:{self.shell}")   # a shell a package installs
        return tokens

    def _group_tokens(self) -> list[str]:
        tokens = [f"gid:{self.gid}"] if self.gid is not None else []
        if self.group is not None:
            tokens.append(f"group:{self.group}")
        tokens += [f"group:{name}" for name in self.groups or ()]
        return tokens

    def watch_paths(self) -> list[str]:
        # what the check reads: passwd for the account, group for its memberships
        # (gpasswd -a touches /etc/group only). The tools replace both by rename.
        return [self.account_files().path("passwd"), self.account_files().path("group")]

    # --- check/apply; a refresh changes nothing (there is nothing to restart) --------
    def plan(self) -> Plan | None:
        return plan(self.spec(), self.account_files().snapshot())
