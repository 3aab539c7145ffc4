"""Reloads the graph when its file changes (or on request, e.g. SIGHUP).

Editors save by writing in place or by renaming a new file over the old one,
so the file's directory is watched, not the file. Bursts of events are
coalesced: one reload per quiet moment, always of the newest content. A
forced request (SIGHUP, ``systemctl reload``) reloads even an unchanged file:
the operator's way to say "make it so again"."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from inotify_simple import flags as F

from mgmtd import log
from mgmtd.engine.wakeable import WakeableINotify

LOG = log.get("engine.reload")

MASK = F.CLOSE_WRITE | F.MOVED_TO | F.CREATE | F.DELETE | F.MODIFY | F.ATTRIB
SETTLE_MS = 10


class GraphReloader:
    def __init__(self, path: str | None, reload: Callable[[bool], object]) -> None:
        self.path = path
        self.reload = reload          # reload(forced)
        self.requested = threading.Event()
        self.forced = threading.Event()
        self.stopping = threading.Event()
        self.inotify: WakeableINotify | None = None
        self.threads: list[threading.Thread] = []

    def request(self, forced: bool = False) -> None:
        if forced:
            self.forced.set()
        self.requested.set()

    def start(self, watch_file: bool = True) -> None:
        """Starts reloading on request; with ``watch_file``, on every edit of the
        graph file too (--no-watch: on request, SIGHUP, only)."""
        if self.path is not None and watch_file:
            self.inotify = WakeableINotify()
            try:
                self.inotify.add_watch(os.path.dirname(self.path), MASK)
            except OSError as err:
                LOG.warning("cannot watch %s for changes: %s", self.path, err.strerror)
            else:
                self.threads.append(threading.Thread(target=self._watch, name="graph-watch",
                                                     daemon=True))
        self.threads.append(threading.Thread(target=self._reloads, name="graph-reload",
                                             daemon=True))
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.requested.set()
        if self.inotify is not None:
            self.inotify.wake()
        for thread in self.threads:
            thread.join(timeout=5)
        if self.inotify is not None:
            self.inotify.close()

    def _watch(self) -> None:
        name = os.path.basename(self.path)
        while not self.stopping.is_set():
            events = self.inotify.wait_events(read_delay=SETTLE_MS)
            if events is None:
                return
            if any(event.name == name for event in events):
                self.requested.set()

    def _reloads(self) -> None:
        while True:
            self.requested.wait()
            if self.stopping.is_set():
                return
            self.requested.clear()
            forced = self.forced.is_set()
            self.forced.clear()
            self.reload(forced)
