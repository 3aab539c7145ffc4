"""What every resource kind implements, and the field schema the YAML loader
checks against before anything is built."""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

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


@dataclass(frozen=True)
class Field:
    """One parameter of a kind: the Python types it accepts and its default."""

    types: tuple[type, ...]
    default: Any = None
    required: bool = False
    doc: str = ""

    def accepts(self, value: Any) -> bool:
        if value is None and not self.required:
            return True
        if isinstance(value, bool) and bool not in self.types:
            return False
        return isinstance(value, self.types)

    def type_name(self) -> str:
        names = {str: "string", int: "integer", bool: "boolean", float: "number",
                 list: "list", dict: "mapping"}
        return " or ".join(names.get(t, t.__name__) for t in self.types)


@dataclass(frozen=True)
class Meta:
    """Meta parameters, common to every kind (mgmt's ``meta:``)."""

    noop: bool = False
    retry: int = 0          # extra attempts after a failure; -1 = forever
    delay: float = 0.0      # seconds between attempts
    poll: float = 0.0       # seconds between checks when there is no event source; 0 = events
    autoedge: bool = True

    FIELDS: ClassVar[dict[str, Field]] = {}


Meta.FIELDS = {
    "noop": Field((bool,), False, doc="report what would change, change nothing"),
    "retry": Field((int,), 0, doc="extra attempts after a failure, -1 for forever"),
    "delay": Field((int, float), 0, doc="seconds to wait between attempts"),
    "poll": Field((int, float), 0, doc="check every N seconds instead of watching for events"),
    "autoedge": Field((bool,), True, doc="add edges to the resources this one depends on"),
    # accepted for compatibility with mgmt graphs; they change nothing here
    "limit": Field((int, float), None, doc="(mgmt compatibility, ignored)"),
    "burst": Field((int,), None, doc="(mgmt compatibility, ignored)"),
    "autogroup": Field((bool,), None, doc="(mgmt compatibility, ignored)"),
    "sema": Field((list,), None, doc="(mgmt compatibility, ignored)"),
    "rewatch": Field((bool,), None, doc="(mgmt compatibility, ignored)"),
    "realize": Field((bool,), None, doc="(mgmt compatibility, ignored)"),
    "reverse": Field((bool, dict), None, doc="(mgmt compatibility, ignored)"),
}


@dataclass
class Context:
    """What the engine lends a resource while it runs."""

    host: str = ""
    namespace: str = "/mgmtd"
    noop: bool = False
    etcd: Callable[[], Any] | None = None   # returns a connected etcd3 client, or raises
    report: Callable[[str, str], None] = field(default=lambda level, msg: None)


class Resource:
    """A managed object. ``check_apply(apply)`` returns True when the object
    already is in state; with ``apply`` it makes it so first (and returns
    False, meaning "I changed something")."""

    kind: ClassVar[str] = ""
    FIELDS: ClassVar[dict[str, Field]] = {}

    def __init__(self, name: str, params: dict[str, Any], meta: Meta | None = None) -> None:
        self.name = name
        self.meta = meta or Meta()
        for key, spec in self.FIELDS.items():
            setattr(self, key, params.get(key, spec.default))
        self.params = {key: params.get(key, spec.default) for key, spec in self.FIELDS.items()}
        self.refresh = False
        self.ctx = Context()

    # --- identity -----------------------------------------------------------
    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    def identity(self) -> tuple:
        """What this resource manages; two resources with the same identity
        manage the same object."""
        return (self.kind, self.name)

    def same_as(self, other: Resource) -> bool:
        """True when ``other`` would manage the object the same way, so a graph
        swap can keep this one running."""
        return type(self) is type(other) and self.params == other.params and self.meta == other.meta

    def __repr__(self) -> str:
        return f"{self.kind}[{self.name}]"

    # --- behaviour ----------------------------------------------------------
    def validate(self) -> None:
        """Raises ``ValueError(message)`` (and may name the field via
        ``FieldError``) when the parameters make no sense together."""

    def check_apply(self, apply: bool) -> bool:
        raise NotImplementedError

    def watch_paths(self) -> list[str]:
        """Paths whose changes (inotify) may mean drift."""
        return []

    def start_watch(self, poke: Callable[[], None]) -> Callable[[], None] | None:
        """Starts a custom event source calling ``poke`` on possible drift;
        returns a function that stops it, or None when there is none."""
        return None

    def autoedge_provides(self) -> list[str]:
        """Paths this resource manages (others under them depend on it)."""
        return []

    def autoedge_requires(self) -> list[str]:
        """Paths whose managers this resource must run after."""
        return []

    def close(self) -> None:
        """Releases whatever the resource holds when it leaves the graph."""

    def interrupt(self) -> None:
        """Cuts a running ``check_apply`` short when the engine stops (e.g. kills
        a running command); the default has nothing to cut."""


class FieldError(ValueError):
    """A validation error tied to one field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
