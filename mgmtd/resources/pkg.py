"""``pkg``: a Debian package installed, removed, at its newest or at a given
version (mgmt's pkg), through dpkg's files and apt-get, not PackageKit.

A check reads dpkg's status database (one parse shared by every pkg resource,
redone only when the file changed) and starts no process unless apt has to be
asked for a candidate: ``newest``, a version that is not the installed one,
or a package about to be installed (its candidate's origin is checked against
``allownonfree``/``allowunsupported``). Resources ready together run in one
``apt-get install a b=1.2 c-`` transaction (autogroup)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from mgmtd.resources import debversion
from mgmtd.resources.apt import Apt, AptError, Change, Failure, Policy, Release, is_free, is_supported, releases
from mgmtd.resources.aptwatch import LISTS_DIR, ListsWatch
from mgmtd.resources.base import Field, FieldError, Resource, ResourceError, shown
from mgmtd.resources.dpkgdb import STATUS_PATH, DpkgStatus, Installed, StatusDb

INSTALLED, UNINSTALLED, NEWEST = "installed", "uninstalled", "newest"
KEYWORDS = (INSTALLED, UNINSTALLED, NEWEST)

_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$")


@dataclass
class Backend:
    """What all pkg resources of a process share: the parsed dpkg status,
    the apt runner (one transaction at a time, rate-limited updates) and the
    one watch of apt's package indexes."""

    dpkg: DpkgStatus
    apt: Apt
    lists_dir: str = LISTS_DIR
    lists: ListsWatch = field(init=False)

    def __post_init__(self) -> None:
        self.lists = ListsWatch(self.lists_dir)


SHARED_KEY = "pkg"


def system_backend(shared: dict) -> Backend:
    """The engine's one backend, kept in the context's ``shared`` dict: every
    pkg resource of the engine reads dpkg's status through it (one parse per
    version of the file) and runs apt through it (one command at a time)."""
    found = shared.get(SHARED_KEY)
    return found if found is not None else shared.setdefault(SHARED_KEY, Backend(DpkgStatus(), Apt()))


# --- decisions (pure) ---------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """What one resource needs: nothing (in state), a change (with the line
    that says it), or an error. ``unknown``: apt's index has no entry for
    what is wanted (an ``apt-get update`` may help)."""

    in_state: bool = False
    change: Change | None = None
    target: str | None = None       # the version an install must end at
    verb: str = ""                  # install, remove, upgrade or downgrade
    what: str = ""                  # "x (1.0)", "x 1.0 -> 2.0"
    error: str = ""
    unknown: bool = False


    @property
    def says(self) -> str:
        return f"{self.verb} {self.what}"

    @property
    def done(self) -> str:
        return f"{self.verb.rstrip('e')}ed {self.what}"


IN_STATE = Decision(in_state=True)


def decide_locally(state: str, name: str, installed: Installed | None) -> Decision | None:
    """The decision dpkg's status alone gives, or None when apt's candidate is
    needed. ``installed`` is dpkg's present instance: a package left halfway
    (unpacked, half-configured...) is there to be removed, but is not
    installed until configured."""
    if state == UNINSTALLED:
        if installed is None:
            return IN_STATE
        return Decision(change=Change(name, remove=True), verb="remove", what=f"{name} ({installed.version})")
    if installed is None or not installed.is_installed:
        return None
    if state == INSTALLED or (state != NEWEST and installed.version == state):
        return IN_STATE
    return None


@dataclass(frozen=True)
class Allowed:
    downgrade: bool = False
    nonfree: bool = False
    unsupported: bool = False


def _origin_problem(name: str, version: str, found: list[Release], allowed: Allowed) -> str:
    if not allowed.nonfree and not is_free(found):
        comps = sorted({r.component for r in found})
        return (f"{name} {version} is not free software (component {', '.join(comps)}): "
                "set allownonfree: true to install it")
    if not allowed.unsupported and not is_supported(found):
        origins = sorted({r.origin or "no origin" for r in found}) or ["no repository"]
        return (f"{name} {version} is not from the distribution's own archive (origin "
                f"{', '.join(origins)}): set allowunsupported: true to install it")
    return ""


def decide(state: str, name: str, installed: Installed | None, policy: Policy | None,
           sources: dict[str, Release], allowed: Allowed) -> Decision:
    """The decision for a resource that needs apt's view (``decide_locally``
    returned None). ``policy`` is apt-cache's entry for ``name`` (None: apt
    knows no such package); ``sources`` the Release data of the indexes."""
    current = installed.version if installed is not None else None
    unfinished = installed is not None and not installed.is_installed
    if policy is None or (state != INSTALLED and state != NEWEST and not policy.offered(state)) \
            or (state in (INSTALLED, NEWEST) and policy.candidate is None):
        if state in (INSTALLED, NEWEST):
            error = f"no package {name} in the configured repositories; run apt-get update?"
        else:
            offered = [v for v in (policy.versions if policy else {}) if policy and policy.offered(v)]
            known = f" (offered: {', '.join(offered)})" if offered else ""
            error = f"no version {state} of {name} in the configured repositories{known}"
        return Decision(error=error, unknown=True)
    target = policy.candidate if state in (INSTALLED, NEWEST) else state
    assert target is not None
    if current == target and not unfinished:
        return IN_STATE
    if current == target:
        # apt-get install configures what dpkg left unpacked or half-configured
        return Decision(change=Change(name, version=target), target=target, verb="configure",
                        what=f"{name} ({target}, {installed.state})")
    if current is not None and state not in (INSTALLED, NEWEST) \
            and debversion.compare(target, current) < 0 and not allowed.downgrade:
        return Decision(error=f"{name} {current} is installed, newer than {target}: "
                              "set allowdowngrade: true to downgrade it")
    problem = _origin_problem(name, target, releases(policy, target, sources), allowed)
    if problem:
        return Decision(error=problem)
    if current is None:
        verb, what = "install", f"{name} ({target})"
    else:
        verb = "upgrade" if debversion.compare(target, current) > 0 else "downgrade"
        what = f"{name} {current} -> {target}"
    # the candidate that was checked is the one installed, whatever the state
    return Decision(change=Change(name, version=target), target=target, verb=verb, what=what)


def policy_for(policies: dict[str, Policy], name: str, native_arch: str) -> Policy | None:
    """apt-cache's entry for ``name``: apt prints a name qualified with the
    native architecture (or ``all``) without it (``foo:amd64`` -> ``foo:``),
    a foreign one with it."""
    found = policies.get(name)
    base, _, arch = name.partition(":")
    if found is None and arch and (arch in (native_arch, "all") or not native_arch):
        found = policies.get(base)
    return found


def reached(state: str, decision: Decision, installed: Installed | None) -> bool:
    """After a transaction: did it do what ``decision`` asked?"""
    if state == UNINSTALLED:
        return installed is None
    return installed is not None and installed.is_installed and installed.version == decision.target


def reversed_state(installed: Installed | None, policy: Policy | None) -> str:
    """meta.reverse: the state that puts back what was there before the first
    change: not there -> uninstalled; there -> the version it had when a
    repository still offers it, else installed (any version)."""
    if installed is None:
        return UNINSTALLED
    if policy is not None and policy.offered(installed.version):
        return installed.version
    return INSTALLED


# --- the resource ---------------------------------------------------------------------

class PkgResource(Resource):
    kind = "pkg"
    GROUPABLE = True
    REVERSIBLE = True
    FIELDS = {
        "state": Field((str,), INSTALLED, doc="installed, uninstalled (apt-get remove, config files kept), "
                       "newest, or a version string to pin (quoted: YAML reads 1.10 as a number)"),
        "allowdowngrade": Field((bool,), False, doc="with a version state: may install a version lower "
                                "than the installed one"),
        "allowuntrusted": Field((bool,), False, doc="may install packages from unsigned repositories "
                                "(apt-get --allow-unauthenticated)"),
        "allownonfree": Field((bool,), False, doc="may install packages from contrib/non-free components"),
        "allowunsupported": Field((bool,), False, doc="may install packages from outside the "
                                  "distribution's own archive (origin Debian or Ubuntu, main)"),
    }

    _backend: Backend | None = None   # tests give their own

    @property
    def backend(self) -> Backend:
        return self._backend if self._backend is not None else system_backend(self.ctx.shared)

    @backend.setter
    def backend(self, value: Backend) -> None:
        self._backend = value

    def validate(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            hint = ": put the version in state" if "=" in str(self.name) else ""
            raise FieldError("name", f"{shown(self.name)} is not a Debian package name{hint}")
        state = self.state
        if not state:
            raise FieldError("state", "state cannot be empty")
        if state == "latest":
            raise FieldError("state", "state 'latest' is not valid: did you mean 'newest'?")
        if state in ("absent", "removed", "purged", "present", "exists"):
            raise FieldError("state", f"state must be installed, uninstalled, newest or a version, "
                             f"not {shown(state)}")
        if state not in KEYWORDS and not debversion.is_valid(state):
            raise FieldError("state", f"state must be installed, uninstalled, newest or a Debian version "
                             f"string, not {shown(state)}")

    def allowed(self) -> Allowed:
        return Allowed(self.allowdowngrade, self.allownonfree, self.allowunsupported)

    def group_token(self) -> Hashable:
        # as mgmt's Adapts: the same allow* flags (two of them change apt-get's command line)
        return (self.allowdowngrade, self.allowuntrusted, self.allownonfree, self.allowunsupported)

    # --- events and edges ---------------------------------------------------------
    def watch_paths(self) -> list[str]:
        # dpkg renames status-new over status after every change (anyone's)
        return [self.backend.dpkg.path]

    def start_watch(self, poke: Callable[[], None]) -> Callable[[], None] | None:
        if self.state != NEWEST or self.meta.poll > 0:
            return None
        try:
            return self.backend.lists.subscribe(poke)
        except OSError as err:
            self.ctx.report("warning", f"cannot watch {self.backend.lists_dir} for new package "
                            f"indexes: {err.strerror}")
            return None

    def autoedge_provides(self) -> list[str]:
        # dpkg's list of the package's files, without parsing the status: the
        # graph is built before the engine lends its context (and its backend).
        # A package never unpacked has no list: its files are not known
        if self.state == UNINSTALLED:
            return []
        return [f"pkgfile:{path}" for path in self.backend.dpkg.files(self.name)]

    def interrupt(self) -> None:
        self.backend.apt.interrupt()

    def reversal(self) -> dict[str, Any]:
        db = _snapshot(self.backend)
        installed = db.lookup(self.name)
        policy = None
        if installed is not None:
            try:
                policy = policy_for(self.backend.apt.policy([self.name]), self.name, db.native_arch)
            except AptError as err:
                raise ResourceError(f"cannot record its reversal: {err}") from None
        state = reversed_state(installed, policy)
        # going back to the old version may be a downgrade; it comes from where this one did
        return {"state": state, "allowdowngrade": state not in KEYWORDS,
                "allowuntrusted": self.allowuntrusted, "allownonfree": self.allownonfree,
                "allowunsupported": self.allowunsupported}

    # --- check/apply ----------------------------------------------------------------
    def check_apply(self, apply: bool) -> bool:
        result = type(self).check_apply_group([self], apply)[0]
        if isinstance(result, ResourceError):
            raise result
        return result

    @classmethod
    def check_apply_group(cls, members: list[Resource], apply: bool) -> list[bool | ResourceError]:
        pkgs = [m for m in members if isinstance(m, PkgResource)]
        assert len(pkgs) == len(members), "a pkg group holds pkg resources only"
        return _Transaction(pkgs, apply).run()


def _snapshot(backend: Backend) -> StatusDb:
    try:
        return backend.dpkg.snapshot()
    except OSError as err:
        raise ResourceError(f"cannot read dpkg's status {STATUS_PATH}: {err.strerror}") from None


class _Transaction:
    """One check (and apply) of a group of pkg resources that share a backend."""

    def __init__(self, members: list[PkgResource], apply: bool) -> None:
        self.members = members
        self.apply = apply
        self.backend = members[0].backend
        self.results: dict[int, bool | ResourceError] = {}

    def run(self) -> list[bool | ResourceError]:
        try:
            db = _snapshot(self.backend)
            decisions = self._decide(db)
        except ResourceError as err:
            return [err for _ in self.members]
        todo = []
        for index, member in enumerate(self.members):
            decision = decisions[index]
            if decision.error:
                self.results[index] = ResourceError(decision.error)
            elif decision.in_state:
                self.results[index] = True
            elif not self.apply:
                member.ctx.report("info", f"would {decision.says}")
                self.results[index] = False
            else:
                todo.append((index, decision))
        if todo:
            self._transact(todo)
        return [self.results[index] for index in range(len(self.members))]

    # --- deciding ------------------------------------------------------------------
    def _decide(self, db: StatusDb) -> dict[int, Decision]:
        decisions: dict[int, Decision] = {}
        asking = []
        for index, member in enumerate(self.members):
            local = decide_locally(member.state, member.name, db.lookup(member.name))
            if local is None:
                asking.append(index)
            else:
                decisions[index] = local
        if asking:
            decisions.update(self._ask_apt(db, asking))
        return decisions

    def _ask_apt(self, db: StatusDb, asking: list[int]) -> dict[int, Decision]:
        """Decisions for the members that need apt's view; an apt failure is
        theirs only (the others were decided from dpkg's status)."""
        apt = self.backend.apt
        names = sorted({self.members[index].name for index in asking})
        try:
            policies = apt.policy(names)
            sources = apt.sources() if any(not (m.allownonfree and m.allowunsupported)
                                           for m in (self.members[i] for i in asking)) else {}
        except AptError as err:
            return {index: Decision(error=str(err)) for index in asking}
        decisions = self._decide_with(db, asking, policies, sources)
        missing = [index for index, decision in decisions.items() if decision.unknown]
        # an index without the package or version may just be old: update once, ask again
        if missing and self.apply and apt.update_allowed():
            names = sorted({self.members[index].name for index in missing})
            self.members[missing[0]].ctx.report(
                "info", f"not in apt's index as wanted: {', '.join(names)}; running apt-get update")
            try:
                apt.update()
                policies = apt.policy(names)
                sources = apt.sources() if sources else {}
            except AptError as err:
                self.members[missing[0]].ctx.report("warning", str(err))
                return decisions
            decisions.update(self._decide_with(db, missing, policies, sources))
        return decisions

    def _decide_with(self, db: StatusDb, indexes: list[int], policies: dict[str, Policy],
                     sources: dict[str, Release]) -> dict[int, Decision]:
        return {index: decide(member.state, member.name, db.lookup(member.name),
                              policy_for(policies, member.name, db.native_arch), sources, member.allowed())
                for index in indexes for member in (self.members[index],)}

    # --- applying ------------------------------------------------------------------
    def _transact(self, todo: list[tuple[int, Decision]]) -> None:
        first = self.members[todo[0][0]]
        changes = [decision.change for _, decision in todo if decision.change is not None]
        flags = {"downgrade": first.allowdowngrade, "untrusted": first.allowuntrusted}
        if len(todo) > 1:
            first.ctx.report("info", "one apt-get transaction: " + ", ".join(d.says for _, d in todo))
        failure = self._install(changes, flags)
        left = self._settle(todo, failure)
        if failure is None or not left:
            for index, decision in left:
                self.results[index] = ResourceError(
                    f"apt-get succeeded but did not {decision.says} (dpkg says otherwise)")
            return
        if len(left) == 1 or len(todo) == 1 or failure.stopped:
            for index, _ in left:
                self.results[index] = ResourceError(failure.message)
            return
        # which member failed the transaction? the one apt named, else each alone
        alone = []
        for index, decision in left:
            if failure.package is not None and failure.package == self.members[index].name:
                self.results[index] = ResourceError(failure.message)
            else:
                alone.append((index, decision))
        for index, decision in alone:
            assert decision.change is not None
            single = self._install([decision.change], flags)
            for index_left, decision_left in self._settle([(index, decision)], single):
                message = single.message if single is not None else \
                    f"apt-get succeeded but did not {decision_left.says} (dpkg says otherwise)"
                self.results[index_left] = ResourceError(message)

    def _install(self, changes: list[Change], flags: dict[str, bool]) -> Failure | None:
        try:
            return self.backend.apt.install(changes, **flags)
        except AptError as err:
            return Failure(str(err))

    def _settle(self, todo: list[tuple[int, Decision]], failure: Failure | None) -> list[tuple[int, Decision]]:
        """Records the members the transaction brought into state; returns the others."""
        try:
            db = _snapshot(self.backend)
        except ResourceError as err:
            for index, _ in todo:
                self.results[index] = err
            return []
        left = []
        for index, decision in todo:
            member = self.members[index]
            if reached(member.state, decision, db.lookup(member.name)):
                member.ctx.report("info", decision.done)
                self.results[index] = False
            else:
                left.append((index, decision))
        return left


def time_no_change_check(count: int = 50, status_path: str = STATUS_PATH) -> tuple[float, int]:
    """For the bench: seconds for ``check_apply(True)`` of ``count`` pkg
    resources (state installed) naming packages installed here, one by one,
    starting from an unparsed status file as a fresh engine would; and how
    many were checked. Read-only: installed packages need no change."""
    db = DpkgStatus(status_path).snapshot()
    names = sorted(name for name in db.packages
                   if (found := db.lookup(name)) is not None and found.is_installed)[:count]
    backend = Backend(DpkgStatus(status_path), Apt())
    resources = []
    for name in names:
        res = PkgResource(name, {"state": INSTALLED})
        res.backend = backend
        resources.append(res)
    started = time.perf_counter()
    for res in resources:
        if res.check_apply(True) is not True:
            raise RuntimeError(f"{res} is not in state: not a no-change check")
    return time.perf_counter() - started, len(resources)
