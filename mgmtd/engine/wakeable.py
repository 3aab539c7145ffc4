"""An inotify descriptor whose reader can be woken at once to stop (no
polling timeout to wait out on shutdown)."""

from __future__ import annotations

import os
import select
import time

from inotify_simple import INotify


class WakeableINotify(INotify):
    def __init__(self) -> None:
        super().__init__()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wait_events(self, read_delay: int | None = None) -> list | None:
        """Blocks until events arrive (returns them) or ``wake()`` is called
        (returns None)."""
        ready, _, _ = select.select([self.fileno(), self._wake_r], [], [])
        if self._wake_r in ready:
            return None
        if read_delay:
            time.sleep(read_delay / 1000)  # let a burst of events (an editor's save) gather
        return self.read(timeout=0)

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self._wake_r)
            os.close(self._wake_w)
