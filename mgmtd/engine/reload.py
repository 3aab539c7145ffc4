"""Reloads the graph when its file changes (or on request, e.g. SIGHUP).

Editors save by writing in place or by renaming a new file over the old one,
so the file's directory is watched, not the file. A finished write (the
writer closed the file, or a new file was renamed into place) reloads at
once: no fixed wait, since the export of a ``@@`` resource waits on it. Only
a write still under way (the file modified or created and not closed yet, or
deleted or renamed away for now) waits: for its close, or, for a writer that
keeps the file open, until its events stop for ``QUIET_S`` (a settle driven by
the events, not a sleep). A read that the file's next change overtook
(a half-written file) is not reported as an error: the reload of the newer
content follows. A forced request (SIGHUP, ``systemctl reload``) reloads even
an unchanged file: the operator's way to say "make it so again"."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable

from inotify_simple import INotify
from inotify_simple import flags as F

from mgmtd import log

LOG = log.get("engine.reload")

# a write that is finished: the writer closed the file, or a whole new file was renamed into place
FINISHED = F.CLOSE_WRITE | F.MOVED_TO
# a write under way, or the file gone until its replacement lands (vim renames it away first)
UNDER_WAY = F.CREATE | F.MODIFY | F.DELETE | F.MOVED_FROM
MASK = FINISHED | UNDER_WAY | F.ATTRIB   # ATTRIB: touch, chmod: whole by itself
QUIET_S = 0.2   # a write under way that is neither closed nor followed by events: read it anyway

# reload(forced, changed): ``changed(wait)`` says whether the file changed after
# this reload began (then its content may be half-written and a newer reload
# follows); with wait=True it first waits up to QUIET_S for such a change
Changed = Callable[[bool], bool]


class Settle:
    """When to reload, from the graph file's events (pure: the caller gives
    the times). ``due_in(now)``: None (nothing to do), 0 (reload now) or the
    seconds to wait for a write under way to finish."""

    def __init__(self, quiet: float = QUIET_S) -> None:
        self.quiet = quiet
        self.pending = False    # an event or a request not reloaded yet
        self.forced = False
        self.writing = False    # the last event was a write under way
        self.last = 0.0         # when the last event came
        self.seen = 0           # events so far: a reload's token, to tell that the file changed since

    def event(self, mask: int, now: float) -> None:
        self.pending = True
        self.last = now
        self.seen += 1
        if mask & FINISHED:
            self.writing = False
        elif mask & UNDER_WAY:
            self.writing = True
        # ATTRIB alone changes no content: it leaves a write under way under way

    def request(self, forced: bool = False) -> None:
        self.pending = True
        self.forced = self.forced or forced

    def due_in(self, now: float) -> float | None:
        if not self.pending:
            return None
        if self.forced or not self.writing:
            return 0.0
        return max(0.0, self.last + self.quiet - now)

    def take(self) -> tuple[bool, int]:
        """Starts a reload: (forced, token for ``changed_since``)."""
        forced = self.forced
        self.pending = self.forced = False
        return forced, self.seen

    def changed_since(self, token: int) -> bool:
        return self.seen != token


class GraphReloader:
    """One thread: reads the directory's events, decides with ``Settle`` and
    calls ``reload(forced, changed)``. Reading the events in the thread that
    reloads lets ``changed`` look at the kernel's queue itself: no event that
    is already there can be missed."""

    def __init__(self, path: str | None, reload: Callable[[bool, Changed], object],
                 quiet: float = QUIET_S) -> None:
        self.path = path
        self.name = os.path.basename(path) if path is not None else None
        self.reload = reload
        self.settle = Settle(quiet)
        self.lock = threading.Lock()   # settle: request() comes from other threads
        self.stopping = threading.Event()
        self.inotify: INotify | None = None
        self._wake_r = self._wake_w = -1    # a pipe from start() on: wakes the thread at once
        self.thread: threading.Thread | None = None

    def request(self, forced: bool = False) -> None:
        with self.lock:
            self.settle.request(forced)
        self._wake()

    def start(self, watch_file: bool = True) -> None:
        """Starts reloading on request; with ``watch_file``, on every edit of the
        graph file too (--no-watch: on request, SIGHUP, only)."""
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.path is not None and watch_file:
            self.inotify = INotify()
            try:
                self.inotify.add_watch(os.path.dirname(self.path), MASK)
            except OSError as err:
                LOG.warning("cannot watch %s for changes: %s", self.path, err.strerror)
                self.inotify.close()
                self.inotify = None
        self.thread = threading.Thread(target=self._loop, name="graph-reload", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._wake()
        if self.thread is not None:
            self.thread.join(timeout=5)
            if self.thread.is_alive():
                return   # a reload still running: its descriptors go with the process
        if self.inotify is not None:
            self.inotify.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _wake(self) -> None:
        if self._wake_w < 0:
            return   # not started (the thread looks at the request when it starts) or stopped
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass   # the pipe is full: a wake is pending anyway

    def _loop(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                due = self.settle.due_in(time.monotonic())
            if due is None or due > 0:
                self._wait(due)
                continue
            with self.lock:
                forced, token = self.settle.take()
            self.reload(forced, lambda wait, token=token: self._changed_since(token, wait))

    def _wait(self, timeout: float | None) -> None:
        """Until an event, a request, a stop, or ``timeout`` seconds."""
        fds = [self._wake_r] if self.inotify is None else [self._wake_r, self.inotify.fileno()]
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            self.stopping.wait(0.1)   # closed under us: stopping
            return
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 4096)
            except OSError:
                pass
        if self.inotify is not None and self.inotify.fileno() in ready:
            self._read_events()

    def _read_events(self) -> None:
        events = self.inotify.read(timeout=0)
        now = time.monotonic()
        with self.lock:
            for event in events:
                if event.name == self.name or event.mask & F.Q_OVERFLOW:
                    # an overflow lost events: the file may have changed, read it
                    self.settle.event(F.CLOSE_WRITE if event.mask & F.Q_OVERFLOW else event.mask, now)

    def _changed_since(self, token: int, wait: bool) -> bool:
        if self.inotify is None:
            return False   # --no-watch: only requests reload, nothing overtakes a read
        end = time.monotonic() + (self.settle.quiet if wait else 0.0)
        while True:
            self._read_events()   # what the kernel has queued already, without waiting
            with self.lock:
                if self.settle.changed_since(token):
                    return True
            left = end - time.monotonic()
            if left <= 0 or self.stopping.is_set():
                return False
            try:
                select.select([self.inotify.fileno()], [], [], left)
            except (OSError, ValueError):
                return False
