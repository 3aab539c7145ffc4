"""What every resource kind implements, and the field schema the YAML loader
checks against before anything is built."""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

# Upper bounds of numeric fields. Beyond them a value is a typo or an attack,
# and the runtime would choke on it (thread waits overflow past ~292 years).
YEAR = 365 * 24 * 3600     # the longest duration any field takes, in seconds
YEAR_MS = YEAR * 1000      # the same, for the fields mgmt takes in milliseconds
COUNT_MAX = 2**31          # the largest count (retries, bursts)
ID_MAX = 2**32 - 2         # the largest uid or gid (2**32 - 1 means "none")

SHOWN_MAX = 60             # characters of a value quoted in an error message


class ResourceError(Exception):
    """A resource could not be brought into state; the message says why."""


class _Shortener(reprlib.Repr):
    """``repr`` that looks at a bounded part of a value: an alias-shared or
    merely huge value must never be expanded to build an error message."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdict = 4
        self.maxstring = self.maxother = SHOWN_MAX

    def repr_int(self, x: int, level: int) -> str:
        # repr of a huge int is quadratic, and refused past 4300 digits
        if x.bit_length() <= 100:
            return repr(x)
        return f"<an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits>"

    def repr_bytes(self, x: bytes, level: int) -> str:
        text = repr(x[:self.maxstring])
        return text if len(x) <= self.maxstring else text + "..."

    def repr_bytearray(self, x: bytearray, level: int) -> str:
        return self.repr_bytes(bytes(x[:self.maxstring + 1]), level)


_SHORTENER = _Shortener()


def shown(value: Any, limit: int = SHOWN_MAX) -> str:
    """A value as an error message quotes it: its ``repr``, cut to ``limit``
    characters, built from a bounded part of the value whatever its size."""
    text = _SHORTENER.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return is_number(value) and (isinstance(value, int) or math.isfinite(value))


def _bound(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else str(limit)


@dataclass(frozen=True)
class Field:
    """One parameter of a kind: the Python types it accepts, its default and,
    for a number, the range it must lie in. NaN is outside every range, and an
    infinity too unless the bound on its side is itself infinite."""

    types: tuple[type, ...]
    default: Any = None
    required: bool = False
    doc: str = ""
    min: float | None = None
    max: float | None = None

    def accepts(self, value: Any) -> bool:
        if value is None and not self.required:
            return True
        if isinstance(value, bool) and bool not in self.types:
            return False
        if isinstance(value, int) and not isinstance(value, bool) and float in self.types:
            return True
        return isinstance(value, self.types)

    def type_name(self) -> str:
        names = {str: "string", int: "integer", bool: "boolean", float: "number",
                 list: "list", dict: "mapping"}
        return " or ".join(names.get(t, t.__name__) for t in self.types)

    def range_name(self) -> str:
        number = "a finite number" if float in self.types else "an integer"
        if self.max == math.inf and self.min is not None:
            return f"a number >= {_bound(self.min)} (or .inf)"
        if self.min is not None and self.max is not None:
            return f"{number} between {_bound(self.min)} and {_bound(self.max)}"
        if self.min is not None:
            return f"{number} >= {_bound(self.min)}"
        if self.max is not None:
            return f"{number} <= {_bound(self.max)}"
        return number

    def in_range(self, value: Any) -> bool:
        """True unless ``value`` is a number outside this field's range (NaN
        and the infinities are outside every range)."""
        if not is_number(value):
            return True
        if isinstance(value, float) and not math.isfinite(value):
            bound = self.max if value > 0 else self.min
            return bound == value   # nan equals nothing
        # int and float compare exactly in Python, whatever the int's size
        return ((self.min is None or value >= self.min)
                and (self.max is None or value <= self.max))

    def problem(self, name: str, value: Any) -> str:
        """Why ``value`` does not fit this field, or "" when it does. ``None``
        (not set) fits; whether a required field is set is checked apart."""
        if value is None:
            return ""
        if not self.accepts(value):
            return f"field {name!r} must be {self.type_name()}, not {shown(value)}"
        if not self.in_range(value):
            return f"field {name!r} must be {self.range_name()}, not {shown(value)}"
        return ""


def check_fields(fields: dict[str, Field], values: dict[str, Any], prefix: str = "") -> None:
    """Raises ``FieldError`` for the first value that does not fit its field:
    the one check of types and ranges, for graph files and collected exports alike."""
    for key, value in values.items():
        if value is None:
            continue   # not set: fits every field (most of a resource's fields)
        spec = fields.get(key)
        problem = spec.problem(prefix + key, value) if spec is not None else ""
        if problem:
            raise FieldError(key, problem)


@dataclass(frozen=True)
class Meta:
    """Meta parameters, common to every kind (mgmt's ``meta:``)."""

    noop: bool = False
    retry: int = 0          # extra attempts after a failure; -1 = forever
    delay: int = 0          # milliseconds between attempts (mgmt's unit)
    timeout: int = 0        # milliseconds a check/apply may run; 0 = no limit
    poll: float = 0.0       # seconds between checks instead of watching; 0 = events; -1 = once
    autoedge: bool = True
    autogroup: bool = True  # may run in one check/apply with others of its kind (GROUPABLE kinds)
    limit: float = math.inf  # check/apply runs per second; .inf = no limit
    burst: int = 0           # runs at once before limit applies; > 0 when limit is not .inf
    sema: tuple[str, ...] = ()  # semaphores held while check/apply runs: "id" or "id:N"
    reverse: bool = False    # undo what it changed once it leaves the graph (REVERSIBLE kinds)
    retryreset: bool = False  # a success gives back the whole retry budget
    reset: bool = False      # a graph swap that changes this resource starts its meta state afresh
    rewatch: bool = False    # a graph swap restarts this resource's watch if it failed for good
    hidden: bool = False     # in the graph, never applied here (an edge end, an export)
    export: tuple[str, ...] = ()  # hosts (or "*") this resource is exported to
    dollar: bool = False     # the name may start with "$"

    FIELDS: ClassVar[dict[str, Field]] = {}

    def __post_init__(self) -> None:
        # collected exports build a Meta straight from JSON: check them here too
        values = {key: getattr(self, key) for key in EFFECTIVE_META}
        for key in ("sema", "export"):
            if isinstance(values[key], tuple):
                values[key] = list(values[key])
        check_fields(Meta.FIELDS, values, "meta.")
        problem = limit_problem(self.limit, self.burst)
        if problem:
            raise FieldError("limit", problem)
        problem = poll_problem(self.poll)
        if problem:
            raise FieldError("poll", problem)
        problem = sema_problem(values["sema"])
        if problem:
            raise FieldError("sema", problem)
        problem = export_problem(values["export"])
        if problem:
            raise FieldError("export", problem)
        object.__setattr__(self, "sema", tuple(values["sema"]))
        object.__setattr__(self, "export", tuple(values["export"]))


EXPORT_ALL = "*"


def export_problem(hosts: list[Any]) -> str:
    """mgmt's rule for ``export``: host names (or ``"*"``, every host), none
    empty."""
    for item in hosts:
        if not isinstance(item, str):
            return f"meta.export: entries are host names or \"*\", not {shown(item)}"
        if not item:
            return "meta.export: an entry is empty"
        if any(not ch.isprintable() or ch.isspace() for ch in item):
            return f"meta.export: {shown(item)} is not a host name"
    return ""


def exported_to(hosts: tuple[str, ...], host: str) -> bool:
    """True when an export for ``hosts`` is meant for ``host``."""
    return EXPORT_ALL in hosts or host in hosts


def sema_problem(sema: list[Any]) -> str:
    """mgmt's rules for ``sema`` ids: strings, not empty, not a bare integer
    (``"mylock"``, ``"mylock:2"`` and ``":2"`` are fine)."""
    for item in sema:
        if not isinstance(item, str):
            return f"meta.sema: semaphore ids are strings (\"id\" or \"id:N\"), not {shown(item)}"
        if not item:
            return "meta.sema: a semaphore id is empty"
        if item.strip().lstrip("+-").isdigit():
            return f"meta.sema: {shown(item)} is not a semaphore id (\"id\" or \"id:N\")"
        if any(not ch.isprintable() for ch in item):
            return f"meta.sema: {shown(item)} contains control characters"
    return ""


def poll_problem(poll: float) -> str:
    """mgmt's poll: seconds between checks, 0 = watch, -1 = check once and
    never watch; no other negative value means anything."""
    if poll < 0 and poll != -1:
        return f"meta.poll must be -1 (check once, never watch) or >= 0, not {shown(poll)}"
    return ""


def limit_problem(limit: float, burst: int) -> str:
    """mgmt's rule: a limit other than .inf needs burst > 0 (else nothing ever
    runs). A limit of 0 would allow ``burst`` runs, then none, ever: refused."""
    if math.isinf(limit):
        return ""
    if limit <= 0:
        return f"meta.limit must be > 0 (or .inf, no limit), not {shown(limit)}"
    if burst <= 0:
        return (f"meta.limit {shown(limit)} needs meta.burst > 0 (mgmt: "
                "\"permanently limited (rate != Inf, burst = 0)\")")
    return ""


# The meta parameters that take effect: Meta's own fields. The loader keeps
# these; the rest of Meta.FIELDS (realize: false only) is checked and dropped.
EFFECTIVE_META: tuple[str, ...] = tuple(f.name for f in fields(Meta))
# What an export carries and a collected resource gets back: mgmt does not
# preserve ``export`` on collect, and ``hidden`` and ``dollar`` are about the
# exporter's graph (a collected resource is applied, under NAME@HOST).
EXPORTED_META: tuple[str, ...] = tuple(k for k in EFFECTIVE_META if k not in ("export", "hidden", "dollar"))

Meta.FIELDS = {
    "noop": Field((bool,), False, doc="report what would change, change nothing"),
    "retry": Field((int,), 0, doc="extra attempts after a failure, -1 for forever", min=-1, max=COUNT_MAX),
    "delay": Field((int,), 0, doc="milliseconds to wait between attempts", min=0, max=YEAR_MS),
    "timeout": Field((int,), 0, doc="milliseconds a check/apply may run before it fails "
                     "(and is retried by retry); 0 = no limit", min=0, max=YEAR_MS),
    "poll": Field((int, float), 0, doc="check every N seconds instead of watching for events; "
                  "-1: check once, never watch", min=-1, max=YEAR),
    "autoedge": Field((bool,), True, doc="add edges to the resources this one depends on"),
    "autogroup": Field((bool,), True, doc="run with other ready resources of its kind in one "
                       "operation (kinds that can: pkg)"),
    # mgmt's own examples write ``limit: .inf``: its default, no limit
    "limit": Field((int, float), math.inf, doc="check/apply runs per second (a token bucket); "
                   ".inf = no limit", min=0, max=math.inf),
    "burst": Field((int,), 0, doc="runs allowed at once before limit applies; needs > 0 when "
                   "limit is not .inf", min=0, max=COUNT_MAX),
    "sema": Field((list,), [], doc="semaphores held while check/apply runs, shared by every "
                  "resource of the engine: \"id\" (one slot) or \"id:N\" (N slots)"),
    "retryreset": Field((bool,), False, doc="a check/apply that succeeds gives back the whole "
                        "retry budget (default: retry counts failures for the resource's lifetime)"),
    "reset": Field((bool,), False, doc="when a graph swap changes this resource, its retry count "
                   "starts afresh (default: kept)"),
    "rewatch": Field((bool,), False, doc="at a graph swap, restart this resource's watch if it "
                     "failed for good (its retries spent)"),
    "hidden": Field((bool,), False, doc="in the graph (an edge end, an export) but never applied "
                    "on this host"),
    "export": Field((list,), [], doc="export this resource to these hosts (\"*\": every host); "
                    "still applied here unless hidden"),
    "dollar": Field((bool,), False, doc="allow a name that starts with \"$\""),
    "realize": Field((bool,), None, doc="refused when true: mgmt marks it not implemented"),
    "reverse": Field((bool,), False, doc="once the resource leaves the graph, put back what it "
                     "found before its first change (kinds that can: file, pkg)"),
}


# Meta is frozen: every resource without meta parameters shares this one (building
# and checking a Meta per resource was a good part of loading a big graph)
DEFAULT_META = Meta()


def meta_refusal(key: str, value: Any) -> str:
    """Why a meta parameter mgmt documents is refused here, or "" when it is
    not: a value that would ask for what mgmtd does not do is an error, never
    accepted and ignored."""
    if key == "realize" and value:
        return ("meta.realize is not supported: mgmt marks it not implemented "
                "(false, its default, is accepted)")
    return ""


@dataclass
class Context:
    """What the engine lends a resource while it runs."""

    host: str = ""
    namespace: str = "/mgmtd"
    noop: bool = False
    etcd: Callable[[], Any] | None = None   # returns a connected etcd3 client, or raises
    report: Callable[[str, str], None] = field(default=lambda level, msg: None)
    # what the resources of one engine share (svc's one D-Bus connection), by name:
    # every resource's context is a copy of the engine's, holding this same dict
    shared: dict[str, Any] = field(default_factory=dict)


def _rebuilt(cls: type[Resource], name: str, params: dict[str, Any], meta: Meta) -> Resource:
    res = cls(name, params, meta)
    res.validate()
    return res


class Resource:
    """A managed object. ``check_apply(apply)`` returns True when the object
    already is in state; with ``apply`` it makes it so first (and returns
    False, meaning "I changed something")."""

    kind: ClassVar[str] = ""
    FIELDS: ClassVar[dict[str, Field]] = {}
    # A kind whose resources can be brought into state together, cheaper than
    # one by one (pkg: one apt transaction), overrides ``check_apply_group``.
    GROUPABLE: ClassVar[bool] = False
    # mgmt's fields of this kind that mgmtd does not do, with why: a graph
    # naming one is refused with that reason, never accepted and ignored
    UNSUPPORTED: ClassVar[dict[str, str]] = {}
    # A kind whose resources can be undone (meta.reverse) overrides ``reversal``.
    REVERSIBLE: ClassVar[bool] = False
    # set by the engine on a resource built from a reversal record: the record's id
    reversal_of: str | None = None

    # Memory: a field left out is read from the class (its default, set on the class
    # by __init_subclass__), so an instance holds only the fields it was given.
    _INSTANCE_DEFAULTS: ClassVar[tuple[str, ...]] = ()   # fields whose name the class uses itself
    _DEFAULTED: ClassVar[frozenset[str]] = frozenset()   # fields whose default is on the class
    refresh = False    # set by the engine: this run follows a change over a notify edge
    retrying = False   # set by the engine: this run is a retry (meta.retry) after a failure

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own, defaulted = [], set()
        for key, spec in cls.FIELDS.items():
            owner = next((k for k in cls.__mro__ if key in vars(k)), None)
            if owner is not None and key not in getattr(owner, "_DEFAULTED", ()):
                own.append(key)   # a method or property of that name (kv's key): set per instance
            else:
                setattr(cls, key, spec.default)
                defaulted.add(key)
        cls._INSTANCE_DEFAULTS = tuple(own)
        cls._DEFAULTED = frozenset(defaulted)

    def __init__(self, name: str, params: dict[str, Any], meta: Meta | None = None) -> None:
        # a value that does not fit its field never reaches the code that uses it
        check_fields(self.FIELDS, params)
        self.name = name
        self._key = (self.kind, name)   # one tuple, shared by every table keyed by it
        self.meta = meta or DEFAULT_META
        fields = self.FIELDS
        own = self._INSTANCE_DEFAULTS
        for key, value in params.items():
            if key in fields:
                setattr(self, key, value)
        if own:   # kept apart: the attribute of that name is the class's own
            self._own = {key: params.get(key, fields[key].default) for key in own}
            for key in own:
                setattr(self, key, self._own[key])

    @property
    def params(self) -> dict[str, Any]:
        """Every field's value (given or default): a new dict at each call."""
        values = self.__dict__
        own = values.get("_own") or {}
        return {key: own[key] if key in own else values.get(key, spec.default)
                for key, spec in self.FIELDS.items()}

    # The context is made on first use: most resources (a file in state) never use it.
    # The engine lends its own (``lend``); a resource made alone gets a fresh one.
    @property
    def ctx(self) -> Context:
        ctx = self.__dict__.get("_ctx")
        if ctx is None:
            engine = self.__dict__.get("_engine_ctx")
            if engine is None:
                ctx = Context()
            else:
                ctx = replace(engine, report=lambda level, msg: engine.report(level, f"{self}: {msg}"))
            self._ctx = ctx
        return ctx

    @ctx.setter
    def ctx(self, ctx: Context) -> None:
        self._ctx = ctx

    def __reduce__(self) -> tuple:
        """Pickled (the graph cache: mgmtd.yamlgraph.cache) as what it was built
        from, and built again when loaded: what a kind makes when it is built (a
        lock, a run's state) is made anew, never copied. A kind with nothing of
        the sort may pickle its state as it is (``__reduce__ = object.__reduce__``)."""
        given = {key: value for key, value in vars(self).items() if key in self.FIELDS}
        given.update(vars(self).get("_own", {}))
        return (_rebuilt, (type(self), self.name, given, self.meta))

    def lend(self, engine: Context) -> None:
        """The engine's context: ``self.ctx`` will be a copy whose reports name this resource."""
        self.__dict__.pop("_ctx", None)
        self._engine_ctx = engine

    # --- memos: what a check learnt, kept across engine runs (mgmtd.engine.memos) ----
    def memo_key(self) -> str | None:
        """The name of this resource's memo; None: it keeps none."""
        return None

    def memo(self) -> tuple[str, bytes] | None:
        """(memo_key, value) to keep, or None when there is nothing sure to keep."""
        return None

    def recall(self, value: bytes) -> bool:
        """Takes back the memo of an earlier run; False when it does not apply."""
        return False

    def confirm(self) -> bool:
        """Makes a memo of what is only believed (e.g. just written) where it
        can be proved now; True when it cannot be yet (try again later). Called
        from outside the scheduler's runs."""
        return False

    def quick_check(self) -> bool:
        """True when the object is in state, proved without changing anything
        and in about a system call (the scheduler's own thread runs it, before
        handing the resource to a worker); False: check_apply decides."""
        return False

    # how many times any resource's memo changed (see mgmtd.engine.memos): a
    # count that only grows, read to skip a save that would write the same
    memo_changes: ClassVar[int] = 0

    @staticmethod
    def memos_changed() -> None:
        Resource.memo_changes += 1

    # --- identity -----------------------------------------------------------
    @property
    def key(self) -> tuple[str, str]:
        return self._key

    def identity(self) -> tuple:
        """What this resource manages; two resources with the same identity
        manage the same object."""
        return (self.kind, self.name)

    def same_as(self, other: Resource) -> bool:
        """True when ``other`` would manage the object the same way, so a graph
        swap can keep this one running."""
        return (type(self) is type(other) and self.params == other.params and self.meta == other.meta
                and self.reversal_of == other.reversal_of)

    def __repr__(self) -> str:
        return f"{self.kind}[{self.name}]"

    # --- behaviour ----------------------------------------------------------
    def validate(self) -> None:
        """Raises ``ValueError(message)`` (and may name the field via
        ``FieldError``) when the parameters make no sense together."""

    def check_apply(self, apply: bool) -> bool:
        raise NotImplementedError

    def reverse_problem(self) -> str:
        """Why ``meta.reverse: true`` cannot be honoured for this resource, or
        "" when it can (checked when the graph is loaded)."""
        if not self.REVERSIBLE:
            return f"meta.reverse: kind {self.kind} cannot be reversed (kinds that can: file, pkg)"
        return ""

    def reversal(self) -> dict[str, Any]:
        """The parameters of the resource (same kind and name) that puts back
        what this one finds now, called before its first change. Raises
        ``ResourceError`` when what is there cannot be put back."""
        raise ResourceError(self.reverse_problem() or f"{self.kind} has no reversal")

    def group_token(self) -> Hashable:
        """Resources of a GROUPABLE kind run together only when their tokens
        are equal (e.g. the same ``allowuntrusted``)."""
        return ()

    @classmethod
    def check_apply_group(cls, members: list[Resource], apply: bool) -> list[bool | ResourceError]:
        """``check_apply`` of several resources of this kind at once: one result
        per member, in order, each what its own ``check_apply`` would return or
        the ``ResourceError`` it would raise. The engine calls it with at least
        two members, all with equal ``group_token``; the default runs them one
        by one."""
        results: list[bool | ResourceError] = []
        for member in members:
            try:
                results.append(member.check_apply(apply))
            except ResourceError as err:
                results.append(err)
        return results

    def watch_paths(self) -> list[str]:
        """Paths whose changes (inotify) may mean drift."""
        return []

    def start_watch(self, poke: Callable[[], None]) -> Callable[[], None] | None:
        """Starts a custom event source calling ``poke`` on possible drift;
        returns a function that stops it, or None when there is none."""
        return None

    def autoedge_provides(self) -> list[str]:
        """What this resource manages, as autoedge tokens: an absolute path
        (a directory: others under it depend on it), or ``kind:name`` for
        objects that are not paths (``user:www``, ``group:www``,
        ``pkgfile:/etc/nginx/nginx.conf``: a path a package ships)."""
        return []

    def autoedge_requires(self) -> list[str]:
        """Tokens (see ``autoedge_provides``) whose providers this resource must
        run after."""
        return []

    def close(self) -> None:
        """Releases whatever the resource holds when it leaves the graph."""

    def interrupt(self) -> None:
        """Cuts a running ``check_apply`` short when the engine stops (e.g. kills
        a running command); the default has nothing to cut."""

    def cancel(self) -> None:
        """Cuts the running ``check_apply`` short because it outran
        ``meta.timeout`` (e.g. kills the command it waits for). Unlike
        ``interrupt`` the resource stays usable: a retry runs it again. The
        default has nothing to cut: the engine waits for the run to return."""


class FieldError(ValueError):
    """A validation error tied to one field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
