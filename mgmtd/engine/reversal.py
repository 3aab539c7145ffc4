"""``meta.reverse`` (mgmt's reversals): a resource that asks for it records,
before its first change, the resource that puts back what it found; once it
leaves the graph (hot reload, or the next start without it) that recorded
resource runs in its place, through the scheduler like any other, and when
it has succeeded its record is deleted and it leaves the graph.

Records live in ``{prefix}/reverse/``, one JSON file per managed object (its
identity: a file's path, a package's name), written atomically and 0600, so
a restart between the removal and the reversal loses nothing. One engine at a
time uses them (a lock in that directory): another engine on the same prefix
(``mgmtd engine`` run alone takes the service's default one) would see every
record as an object gone from its graph and put them all back."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field, fields
from typing import Any

from mgmtd import log
from mgmtd.graph import Key
from mgmtd.resources import KINDS
from mgmtd.resources.base import Meta, Resource, ResourceError
from mgmtd.resources.file import Confinement

LOG = log.get("engine.reverse")

RECORD_DIR = "reverse"
SUFFIX = ".json"
LOCK = ".lock"   # skipped by load(): it starts with a dot
FORMAT = 1
RECORDED = "reversal_recorded"   # set on an instance whose record is known to be there
_META_DEFAULTS = {f.name: f.default for f in fields(Meta)}


@dataclass(frozen=True)
class Record:
    """What one reversal needs: the resource to run (kind, name, parameters
    and meta params) and the identity of the object it puts back."""

    kind: str
    name: str
    identity: tuple
    params: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    confinement: dict[str, Any] | None = None   # a collected file's (anchor, allow)

    @property
    def id(self) -> str:
        return record_id(self.identity)

    def label(self) -> str:
        return f"{self.kind}[{self.name}]"


def record_id(identity: tuple) -> str:
    """The record's file name: one per managed object."""
    return hashlib.sha256(json.dumps(list(identity)).encode()).hexdigest()[:32]


def make_record(res: Resource, params: dict[str, Any]) -> Record:
    """The record of ``res`` whose reversal has ``params``: the reversal keeps
    the resource's meta params (retry, delay...) but never reverses itself."""
    meta = {}
    for key, default in _META_DEFAULTS.items():
        value = getattr(res.meta, key)
        if key != "reverse" and value != default:
            meta[key] = list(value) if isinstance(value, tuple) else value
    confinement = getattr(res, "confinement", None)
    kept = None
    if isinstance(confinement, Confinement):
        kept = {"anchor": confinement.anchor, "allow": sorted(confinement.allow)}
    return Record(res.kind, res.name, tuple(res.identity()), params, meta, kept)


def encode(record: Record) -> bytes:
    return (json.dumps({"format": FORMAT, "kind": record.kind, "name": record.name,
                        "identity": list(record.identity), "params": record.params,
                        "meta": record.meta, "confinement": record.confinement},
                       indent=1, sort_keys=True) + "\n").encode()


def decode(data: bytes) -> Record:
    """ValueError when the bytes are not a record."""
    value = json.loads(data)
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise ValueError("not a reversal record of this mgmtd (format)")
    kind, name, identity = value.get("kind"), value.get("name"), value.get("identity")
    params, meta = value.get("params"), value.get("meta") or {}
    if not (isinstance(kind, str) and isinstance(name, str) and isinstance(identity, list)
            and isinstance(params, dict) and isinstance(meta, dict)):
        raise ValueError("a field is missing or of the wrong type")
    confinement = value.get("confinement")
    if confinement is not None and not isinstance(confinement, dict):
        raise ValueError("confinement is not a mapping")
    return Record(kind, name, tuple(identity), params, meta, confinement)


@dataclass(frozen=True)
class Plan:
    pending: list[Record]   # their object left the graph: run them
    dropped: list[Record]   # their object is managed again without meta.reverse


def plan(records: list[Record], resources: list[Resource]) -> Plan:
    """What the records mean for a graph: a record whose object the graph
    still manages with ``meta.reverse`` stays that resource's record (it holds
    what was there before the first change); managed without it, it is
    dropped; not managed at all, its reversal is pending."""
    if not records:
        return Plan([], [])   # no record (the common case): the graph's objects need no index
    managed = {tuple(res.identity()): res for res in resources}
    pending, dropped = [], []
    for record in sorted(records, key=lambda r: r.id):
        res = managed.get(record.identity)
        if res is None:
            pending.append(record)
        elif not res.meta.reverse:
            dropped.append(record)
    return Plan(pending, dropped)


def build_reversal(record: Record, taken: set[Key]) -> Resource:
    """The resource a record describes, ready for the graph. Its name is the
    original's unless the graph has that name already (a renamed object)."""
    cls = KINDS.get(record.kind)
    if cls is None or not cls.REVERSIBLE:
        raise ValueError(f"kind {record.kind!r} has no reversal")
    name = record.name if (record.kind, record.name) not in taken else f"{record.name} (reversal)"
    res = cls(name, dict(record.params), Meta(**record.meta))
    if record.confinement is not None:
        res.confinement = Confinement(str(record.confinement["anchor"]),
                                      frozenset(record.confinement.get("allow", ())))
    res.validate()
    if tuple(res.identity()) != record.identity:
        raise ValueError("its parameters manage another object than its identity says")
    res.reversal_of = record.id
    return res


class ReversalStore:
    """The records on disk (I/O only)."""

    def __init__(self, prefix: str) -> None:
        self.directory = os.path.join(prefix, RECORD_DIR)
        self._lock_fd: int | None = None
        self._claiming = threading.Lock()   # workers record at once: one flock for all of them

    def claim(self, create: bool) -> str:
        """Takes the records for this engine (an exclusive flock, held until
        the process ends or ``release``); "" when held, else why not. Without
        ``create`` a missing directory holds nothing to claim: ""."""
        with self._claiming:
            return self._claim(create)

    def _claim(self, create: bool) -> str:
        if self._lock_fd is not None:
            return ""
        try:
            if create:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(self.directory, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            return "" if not create else f"cannot create {self.directory}"
        except OSError as err:
            return f"cannot lock {self.directory}: {err.strerror or err}"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            return (f"{self.directory} is in use by another engine (pid {holder}): every engine "
                    "needs its own --prefix")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return ""

    def release(self) -> None:
        with self._claiming:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def path(self, rid: str) -> str:
        return os.path.join(self.directory, rid + SUFFIX)

    def exists(self, rid: str) -> bool:
        return os.path.exists(self.path(rid))

    def load(self) -> dict[str, Record | str]:
        """Every record by id, or why it cannot be read."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return {}
        found: dict[str, Record | str] = {}
        for name in names:
            if not name.endswith(SUFFIX) or name.startswith("."):
                continue  # a temporary file of an interrupted write
            rid = name[:-len(SUFFIX)]
            try:
                with open(self.path(rid), "rb") as handle:
                    record = decode(handle.read())
            except FileNotFoundError:
                continue  # deleted meanwhile: done
            except (OSError, ValueError) as err:
                found[rid] = str(err)
                continue
            found[rid] = record if record.id == rid else "its identity does not match its file name"
        return found

    def write(self, record: Record) -> None:
        """Atomically (temporary file, fsync, rename, fsync of the directory), 0600."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.directory)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, encode(record))
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(tmp, self.path(record.id))
        except BaseException:
            if fd >= 0:
                os.close(fd)
            os.unlink(tmp)
            raise
        self._sync_directory()

    def delete(self, rid: str) -> None:
        try:
            os.unlink(self.path(rid))
        except FileNotFoundError:
            return
        self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Reversals:
    """The engine's side: records before a first change (in a worker), the
    reversals a new graph needs (when it is composed), the end of one that
    succeeded (in the scheduler's thread)."""

    def __init__(self, store: ReversalStore, noop: bool = False) -> None:
        self.store = store
        self.noop = noop
        self.announced: set[str] = set()      # pending reversals and bad records already logged

    def before_apply(self, res: Resource) -> None:
        """Called before each applying run: the first one of an instance with
        ``meta.reverse`` records its reversal unless a record is there (then
        it holds what was there before an earlier first change: kept)."""
        if not res.meta.reverse or res.reversal_of is not None or getattr(res, RECORDED, False):
            return
        rid = record_id(tuple(res.identity()))
        problem = self.store.claim(create=True)
        if problem:
            raise ResourceError(f"cannot record its reversal: {problem}")
        try:
            if not self.store.exists(rid):
                record = make_record(res, res.reversal())
                self.store.write(record)
                LOG.info("%s: reversal recorded: %s", res, _says(record))
        except OSError as err:
            raise ResourceError(f"cannot record its reversal in {self.store.directory}: "
                                f"{err.strerror or err}") from None
        setattr(res, RECORDED, True)

    def reversed(self, res: Resource) -> None:
        """A reversal succeeded: its record goes."""
        if res.reversal_of is None:
            return
        try:
            self.store.delete(res.reversal_of)
        except OSError as err:
            LOG.error("%s: reversed, but its record could not be deleted: %s", res, err.strerror)
            return
        self.announced.discard(res.reversal_of)
        LOG.info("%s: reversed: its record is deleted", res)

    def compose(self, resources: list[Resource], taken: set[Key]) -> list[Resource]:
        """The reversal resources to add to a graph of ``resources``; drops
        the records of objects managed again without ``meta.reverse``."""
        loaded = self.store.load()
        problem = self.store.claim(create=False) if loaded else ""
        if problem:   # another engine's records: neither run nor dropped here
            if problem not in self.announced:
                self.announced.add(problem)
                LOG.error("reversal records: %s; none is run by this engine", problem)
            return []
        for rid, problem in loaded.items():
            if isinstance(problem, str) and rid not in self.announced:
                self.announced.add(rid)
                LOG.error("reversal record %s is unreadable (%s): left alone", self.store.path(rid), problem)
        decided = plan([r for r in loaded.values() if isinstance(r, Record)], resources)
        for record in decided.dropped:
            if self.noop:
                continue
            try:
                self.store.delete(record.id)
            except OSError as err:
                LOG.error("%s: cannot drop its reversal record: %s", record.label(), err.strerror)
                continue
            LOG.info("%s: managed again without meta.reverse: its reversal record is dropped",
                     record.label())
        built = []
        for record in decided.pending:
            try:
                res = build_reversal(record, taken)
            except (ValueError, TypeError, KeyError) as err:
                if record.id not in self.announced:
                    self.announced.add(record.id)
                    LOG.error("reversal record %s cannot be used (%s): left alone",
                              self.store.path(record.id), err)
                continue
            if record.id not in self.announced:
                self.announced.add(record.id)
                LOG.info("%s: left the graph: its reversal runs (%s)", record.label(), _says(record))
            built.append(res)
        return built


def _says(record: Record) -> str:
    """The reversal in a log line: what it sets (not its path, nor a flag left off)."""
    return ", ".join(f"{key} {value!r}" if key != "content" else f"content of {len(value)} characters"
                     for key, value in sorted(record.params.items())
                     if key != "path" and value is not False and value is not None)
