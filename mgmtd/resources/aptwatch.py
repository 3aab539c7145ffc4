"""An event source for ``state: newest``: a new package index (someone ran
``apt-get update``) may bring a newer candidate. apt renames each fetched
index into ``/var/lib/apt/lists``; that rename is the event.

One watch per engine, whatever the number of ``newest`` packages: one
inotify instance (the kernel allows 128 per user by default) and one thread,
poking every subscriber."""

from __future__ import annotations

import os
import selectors
import threading
from collections.abc import Callable

from inotify_simple import INotify
from inotify_simple import flags as F

LISTS_DIR = "/var/lib/apt/lists"
IGNORED = frozenset({"lock", "partial", "auxfiles"})   # apt's own bookkeeping, no new index


def is_index(name: str) -> bool:
    """An event on this name of the lists directory may be a new index."""
    return bool(name) and name not in IGNORED


class ListsWatch:
    """Calls each subscriber's ``poke`` when an index in ``directory`` is
    added, replaced or removed. Watches only while someone subscribes."""

    def __init__(self, directory: str = LISTS_DIR) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._pokes: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._running: _Loop | None = None

    def subscribe(self, poke: Callable[[], None]) -> Callable[[], None]:
        """Starts calling ``poke``; returns the function that stops it. Raises
        OSError when the directory cannot be watched."""
        with self._lock:
            if self._running is None:
                self._running = _Loop(self.directory, self._poke_all)
            key = self._next
            self._next += 1
            self._pokes[key] = poke
        return lambda: self._unsubscribe(key)

    def _unsubscribe(self, key: int) -> None:
        with self._lock:
            if self._pokes.pop(key, None) is None or self._pokes:
                return
            loop, self._running = self._running, None
        if loop is not None:
            loop.stop()

    def _poke_all(self) -> None:
        with self._lock:
            pokes = list(self._pokes.values())
        for poke in pokes:
            poke()

    @property
    def watching(self) -> bool:
        return self._running is not None


class _Loop:
    """The inotify instance and the thread reading it."""

    def __init__(self, directory: str, poke: Callable[[], None]) -> None:
        self.poke = poke
        self.inotify = INotify()
        try:
            self.inotify.add_watch(directory, F.MOVED_TO | F.CLOSE_WRITE | F.DELETE | F.MOVED_FROM)
        except OSError:
            self.inotify.close()
            raise
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.thread = threading.Thread(target=self._loop, name=f"apt-lists-{directory}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        # a selector, not select(): descriptors above 1024 are common in a big engine
        with selectors.DefaultSelector() as selector:
            selector.register(self.inotify.fileno(), selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fd for key, _ in selector.select()}
                if self._wake_r in ready:
                    return
                events = self.inotify.read(timeout=0)
                if any(is_index(event.name) for event in events):
                    self.poke()

    def stop(self) -> None:
        os.write(self._wake_w, b"x")
        self.thread.join(timeout=5)
        self.inotify.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
