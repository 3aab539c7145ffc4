"""An event source for ``state: newest``: a new package index (someone ran
``apt-get update``) may bring a newer candidate. apt renames each fetched
index into ``/var/lib/apt/lists``; that rename is the event."""

from __future__ import annotations

import os
import select
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
    """Calls ``poke`` when an index in ``directory`` is added, replaced or removed."""

    def __init__(self, poke: Callable[[], None], directory: str = LISTS_DIR) -> None:
        self.poke = poke
        self.inotify = INotify()
        self.inotify.add_watch(directory, F.MOVED_TO | F.CLOSE_WRITE | F.DELETE | F.MOVED_FROM)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.thread = threading.Thread(target=self._loop, name=f"apt-lists-{directory}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            ready, _, _ = select.select([self.inotify.fileno(), self._wake_r], [], [])
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
