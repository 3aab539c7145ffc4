"""A small D-Bus layer over jeepney for the kinds that talk to systemd and
hostnamed: one connection per bus shared by every resource of an engine
(``buses(ctx)``), method calls from any thread, and signal subscriptions
whose callbacks run on the connection's one receiver thread.

A connection that goes away (dbus restarted, a user session ended) is
reopened with backoff; every subscriber is called once when it is lost and
once when it is back, since anything may have changed in between."""

from __future__ import annotations

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
        self.conn: DBusConnection | None = None   # the connection its match was added on
        # the bus resolves a well-known sender; a signal carries the unique name
        self.local = MatchRule(type=rule.message_type, **{
            key: value for key, value in rule.header_fields.items() if key != "sender"})
        self.local.arg_conditions = dict(rule.arg_conditions)

    def close(self) -> None:
        self.bus._unsubscribe(self)


class Bus:
    """One bus connection, opened on first use and reopened when lost."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.lock = threading.Lock()
        self.connecting = threading.Lock()   # one attempt at a time; the others wait for it
        self.conn: DBusConnection | None = None
        self.replies: dict[int, Future] = {}
        self.subscriptions: list[Subscription] = []
        self.setups: dict[str, Callable[[Caller], None]] = {}
        self.closed = threading.Event()
        self.reconnecting = False
        self.users = 0
        self.attached: dict[str, Any] = {}
        self.attaching = threading.Lock()

    def __repr__(self) -> str:
        return f"bus {describe(self.address)}"

    # --- connection ----------------------------------------------------------
    def _connection(self, retrying: bool = False) -> DBusConnection:
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
                conn = self._open()
            except BusError:
                if not retrying:
                    self._keep_trying()
                raise
        self._match_all(conn)
        return conn

    def _open(self) -> DBusConnection:
        """A new connection, said hello to, its matches and setups done, then published."""
        try:
            sock = prep_socket(get_bus(self.address), timeout=AUTH_TIMEOUT)
        except (OSError, TimeoutError, RuntimeError, ValueError) as err:
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise BusError(f"cannot connect to the D-Bus {describe(self.address)}: {reason}") from None
        conn = DBusConnection(sock)
        threading.Thread(target=self._receive, args=(conn,), name=f"dbus-{describe(self.address)}",
                         daemon=True).start()
        try:
            conn.unique_name = self._call_on(conn, message_bus.Hello(), AUTH_TIMEOUT)[0]
            self._match_all(conn)
            for setup in list(self.setups.values()):
                setup(self._caller(conn))
            with self.lock:
                if self.closed.is_set():
                    raise BusError(f"{self} is closed")
                self.conn = conn
        except BusError:
            conn.close()
            raise
        LOG.debug("connected to %s as %s", self, conn.unique_name)
        return conn

    def _match_all(self, conn: DBusConnection) -> None:
        """Adds the match of every subscription not yet matched on ``conn``."""
        for sub in self._subscribed():
            if sub.conn is not conn:
                sub.conn = conn
                self._add_match(conn, sub.rule)

    def _caller(self, conn: DBusConnection) -> Caller:
        def call(dest: str, path: str, interface: str, method: str, signature: str | None = None,
                 body: tuple = ()) -> tuple:
            msg = new_method_call(DBusAddress(path, dest, interface), method, signature, body)
            return self._call_on(conn, msg, CALL_TIMEOUT)
        return call

    def _subscribed(self) -> list[Subscription]:
        with self.lock:
            return list(self.subscriptions)

    def _receive(self, conn: DBusConnection) -> None:
        try:
            while True:
                self._dispatch(conn.receive())
        except ReceiveStopped:
            return
        except Exception as err:  # whatever ends the stream ends this connection, never the engine
            if not self.closed.is_set():
                LOG.warning("lost the connection to %s: %s", self, getattr(err, "strerror", None) or err)
        self._lost(conn)

    def _dispatch(self, msg: Message) -> None:
        serial = msg.header.fields.get(HeaderFields.reply_serial)
        if serial is not None:
            with self.lock:
                future = self.replies.pop(serial, None)
            if future is not None:
                future.set_result(msg)
            return
        if msg.header.message_type != MessageType.signal:
            return
        for sub in self._subscribed():
            if sub.local.matches(msg):
                sub.callback(msg)

    def _lost(self, conn: DBusConnection) -> None:
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
    def _call_on(self, conn: DBusConnection, msg: Message, timeout: float) -> tuple:
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
    def _add_match(self, conn: DBusConnection, rule: MatchRule) -> None:
        self._call_on(conn, message_bus.AddMatch(rule), CALL_TIMEOUT)

    def subscribe(self, rule: MatchRule, callback: Callable[[Message | None], None]) -> Subscription:
        """Delivers matching signals to ``callback`` from now on, across
        reconnects. Never connects: the match is added now if connected, else
        when the connection opens."""
        sub = Subscription(self, rule, callback)
        with self.lock:
            self.subscriptions.append(sub)
            conn = self.conn
        if conn is not None:
            try:
                self._match_all(conn)
            except BusError:
                pass  # the connection is going; its successor adds the match
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
        """Runs ``setup(call)`` on the connection now (if open) and on every
        new one before it is used (systemd's Subscribe, which lasts as long
        as the connection); once per ``key``."""
        with self.lock:
            if key in self.setups:
                return
            self.setups[key] = setup
            conn = self.conn
        if conn is not None:
            setup(self._caller(conn))


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
