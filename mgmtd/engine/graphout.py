"""Where the running graph's view goes: a DOT file (and a PNG when the
Graphviz program is installed) for ``--graphviz``, and ``{ns}/graph/{host}``
in etcd for ``mgmtctl graph``.

Each runs on a thread of its own and takes only the newest view, at most once
a second: the scheduler hands views over without waiting, a slow ``dot`` or
an etcd that is away never holds it up, and a graph of many thousand
resources in flux costs one write a second, not one per change."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping

from mgmtd import log
from mgmtd.backoff import Backoff, first_line
from mgmtd.cluster import graphview
from mgmtd.cluster.client import Connection
from mgmtd.cluster.graphview import GraphView
from mgmtd.cluster.keys import Keys
from mgmtd.graph import Graph, Key

LOG = log.get("engine.graph")

INTERVAL = 1.0        # seconds between two writes of one output at most
FILTER_TIMEOUT = 300  # seconds the Graphviz program may take for one picture
LEASE_TTL = 10        # seconds {ns}/graph/{host} outlives an engine that died


def graphviz_paths(filename: str, host: str) -> tuple[str, str]:
    """As mgmt: the DOT file is FILE@HOST, the picture FILE@HOST.png (two
    nodes on one machine never overwrite each other's)."""
    dot = f"{filename}@{host}"
    return dot, dot + ".png"


def write_atomically(path: str, data: bytes) -> None:
    """A temp file next to it (0600, as mgmt writes it), fsync, rename."""
    directory = os.path.dirname(path) or "."
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


class NewestOnly:
    """Calls ``self.work(view)`` on its own thread with the view of the newest
    graph and states put, at most once every INTERVAL; ``tick()`` runs at
    least every ``every`` seconds (a lease to keep alive)."""

    every: float | None = None

    def __init__(self, name: str, host: str) -> None:
        self.host = host
        self.lock = threading.Lock()
        self.view: tuple[Graph, Mapping[Key, str]] | None = None
        self.fresh = False
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, graph: Graph, states: Mapping[Key, str]) -> None:
        """Never waits (the scheduler's thread calls it): the view is drawn here."""
        with self.lock:
            self.view, self.fresh = (graph, states), True
        self.wake.set()

    def poke(self) -> None:
        """Write the newest view again (new endpoints: a write may have been lost)."""
        with self.lock:
            self.fresh = self.view is not None
        self.wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        self.closed()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(self.every)
            self.wake.clear()
            if self.stopping.is_set():
                break
            self.tick()
            with self.lock:
                view, fresh, self.fresh = self.view, self.fresh, False
            done = not fresh or view is None or self.draw(*view)
            del view   # not kept through the pause: the scheduler may hand over newer states
            if not done:
                with self.lock:
                    self.fresh = True    # not done: again after a pause
                self.wake.set()
            self.stopping.wait(INTERVAL)

    def draw(self, graph: Graph, states: Mapping[Key, str]) -> bool:
        """Returns False to be called again with the newest graph and states."""
        return self.work(graphview.view_of(graph, states, self.host))

    def work(self, view: GraphView) -> bool:
        """Returns False to be called again with the newest view."""
        raise NotImplementedError

    def tick(self) -> None:
        pass

    def closed(self) -> None:
        pass


class GraphvizWriter(NewestOnly):
    """``--graphviz FILE``: FILE@HOST in DOT at every graph swap and state
    change; FILE@HOST.png by ``PROG -Tpng`` when PROG is on PATH. Failures are
    logged once each (until a write works again) and never stop the engine."""

    def __init__(self, filename: str, host: str, program: str) -> None:
        super().__init__("graphviz", host)
        self.dot_path, self.png_path = graphviz_paths(filename, host)
        self.program = program
        self.written = b""
        self.shape: tuple = ()
        self.reported: set[str] = set()

    def _report(self, problem: str) -> None:
        if problem not in self.reported:
            self.reported.add(problem)
            LOG.warning("graphviz: %s", problem)

    def work(self, view: GraphView) -> bool:
        text = graphview.to_dot(view).encode()
        if text == self.written:
            return True
        try:
            write_atomically(self.dot_path, text)
        except OSError as err:
            self._report(f"cannot write {self.dot_path}: {err.strerror or err}")
            return True   # the next view tries again; a retry loop would only log the same
        self.written = text
        self.reported = {p for p in self.reported if not p.startswith("cannot write")}
        shape = (tuple(n.key for n in view.nodes), view.edges)
        level = LOG.info if shape != self.shape else LOG.debug   # a swap, or a state change
        self.shape = shape
        png = self._render()
        level("graphviz: wrote %s%s (%d resources, %d edges)", self.dot_path,
              f" and {self.png_path}" if png else "", len(view.nodes), len(view.edges))
        return True

    def _render(self) -> bool:
        program = shutil.which(self.program)
        if program is None:
            self._report(f"no {self.program} on PATH: writing {self.dot_path} only, no picture "
                         "(install graphviz for one)")
            return False
        fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(self.png_path)}.",
                                    dir=os.path.dirname(self.png_path) or ".")
        os.close(fd)
        try:
            done = subprocess.run([program, "-Tpng", f"-o{temp}", self.dot_path], capture_output=True,
                                  text=True, timeout=FILTER_TIMEOUT, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
                self._report(f"{self.program} -Tpng failed: {detail}")
                return False
            os.replace(temp, self.png_path)
            return True
        except subprocess.TimeoutExpired:
            self._report(f"{self.program} -Tpng took over {FILTER_TIMEOUT}s: no picture")
            return False
        except OSError as err:
            self._report(f"cannot run {self.program}: {err.strerror or err}")
            return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)


class GraphPublisher(NewestOnly):
    """``{ns}/graph/{host}`` on a lease of the engine's own: written when the
    view changed, gone LEASE_TTL seconds after the engine dies, at once when
    it stops."""

    every = LEASE_TTL / 3

    def __init__(self, connection: Connection, host: str, namespace: str) -> None:
        super().__init__("graph-publish", host)
        self.connection = connection
        self.key = Keys(namespace).graph(host)
        self.lease_id: int | None = None
        self.written = b""
        self.backoff = Backoff(first=0.5, cap=10.0)

    def tick(self) -> None:
        if self.lease_id is None or not self.connection.endpoints:
            return
        try:
            replies = list(self.connection.get().refresh_lease(self.lease_id))
        except Exception as err:  # away for a moment: the next tick tries again
            LOG.debug("graph lease refresh failed: %s", first_line(err))
            return
        if not replies or replies[0].TTL <= 0:
            self.lease_id, self.written = None, b""   # expired: the key went with it
            self.poke()

    def draw(self, graph: Graph, states: Mapping[Key, str]) -> bool:
        if not self.connection.endpoints:
            return True   # nowhere to publish (an engine alone); poke() when there is
        # straight from the graph: no view objects for a graph of many thousand resources
        return self.publish(graphview.encode_graph(graph, states, self.host))

    def publish(self, value: bytes) -> bool:
        if value == self.written:
            return True
        try:
            client = self.connection.get()
            if self.lease_id is None:
                self.lease_id = client.lease(LEASE_TTL).id
            client.put(self.key, value, lease=self.lease_id)
        except Exception as err:  # etcd moving, or a lease lost: again, quietly at first
            LOG.log(self.backoff.level(), "cannot publish the graph yet: %s", first_line(err))
            self.stopping.wait(self.backoff.next_delay())
            self.lease_id = None if "lease not found" in str(err) else self.lease_id
            return False
        self.backoff.reset()
        self.written = value
        return True

    def closed(self) -> None:
        """Takes the key away with the lease (a stopped engine runs no graph)."""
        if self.lease_id is None or not self.connection.endpoints:
            return
        try:
            client = self.connection.get()
            client.timeout = 1.0  # without quorum a revoke cannot succeed: do not hang the stop
            client.revoke_lease(self.lease_id)
        except Exception as err:
            LOG.debug("graph lease revoke failed: %s", first_line(err))
        self.lease_id = None
