"""``group``: a local group (mgmt's group), created, renumbered and deleted
with groupadd, groupmod and groupdel. The check reads /etc/group (accounts.py
says why not NSS); without ``gid`` only the group's existence is managed."""

from __future__ import annotations

from dataclasses import dataclass

from mgmtd.resources.accounts import (
    AccountResource,
    Accounts,
    run_tool,
)
from mgmtd.resources.base import ID_MAX, Field, ResourceError


@dataclass(frozen=True)
class GroupPlan:
    argv: list[str]
    what: str         # "create group x"
    would: str        # "create group x (gid 10000)", for noop
    done: str         # "created group x (gid 10000)", for the log
    # why it cannot run now: an error when applying; noop only mentions it,
    # since resources before it may fix it (a user deleted, a group renumbered)
    problem: str = ""

    def noop_line(self) -> str:
        return f"would {self.would}" + (f"; now {self.problem}" if self.problem else "")


def plan_group(name: str, state: str, gid: int | None, accounts: Accounts) -> GroupPlan | None:
    """What brings the group into state; None when it is."""
    current = accounts.groups.get(name)
    if state == "absent":
        if current is None:
            return None
        users = accounts.primary_users(current.gid)   # groupdel would refuse (exit 8)
        problem = (f"it is the primary group of {', '.join(users[:5])}{' ...' if len(users) > 5 else ''}"
                   if users else "")
        return GroupPlan(["groupdel", name], f"delete group {name}", f"delete group {name}",
                         f"deleted group {name}", problem)
    if current is not None and (gid is None or current.gid == gid):
        return None
    other = accounts.group_with_gid(gid, besides=name) if gid is not None else None
    problem = f"gid {gid} is already group {other.name}'s" if other is not None else ""
    option = ["--gid", str(gid)] if gid is not None else []
    if current is None:
        details = f" (gid {gid})" if gid is not None else ""
        return GroupPlan(["groupadd", *option, name], f"create group {name}", f"create group {name}{details}",
                         f"created group {name}{details}", problem)
    return GroupPlan(["groupmod", *option, name], f"change group {name}", f"change gid {current.gid} -> {gid}",
                     f"changed gid {current.gid} -> {gid}", problem)


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

    # --- check/apply; a refresh changes nothing -------------------------------------
    def check_apply(self, apply: bool) -> bool:
        todo = plan_group(self.name, self.state, self.gid, self.account_files().snapshot())
        if todo is None:
            return True
        if not apply:
            self.ctx.report("info", todo.noop_line())
            return False
        if todo.problem:
            raise ResourceError(f"cannot {todo.what}: {todo.problem}")
        run_tool(todo.argv, self.runner)
        self.ctx.report("info", todo.done)
        return False
