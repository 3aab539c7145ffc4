"""``kv``: a key set to a value in the cluster's etcd (mgmt's kv).

The key is stored as ``{namespace}/kv/{key}``. Without a value the key is
deleted. With ``skiplessthan`` a stored value greater than the wanted one is
left alone (for monotonically increasing values), except on a refresh.

Any failure to talk to etcd is a ResourceError (meta.retry applies); while
the engine runs the resource, such a failure also schedules a recheck of its
own (backing off up to a minute), so a kv recovers when etcd comes back even
without meta.retry. The watch on the key is started by a check (never by the
scheduler's thread, which must not wait on etcd), and started again by the
next check after anything suggests it broke (a failed read or write, an error
delivered to it, a new client)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from mgmtd.cluster.keys import Keys
from mgmtd.resources.base import Field, FieldError, Meta, Resource, ResourceError, shown

CMP_INT, CMP_STRING = 0, 1
RECHECK_FIRST, RECHECK_MAX = 2.0, 60.0   # seconds, after a failure to reach etcd
CMP_STYLES = {0: CMP_INT, 1: CMP_STRING, "int": CMP_INT, "string": CMP_STRING}


class KVResource(Resource):
    kind = "kv"
    FIELDS = {
        "key": Field((str,), None, doc="the key; default: the resource name"),
        "value": Field((str, int, float), None, doc="the value (a number is stored as text); "
                       "left out = delete the key", min=-(2**63), max=2**63 - 1),
        "mapped": Field((bool,), False, doc="one value per node: the key gets '/{hostname}' appended"),
        "skiplessthan": Field((bool,), False, doc="leave a stored value that is greater than value "
                              "(compared as skipcmpstyle says) alone, except on a refresh"),
        "skipcmpstyle": Field((int, str), 0, doc="how skiplessthan compares: 0 or 'int' (as integers), "
                              "1 or 'string' (as text)", min=0, max=1),
    }

    def __init__(self, name: str, params: dict[str, Any], meta: Meta | None = None) -> None:
        super().__init__(name, params, meta)
        self._lock = threading.Lock()
        self._poke: Callable[[], None] | None = None
        self._watch: tuple[Any, Any] | None = None   # (client, watch id)
        self._recheck: threading.Timer | None = None
        self._recheck_delay = RECHECK_FIRST

    # --- parameters -------------------------------------------------------------
    # Resource.key is the graph's (kind, name) for the vertex, but ``key`` is
    # also mgmt's name for this field: reads keep Resource's meaning, and the
    # field's value (assigned by Resource.__init__) lands in ``kv_key``.
    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    @key.setter
    def key(self, value: str | None) -> None:
        self.kv_key = value

    @property
    def wanted(self) -> str | None:
        return None if self.value is None else str(self.value)

    @property
    def etcd_key(self) -> str:
        key = Keys(self.ctx.namespace).kv_key((self.kv_key or self.name).lstrip("/"))
        if self.mapped:
            if not self.ctx.host:
                raise ResourceError("mapped: this node's hostname is not known")
            key += f"/{self.ctx.host}"
        return key

    def identity(self) -> tuple:
        return ("kv", self.kv_key or self.name, bool(self.mapped))

    def shares_with(self, other: Resource) -> bool:
        """Whether this kv and ``other`` (on the same key) may both be in one
        graph. Only when both keep the greater value (skiplessthan, the same
        comparison, a value each): then whatever order they run in, each
        leaves a value no less than the one it found, so the key ends at the
        greatest of their values (mgmt's kv4 example, a counter of stages).
        Any other pair would fight over the key forever."""
        return (isinstance(other, KVResource) and bool(self.skiplessthan) and bool(other.skiplessthan)
                and self._style() == other._style()
                and self.wanted is not None and other.wanted is not None)

    def validate(self) -> None:
        if not (self.kv_key or self.name).strip("/"):
            raise FieldError("key", "key must not be empty")
        if self.skipcmpstyle not in CMP_STYLES:
            raise FieldError("skipcmpstyle", f"skipcmpstyle must be 0 ('int') or 1 ('string'), "
                             f"not {shown(self.skipcmpstyle)}")
        if self.skiplessthan and self._style() == CMP_INT and self.wanted is not None:
            try:
                int(self.wanted)
            except ValueError:
                raise FieldError("value", f"skiplessthan compares integers: {shown(self.wanted)} "
                                 "is not one") from None

    def _style(self) -> int:
        return CMP_STYLES.get(self.skipcmpstyle, CMP_INT)

    # --- etcd -------------------------------------------------------------------
    def _client(self) -> Any:
        if self.ctx.etcd is None:
            raise ResourceError("kv needs the cluster, and this engine has no etcd connection")
        try:
            return self.ctx.etcd()
        except Exception as err:   # whatever the client library raises, etcd is unreachable
            raise ResourceError(f"etcd is unreachable: {err or type(err).__name__}") from None

    def _skip(self, stored: str) -> bool:
        """True when skiplessthan keeps the greater stored value."""
        if not self.skiplessthan or self.refresh:
            return False
        if self._style() == CMP_STRING:
            return self.wanted < stored
        try:
            return int(self.wanted) < int(stored)
        except ValueError:
            return False   # a stored value that is not a number is overwritten

    def check_apply(self, apply: bool) -> bool:
        try:
            in_state = self._check_apply(apply)
        except ResourceError:
            self._schedule_recheck()
            raise
        with self._lock:
            self._recheck_delay = RECHECK_FIRST
        return in_state

    def _get(self, client: Any, key: str) -> str | None:
        try:
            raw, _ = client.get(key)
        except Exception as err:
            # the watch is likely broken too, and its failure may never be
            # reported: start a new one with the next successful check
            self._drop_watch()
            raise ResourceError(f"cannot read {key} from etcd: {err or type(err).__name__}") from None
        return None if raw is None else raw.decode(errors="replace")

    def _check_apply(self, apply: bool) -> bool:
        client = self._client()
        key, wanted = self.etcd_key, self.wanted
        # read before arming: arming a watch on an unreachable etcd is slow
        stored = self._get(client, key)
        if self._arm_watch(client, key):
            stored = self._get(client, key)   # a change just before the watch began is not lost
        if stored == wanted:
            return True
        if wanted is not None and stored is not None and self._skip(stored):
            self.ctx.report("debug", f"{self}: {key} is {shown(stored)}, not less than {shown(wanted)}: "
                                     "left alone")
            return True
        if not apply:
            if wanted is None:
                self.ctx.report("info", f"{self}: would delete {key} (now {shown(stored)})")
            else:
                self.ctx.report("info", f"{self}: would set {key} to {shown(wanted)} (now {shown(stored)})")
            return False
        try:
            if wanted is None:
                client.delete(key)
            else:
                client.put(key, wanted)
        except Exception as err:
            self._drop_watch()
            raise ResourceError(f"cannot write {key} to etcd: {err or type(err).__name__}") from None
        return False

    # --- events -----------------------------------------------------------------
    def _on_event(self, response: Any) -> None:
        if isinstance(response, Exception):
            self._drop_watch()   # broken: the check this poke causes starts a new one
        with self._lock:
            poke = self._poke
        if poke is not None:
            poke()

    def _drop_watch(self) -> None:
        with self._lock:
            watch, self._watch = self._watch, None
        if watch is not None:
            _cancel(*watch)

    def _arm_watch(self, client: Any, key: str) -> bool:
        """Starts watching the key unless a watch on this client runs; True when it started one."""
        with self._lock:
            if self._poke is None:
                return False
            if self._watch is not None and self._watch[0] is client:
                return False
            # the engine's client was replaced (new endpoints): the old one's watch is gone
            stale, self._watch = self._watch, None
        if stale is not None:
            _cancel(*stale)
        try:
            watch_id = client.add_watch_callback(key, self._on_event)
        except Exception as err:
            self.ctx.report("debug", f"{self}: cannot watch {key} yet: {err or type(err).__name__}")
            return False
        with self._lock:
            if self._poke is not None and self._watch is None:
                self._watch, watch_id = (client, watch_id), None
        if watch_id is not None:   # stopped, or armed by another check, meanwhile
            _cancel(client, watch_id)
            return False
        return True

    def _schedule_recheck(self) -> None:
        with self._lock:
            if self._poke is None or self._recheck is not None:
                return
            delay = self._recheck_delay
            self._recheck_delay = min(delay * 2, RECHECK_MAX)
            self._recheck = threading.Timer(delay, self._recheck_now)
            self._recheck.daemon = True
            self._recheck.start()

    def _recheck_now(self) -> None:
        with self._lock:
            self._recheck = None
            poke = self._poke
        if poke is not None:
            poke()

    def start_watch(self, poke: Callable[[], None]) -> Callable[[], None] | None:
        if self.ctx.etcd is None:
            return None
        with self._lock:
            self._poke = poke
        return self.close

    def close(self) -> None:
        with self._lock:
            self._poke = None
            watch, self._watch = self._watch, None
            recheck, self._recheck = self._recheck, None
        if recheck is not None:
            recheck.cancel()
            recheck.join()
        if watch is not None:
            _cancel(*watch)


def _cancel(client: Any, watch_id: Any) -> None:
    try:
        client.cancel_watch(watch_id)
    except Exception:   # the client may already be closed with its watches
        pass
