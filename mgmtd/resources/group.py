"""``group``: a local group (mgmt's group), created, renumbered and deleted
with groupadd, groupmod and groupdel. The check reads /etc/group (accounts.py
says why not NSS); without ``gid`` only the group's existence is managed."""

from __future__ import annotations

from mgmtd.resources.accounts import (
    AccountResource,
    Accounts,
    Plan,
)
from mgmtd.resources.base import ID_MAX, Field


def plan_group(name: str, state: str, gid: int | None, accounts: Accounts) -> Plan | None:
    """What brings the group into state; None when it is."""
    current = accounts.groups.get(name)
    if state == "absent":
        if current is None:
            return None
        users = accounts.primary_users(current.gid)   # groupdel would refuse (exit 8)
        problem = (f"it is the primary group of {', '.join(users[:5])}{' ...' if len(users) > 5 else ''}"
                   if users else "")
        return Plan(["groupdel", name], f"delete group {name}", f"delete group {name}",
                    f"deleted group {name}", [problem] if problem else [])
    if current is not None and (gid is None or current.gid == gid):
        return None
    other = accounts.group_with_gid(gid, besides=name) if gid is not None else None
    problem = f"gid {gid} is already group {other.name}'s" if other is not None else ""
    option = ["--gid", str(gid)] if gid is not None else []
    if current is None:
        details = f" (gid {gid})" if gid is not None else ""
        return Plan(["groupadd", *option, name], f"create group {name}", f"create group {name}{details}",
                    f"created group {name}{details}", [problem] if problem else [])
    return Plan(["groupmod", *option, name], f"change group {name}", f"change gid {current.gid} -> {gid}",
                f"changed gid {current.gid} -> {gid}", [problem] if problem else [])


class GroupResource(AccountResource):
    kind = "group"
    FIELDS = {
        "state": Field((str,), "exists", doc="exists or absent"),
        "gid": Field((int,), None, doc="group id; unset = any", min=0, max=ID_MAX),
    }

    def validate(self) -> None:
        super().validate()

    # --- autoedges / watches -------------------------------------------------------
    def autoedge_provides(self) -> list[str]:
        if self.state != "exists":
            return []
        tokens = [f"group:{self.name}"]
        if self.gid is not None:
            tokens.append(f"gid:{self.gid}")
        return tokens

    def autoedge_requires(self) -> list[str]:
        # after the absent users leaving it (their userdel may also free its gid)
        tokens = [f"userdel:group:{self.name}"]
        if self.gid is not None:
            tokens.append(f"userdel:gid:{self.gid}")
        return tokens

    def watch_paths(self) -> list[str]:
        return [self.account_files().path("group")]

    def plan(self) -> Plan | None:
        return plan_group(self.name, self.state, self.gid, self.account_files().snapshot())
