"""A small D-Bus layer over jeepney for the kinds that talk to systemd and
hostnamed: one connection per bus shared by every resource of an engine
(``buses(ctx)``), method calls from any thread, and signal subscriptions
whose callbacks run on the connection's one receiver thread.

A connection that goes away (dbus restarted, a user session ended) is
reopened with backoff; every subscriber is called once when it is lost and
once when it is back, since anything may have changed in between.

Registering a subscription or a setup never touches the bus (the engine's
control thread registers them); ``Bus.ready()``, called by a resource's worker,
does what is registered and not yet done on the current connection.

A signal from a well-known name (``sender`` in a rule) is delivered only when
it comes from that name's current owner, tracked with GetNameOwner and
NameOwnerChanged: the bus's match rules do not stop a signal sent straight to
our unique name, and any local user may send one."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from jeepney import HeaderFields, MatchRule, Message, MessageType, new_method_call
from jeepney.bus import get_bus
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import prep_socket
from jeepney.io.threading import DBusConnection, ReceiveStopped
from jeepney.wrappers import DBusAddress

from mgmtd import log

LOG = log.get("dbus")

CALL_TIMEOUT = 25.0          # seconds for a reply (D-Bus's own default)
AUTH_TIMEOUT = 5.0           # seconds to connect and authenticate
RECONNECT_MIN, RECONNECT_MAX = 0.1, 5.0
PROPERTIES = "org.freedesktop.DBus.Properties"
DRIVER = "org.freedesktop.DBus"           # the bus itself: its signals carry this sender
DRIVER_PATH = "/org/freedesktop/DBus"


class BusError(Exception):
    """A call failed; ``name`` is the D-Bus error name ('' when the bus itself
    could not be reached) and the message one line."""

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.name = name


def session_address(uid: int, environ: dict[str, str]) -> str:
    """The user's session bus: $DBUS_SESSION_BUS_ADDRESS, else systemd's
    per-user socket /run/user/UID/bus."""
    return environ.get("DBUS_SESSION_BUS_ADDRESS") or f"unix:path=/run/user/{uid}/bus"


def system_address(environ: dict[str, str]) -> str:
    return environ.get("DBUS_SYSTEM_BUS_ADDRESS") or "unix:path=/run/dbus/system_bus_socket"


def describe(address: str) -> str:
    path = address.split("path=", 1)[-1].split(",", 1)[0]
    return path if path.startswith("/") else address


def _error_text(msg: Message) -> tuple[str, str]:
    name = msg.header.fields.get(HeaderFields.error_name, "")
    body = msg.body
    text = body[0] if body and isinstance(body[0], str) else name
    return name, " ".join(str(text).split())


Caller = Callable[..., tuple]   # call(dest, path, interface, method, signature=None, body=())


class Subscription:
    """Signals matching ``rule`` go to ``callback(message)``; ``callback(None)``
    when the connection was lost or reopened. Callbacks run on the receiver
    thread: they must not block, nor call the bus."""

    def __init__(self, bus: Bus, rule: MatchRule, callback: Callable[[Message | None], None]) -> None:
        self.bus = bus
        self.rule = rule
        self.callback = callback
        self.conn: Connection | None = None   # the connection its match was added on
        # a signal carries the sender's unique name: the sender is checked
        # against the owner the bus tracks (Bus._trusted), the rest here
        self.sender: str | None = rule.header_fields.get("sender")
        self.local = MatchRule(type=rule.message_type, path_namespace=rule.path_namespace, **{
            key: value for key, value in rule.header_fields.items() if key != "sender"})
        self.local.arg_conditions = dict(rule.arg_conditions)

    def close(self) -> None:
        self.bus._unsubscribe(self)


def well_known(name: str | None) -> bool:
    """A name some connection may own (not a unique name, not the bus)."""
    return bool(name) and not name.startswith(":") and name != DRIVER


def _owner_rule(name: str) -> MatchRule:
    rule = MatchRule(type="signal", sender=DRIVER, path=DRIVER_PATH, interface=DRIVER,
                     member="NameOwnerChanged")
    rule.add_arg_condition(0, name)
    return rule


class Connection(DBusConnection):
    """jeepney's threading connection, plus what this layer did on it, and a
    close that also closes its stop pipe (jeepney 0.9 leaves those two fds
    open): once the receiver thread is done with it, whichever comes last."""

    def __init__(self, sock) -> None:
        super().__init__(sock)
        self.unique_name = ""
        self.setups_done: set[str] = set()
        self.names: set[str] = set()          # well-known names whose owner is tracked on it
        self.owner_matched: set[str] = set()  # ... whose NameOwnerChanged match is added
        self.closing = threading.Lock()
        self.is_closed = False
        self.receiving = True

    def close(self) -> None:
        with self.closing:
            if self.is_closed:
                return
            self.is_closed = True
            self.interrupt()
            super(DBusConnection, self).close()   # the socket and the selector
            self._close_pipe()

    def receiver_done(self) -> None:
        with self.closing:
            self.receiving = False
            self._close_pipe()

    def _close_pipe(self) -> None:
        if self.is_closed and not self.receiving and self._stop_r >= 0:
            for fd in (self._stop_r, self._stop_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._stop_r = self._stop_w = -1


class Bus:
    """One bus connection, opened on first use and reopened when lost."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.lock = threading.Lock()
        self.connecting = threading.Lock()   # one attempt at a time; the others wait for it
        self.preparing = threading.Lock()    # one ready() at work at a time
        self.conn: Connection | None = None
        self.replies: dict[int, Future] = {}
        self.subscriptions: list[Subscription] = []
        self.setups: dict[str, Callable[[Caller], None]] = {}
        self.owners: dict[str, str] = {}     # well-known name -> unique name ('' = none), as last heard
        self.owner_news: dict[str, int] = {}  # NameOwnerChanged signals heard, by name
        self.closed = threading.Event()
        self.reconnecting = False
        self.users = 0
        self.attached: dict[str, Any] = {}
        self.attaching = threading.Lock()

    def __repr__(self) -> str:
        return f"bus {describe(self.address)}"

    # --- connection ----------------------------------------------------------
    def _connection(self, retrying: bool = False) -> Connection:
        with self.lock:
            if self.conn is not None:
                return self.conn
        with self.connecting:
            with self.lock:
                if self.conn is not None:
                    return self.conn
                if self.closed.is_set():
                    raise BusError(f"{self} is closed")
            try:
                return self._open()
            except BusError:
                if not retrying:
                    self._keep_trying()
                raise

    def _open(self) -> Connection:
        """A new connection, said hello to, then published (ready() does the rest)."""
        try:
            sock = prep_socket(get_bus(self.address), timeout=AUTH_TIMEOUT)
        except (OSError, TimeoutError, RuntimeError, ValueError) as err:
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise BusError(f"cannot connect to the D-Bus {describe(self.address)}: {reason}") from None
        conn = Connection(sock)
        threading.Thread(target=self._receive, args=(conn,), name=f"dbus-{describe(self.address)}",
                         daemon=True).start()
        try:
            conn.unique_name = self._call_on(conn, message_bus.Hello(), AUTH_TIMEOUT)[0]
            with self.lock:
                if self.closed.is_set():
                    raise BusError(f"{self} is closed")
                self.conn = conn
                self.owners.clear()   # names are looked up again on this connection
        except BusError:
            conn.close()
            raise
        LOG.debug("connected to %s as %s", self, conn.unique_name)
        return conn

    def ready(self) -> None:
        """Connects if needed, then does on the connection whatever is
        registered and not yet done there: track the owners of the senders
        named in subscriptions, add the subscriptions' matches, run the setups.
        Raises BusError when something failed; it is tried again next time."""
        conn = self._connection()
        if self._next_step(conn) is None:
            return
        with self.preparing:
            while (step := self._next_step(conn)) is not None:
                step()

    def _next_step(self, conn: Connection) -> Callable[[], None] | None:
        """The next thing ready() has to do on ``conn``, or None. Re-read after
        each step: a registration that lands meanwhile is done in this pass."""
        with self.lock:
            subs = list(self.subscriptions)
            setups = [(key, setup) for key, setup in self.setups.items() if key not in conn.setups_done]
        for sub in subs:
            if well_known(sub.sender) and sub.sender not in conn.names:
                return lambda name=sub.sender: self._track_owner(conn, name)
        for sub in subs:
            if sub.conn is not conn:
                return lambda sub=sub: self._match(conn, sub)
        for key, setup in setups:
            return lambda key=key, setup=setup: self._setup(conn, key, setup)
        return None

    def _track_owner(self, conn: Connection, name: str) -> None:
        if name not in conn.owner_matched:
            self._add_match(conn, _owner_rule(name))
            conn.owner_matched.add(name)
        with self.lock:
            heard = self.owner_news.get(name, 0)
        try:
            owner, = self._call_on(conn, message_bus.GetNameOwner(name), CALL_TIMEOUT)
        except BusError as err:
            if not err.name.endswith("NameHasNoOwner"):
                raise
            owner = ""
        with self.lock:
            if self.owner_news.get(name, 0) == heard:   # else a NameOwnerChanged is newer than this
                self.owners[name] = owner
            conn.names.add(name)

    def _match(self, conn: Connection, sub: Subscription) -> None:
        self._add_match(conn, sub.rule)
        sub.conn = conn   # only now: a match that failed is added on the next ready()

    def _setup(self, conn: Connection, key: str, setup: Callable[[Caller], None]) -> None:
        setup(self._caller(conn))
        with self.lock:
            conn.setups_done.add(key)

    def _caller(self, conn: Connection) -> Caller:
        def call(dest: str, path: str, interface: str, method: str, signature: str | None = None,
                 body: tuple = ()) -> tuple:
            msg = new_method_call(DBusAddress(path, dest, interface), method, signature, body)
            return self._call_on(conn, msg, CALL_TIMEOUT)
        return call

    def _subscribed(self) -> list[Subscription]:
        with self.lock:
            return list(self.subscriptions)

    def _receive(self, conn: Connection) -> None:
        try:
            while True:
                self._dispatch(conn, conn.receive())
        except ReceiveStopped:
            pass
        except Exception as err:  # whatever ends the stream ends this connection, never the engine
            if not self.closed.is_set() and not conn.is_closed:
                LOG.warning("lost the connection to %s: %s", self, getattr(err, "strerror", None) or err)
            self._lost(conn)
        finally:
            conn.receiver_done()

    def _trusted(self, sub: Subscription, sender: str | None) -> bool:
        """The signal comes from the sender the subscription asked for: its
        current owner for a well-known name."""
        if sub.sender is None:
            return True
        if not well_known(sub.sender):
            return sender == sub.sender
        with self.lock:
            owner = self.owners.get(sub.sender)
        return bool(owner) and sender == owner

    def _owner_changed(self, conn: Connection, msg: Message) -> bool:
        """Keeps track of the owners of the names we trust; True when ``msg``
        was the bus's NameOwnerChanged for one of them."""
        fields = msg.header.fields
        if (fields.get(HeaderFields.member) != "NameOwnerChanged" or fields.get(HeaderFields.sender) != DRIVER
                or fields.get(HeaderFields.interface) != DRIVER or len(msg.body) != 3):
            return False
        name, _, new = msg.body
        with self.lock:
            if not any(sub.sender == name for sub in self.subscriptions):
                return False
            self.owner_news[name] = self.owner_news.get(name, 0) + 1
            changed = self.owners.get(name) != new
            self.owners[name] = new
            if changed and new:
                conn.setups_done.clear()   # a new owner knows nothing of our setups (Subscribe)
        if changed:
            for sub in self._subscribed():
                if sub.sender == name:
                    sub.callback(None)
        return True

    def _dispatch(self, conn: Connection, msg: Message) -> None:
        serial = msg.header.fields.get(HeaderFields.reply_serial)
        if serial is not None:
            with self.lock:
                future = self.replies.pop(serial, None)
            if future is not None:
                future.set_result(msg)
            return
        if msg.header.message_type != MessageType.signal:
            return
        self._owner_changed(conn, msg)
        sender = msg.header.fields.get(HeaderFields.sender)
        for sub in self._subscribed():
            if sub.local.matches(msg) and self._trusted(sub, sender):
                sub.callback(msg)

    def _lost(self, conn: Connection) -> None:
        with self.lock:
            current = self.conn is conn
            if current:
                self.conn = None
            replies, self.replies = self.replies, {}
        conn.close()
        for future in replies.values():
            future.set_exception(BusError(f"lost the connection to {self}"))
        if not current:
            return
        for sub in self._subscribed():
            sub.callback(None)
        self._keep_trying()

    def _keep_trying(self) -> None:
        """Reconnects in the background while someone listens for signals."""
        with self.lock:
            if self.closed.is_set() or self.reconnecting or not self.subscriptions:
                return
            self.reconnecting = True
        threading.Thread(target=self._reconnect, name="dbus-reconnect", daemon=True).start()

    def _reconnect(self) -> None:
        delay = RECONNECT_MIN
        try:
            while not self.closed.wait(delay):
                try:
                    self._connection(retrying=True)
                    self.ready()   # the matches again, before anyone is told to look
                except BusError as err:
                    LOG.debug("%s", err)
                    delay = min(delay * 2, RECONNECT_MAX)
                    continue
                LOG.info("connected to %s again", self)
                for sub in self._subscribed():
                    sub.callback(None)
                return
        finally:
            with self.lock:
                self.reconnecting = False

    def close(self) -> None:
        self.closed.set()
        with self.lock:
            conn, self.conn = self.conn, None
            replies, self.replies = self.replies, {}
        for future in replies.values():
            future.set_exception(BusError(f"{self} is closed"))
        if conn is not None:
            conn.close()

    # --- calls ----------------------------------------------------------------
    def _call_on(self, conn: Connection, msg: Message, timeout: float) -> tuple:
        serial = next(conn.outgoing_serial)
        future: Future = Future()
        with self.lock:
            self.replies[serial] = future
        try:
            conn.send(msg, serial=serial)
            reply = future.result(timeout=timeout)
        except FutureTimeout:
            raise BusError(f"no reply on {self} within {timeout:g}s", "timeout") from None
        except OSError as err:
            raise BusError(f"cannot send on {self}: {err.strerror or err}") from None
        finally:
            with self.lock:
                self.replies.pop(serial, None)
        if reply.header.message_type == MessageType.error:
            name, text = _error_text(reply)
            raise BusError(text, name)
        return reply.body

    def call(self, dest: str, path: str, interface: str, method: str, signature: str | None = None,
             body: tuple = (), timeout: float = CALL_TIMEOUT) -> tuple:
        """A method call; its reply's body, or BusError."""
        msg = new_method_call(DBusAddress(path, dest, interface), method, signature, body)
        return self._call_on(self._connection(), msg, timeout)

    def get(self, dest: str, path: str, interface: str, name: str) -> Any:
        (_, value), = self.call(dest, path, PROPERTIES, "Get", "ss", (interface, name))
        return value

    def get_all(self, dest: str, path: str, interface: str) -> dict[str, Any]:
        props, = self.call(dest, path, PROPERTIES, "GetAll", "s", (interface,))
        return {key: value for key, (_, value) in props.items()}

    # --- signals ----------------------------------------------------------------
    def _add_match(self, conn: Connection, rule: MatchRule) -> None:
        self._call_on(conn, message_bus.AddMatch(rule), CALL_TIMEOUT)

    def subscribe(self, rule: MatchRule, callback: Callable[[Message | None], None]) -> Subscription:
        """Delivers matching signals to ``callback`` across reconnects, from
        the next ready() on. No I/O here."""
        sub = Subscription(self, rule, callback)
        with self.lock:
            self.subscriptions.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self.lock:
            if sub not in self.subscriptions:
                return
            self.subscriptions.remove(sub)
            conn = self.conn
        if conn is not None and sub.conn is conn:
            try:
                self._call_on(conn, message_bus.RemoveMatch(sub.rule), CALL_TIMEOUT)
            except BusError:
                pass  # gone with the connection

    def attachment(self, key: str, factory: Callable[[Bus], Any]) -> Any:
        """One object per ``key`` living as long as this bus: what the users
        of a kind share on it (svc's one set of systemd signal matches)."""
        with self.attaching:
            if key not in self.attached:
                self.attached[key] = factory(self)
            return self.attached[key]

    def add_setup(self, key: str, setup: Callable[[Caller], None]) -> None:
        """Registers ``setup(call)``, run by ready() once on each connection
        (and again when the owner of a tracked name changes): systemd's
        Subscribe, which lasts as long as the connection. Once per ``key``;
        no I/O here. A setup that raised is run again by the next ready()."""
        with self.lock:
            self.setups.setdefault(key, setup)


class Buses:
    """The connections of one engine, by address, counted: opened by the first
    resource that needs one, closed when the last lets go."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[str, Bus] = {}

    def acquire(self, address: str) -> Bus:
        with self.lock:
            bus = self.open.get(address)
            if bus is None:
                bus = self.open[address] = Bus(address)
            bus.users += 1
            return bus

    def release(self, bus: Bus) -> None:
        with self.lock:
            bus.users -= 1
            if bus.users > 0 or self.open.get(bus.address) is not bus:
                return
            del self.open[bus.address]
        bus.close()


def buses(shared: dict[str, Any]) -> Buses:
    """The engine's ``Buses``, kept in the context's ``shared`` dict that every
    resource of one engine sees (a resource built alone gets its own)."""
    return shared.setdefault("dbus", Buses())


class BusHold:
    """A resource's use of one bus: acquired on first use, released by close."""

    def __init__(self, registry: Callable[[], Buses], address: Callable[[], str]) -> None:
        self.registry = registry
        self.address = address
        self.lock = threading.Lock()
        self.bus: Bus | None = None
        self.owner: Buses | None = None

    def get(self) -> Bus:
        with self.lock:
            if self.bus is None:
                self.owner = self.registry()
                self.bus = self.owner.acquire(self.address())
            return self.bus

    def close(self) -> None:
        with self.lock:
            bus, owner, self.bus, self.owner = self.bus, self.owner, None, None
        if bus is not None and owner is not None:
            owner.release(bus)
