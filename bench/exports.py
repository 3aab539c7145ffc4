"""Figure 4: export -> collect latency. h1 (ideal size 1) collects a directory,
h2 joins as a client and exports one file; each change rewrites h2's graph
file and waits for the new content on disk. The reference is the raw etcd
put -> watch latency on the same cluster, with the same client library.

Each sample runs from just before the bench writes the graph file (temp file,
rename) until the collected file holds the new content, seen by an inotify
watch on its directory (a 1 ms poll would add up to 1 ms and take a CPU the
engines need on a small machine)."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as F

from bench.common import Deadline, ScenarioTimeout, Workspace, percentile
from tests.harness import start_cluster, wait_for, write_atomically

KEY_PREFIX = "/mgmtd/exported/h2/"


def exporter_graph(out: Path, content: str) -> str:
    return ("graph: exporter\nresources:\n  file:\n"
            f'  - name: "@@x"\n    path: "{out}/x"\n    content: {json.dumps(content)}\n'
            "    state: exists\n")


def collector_graph(out: Path, local: Path | None = None, local_files: int = 0) -> str:
    """The collector's graph: the directory it collects into and, for the
    big-graph variant, ``local_files`` files of its own in ``local``."""
    own = "".join(f'  - name: l{i}\n    path: "{local}/l{i}"\n    content: "local {i}"\n'
                  for i in range(local_files))
    if local_files:
        own = f'  - name: local\n    path: "{local}/"\n    state: exists\n' + own
    return (f'graph: collector\nresources:\n  file:\n  - name: out\n    path: "{out}/"\n'
            f'    state: exists\n{own}collect:\n- kind: file\n  pattern: "{out}/"\n')


def read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


class KeyWatch:
    """Records when each exported value shows up in etcd (the bench's own
    watch on h2's exports: where the exporter's half ends)."""

    def __init__(self, client) -> None:
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.watch_id = client.add_watch_prefix_callback(KEY_PREFIX, self._event)

    def _event(self, response) -> None:
        now = time.monotonic()
        if isinstance(response, Exception):
            return
        for event in response.events:
            try:
                content = json.loads(event.value)["params"]["content"]
            except (ValueError, KeyError, TypeError):
                continue
            with self.lock:
                self.seen.setdefault(content, now)

    def when(self, content: str) -> float | None:
        with self.lock:
            return self.seen.get(content)


class Arrival:
    """Waits for a file to hold some content: reads it at each inotify event
    that names it (the collector writes it atomically: a rename; the events
    of its temp file beside it wake no read, which would take a CPU the
    collector needs at that very moment)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.inotify = INotify()
        self.inotify.add_watch(str(path.parent), F.MOVED_TO | F.CLOSE_WRITE)

    def wait(self, content: str, timeout: float) -> float | None:
        """The monotonic time the file was seen with ``content``; None after ``timeout``."""
        end = time.monotonic() + timeout
        named = True   # read once before any event: it may be there already
        while True:
            if named and read(self.path) == content:
                return time.monotonic()
            left = end - time.monotonic()
            if left <= 0:
                return None
            events = self.inotify.read(timeout=int(min(left, 1.0) * 1000) + 1)
            # no event within the timeout: read anyway (an overflow would have lost it)
            named = not events or any(e.name == self.path.name or e.mask & F.Q_OVERFLOW for e in events)

    def close(self) -> None:
        self.inotify.close()


def spread(values: list[float]) -> dict:
    return {"p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "min": min(values, default=None),
            "max": max(values, default=None)}


def raw_put_watch(client, changes: int, deadline: Deadline) -> list[float]:
    """etcd put -> watch event, one at a time, on the cluster mgmtd runs."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    key = "/bench/put-watch"
    watch_id = client.add_watch_callback(key, lambda r: events.put((time.monotonic(), r)))
    samples = []
    try:
        for k in range(changes + 3):
            deadline.check("raw put -> watch")
            value = f"v{k}"
            t0 = time.monotonic()
            client.put(key, value)
            while True:
                arrived, response = events.get(timeout=max(1.0, min(10.0, deadline.left())))
                if not isinstance(response, Exception) and any(
                        e.value.decode() == value for e in response.events):
                    break
            if k >= 3:  # the first ones warm the stream up
                samples.append(arrived - t0)
            time.sleep(0.005)
    finally:
        client.cancel_watch(watch_id)
    return samples


def export_collect(changes: int, deadline: Deadline, local_files: int = 0) -> dict:
    """The figure; with ``local_files``, the collector's graph has that many
    files of its own besides (a collected change must not cost the whole graph)."""
    from mgmtd.cluster.client import connect  # the client the engine itself uses

    with Workspace("export") as ws:
        out = ws.path("out")
        out.mkdir()
        # each host's graph in a directory of its own, as on two machines: a
        # graph file's directory is watched, and the other host's writes there
        # would wake the collector's reloader at the very moment measured
        g1, g2 = ws.path("graph-h1", "collector.yaml"), ws.path("graph-h2", "exporter.yaml")
        g1.parent.mkdir()
        g2.parent.mkdir()
        g1.write_text(collector_graph(out, ws.path("local"), local_files))
        write_atomically(g2, exporter_graph(out, "round 0\n"))
        h1, _ = start_cluster([ws.node("h1"), ws.node("h2")], "--log-level", "warning", ideal=1,
                              graphs=[str(g1), str(g2)])
        target = out / "x"
        wait_for(lambda: read(target) == "round 0\n", deadline.within(120), "the first export collected")
        client = connect([h1.client_url], tls=None)
        arrival = Arrival(target)
        try:
            watch = KeyWatch(client)
            total, exporter, collector, missed = [], [], [], 0
            for k in range(1, changes + 1):
                deadline.check("changing the export")
                content = f"round {k}\n"
                t0 = time.monotonic()
                write_atomically(g2, exporter_graph(out, content))
                t1 = arrival.wait(content, deadline.within(20))
                if t1 is None:
                    missed += 1
                    if missed > 5:
                        raise ScenarioTimeout(f"{missed} changes never reached the collector:\n"
                                              f"{ws.log('h1')[-1500:]}\n{ws.log('h2')[-1500:]}")
                    continue
                total.append(t1 - t0)
                in_etcd = watch.when(content)
                if in_etcd is not None:
                    exporter.append(in_etcd - t0)
                    collector.append(t1 - in_etcd)
                time.sleep(0.01)
            client.cancel_watch(watch.watch_id)
            raw = raw_put_watch(client, changes, deadline) if not local_files else []
        finally:
            arrival.close()
            client.close()
        figures = {"": spread(total), "exporter_": spread(exporter),
                   "collector_": spread(collector), "raw_": spread(raw)}
        return {"changes": changes, "missed": missed,
                **{f"{part}{name}": value for part, values in figures.items()
                   for name, value in values.items()},
                "samples": {"total": total, "exporter": exporter, "collector": collector, "raw": raw}}
