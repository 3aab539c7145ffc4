"""An ``exec``'s event sources: its watch command (a line = an event), its
``pollint`` ticker, and the files it keeps track of (``watchfiles``,
``mtimes``, ``creates``) through inotify."""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from inotify_simple import INotify
from inotify_simple import flags as F

from mgmtd.resources.base import ResourceError
from mgmtd.resources.execproc import KILL_GRACE, OUTPUT_LIMIT, clip, last_line, terminate_group

WATCH_BACKOFF_MAX = 60.0   # longest wait before restarting a watch command that ended
FILE_MASK = (F.CREATE | F.DELETE | F.MODIFY | F.ATTRIB | F.CLOSE_WRITE | F.MOVED_FROM | F.MOVED_TO
             | F.DELETE_SELF | F.MOVE_SELF | F.ONLYDIR)


def concerns(changed: str, targets: Sequence[tuple[str, bool]]) -> bool:
    """Whether a change to ``changed`` (a normalized path) concerns one of the
    targets ``(path, recursive)``: the path itself, a directory on the way to
    it (created or removed, the path with it), or for a recursive target (a
    path written with a trailing '/') anything under it."""
    for path, recursive in targets:
        if changed == path or path.startswith(changed.rstrip("/") + "/"):
            return True
        if recursive and changed.startswith(path.rstrip("/") + "/"):
            return True
    return False


def directories_to_watch(targets: Sequence[tuple[str, bool]]) -> set[str]:
    """For each target, the nearest existing directory above it (which sees
    it appear and go), and for a recursive one, every directory under it."""
    wanted: set[str] = set()
    for path, recursive in targets:
        above = os.path.dirname(path)
        while above != "/" and not os.path.isdir(above):
            above = os.path.dirname(above)
        wanted.add(above)
        if recursive and os.path.isdir(path):
            wanted.update(root for root, _, _ in os.walk(path))
    return wanted


class FileEvents:
    """Calls ``fire`` when a target path may have changed. Directories that
    appear later (a target's parent created) are watched as they come."""

    def __init__(self, paths: Sequence[str], fire: Callable[[], None]) -> None:
        self.targets = [(os.path.normpath(p), p.endswith("/")) for p in paths]
        self.fire = fire
        self.inotify = INotify()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wd_dir: dict[int, str] = {}
        self.dir_wd: dict[str, int] = {}

    def arm(self) -> None:
        for directory in directories_to_watch(self.targets) - set(self.dir_wd):
            try:
                wd = self.inotify.add_watch(directory, FILE_MASK)
            except OSError:
                continue   # gone meanwhile, or unreadable: the directory above still sees it
            self.dir_wd[directory] = wd
            self.wd_dir[wd] = directory

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            ready, _, _ = select.select([self.inotify.fileno(), self.wake_r], [], [])
            if self.wake_r in ready:
                return
            touched = False
            for event in self.inotify.read(timeout=0):
                directory = self.wd_dir.get(event.wd)
                if directory is None:
                    continue
                if event.mask & (F.IGNORED | F.DELETE_SELF | F.MOVE_SELF):
                    self.wd_dir.pop(event.wd, None)
                    self.dir_wd.pop(directory, None)
                changed = os.path.join(directory, event.name) if event.name else directory
                touched = touched or concerns(changed, self.targets)
            if touched:
                self.arm()
                self.fire()

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def close(self) -> None:
        self.inotify.close()
        os.close(self.wake_r)
        os.close(self.wake_w)


class ExecWatch:
    """The watch command (restarted with backoff when it ends, since an event
    source that silently died would hide drift), the pollint ticker and the
    watched files, each on its own thread; ``stop`` ends them all."""

    def __init__(self, res: Any, fire: Callable[[], None], files: Sequence[str]) -> None:
        self.res = res
        self.fire = fire
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.threads: list[threading.Thread] = []
        self.files = FileEvents(files, fire) if files else None

    def start(self) -> None:
        if self.res.watchcmd:
            self.threads.append(threading.Thread(target=self._watch_loop, name=f"watch-{self.res}",
                                                 daemon=True))
        if self.res.pollint and self.res.pollint > 0:
            self.threads.append(threading.Thread(target=self._poll_loop, name=f"poll-{self.res}",
                                                 daemon=True))
        if self.files is not None:
            self.files.arm()   # before start_watch returns: a change right after it is seen
            self.threads.append(threading.Thread(target=self.files.run, args=(self.stopping,),
                                                 name=f"files-{self.res}", daemon=True))
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
            proc = self.proc
        if proc is not None:
            terminate_group(proc, self.res.stop_signal())
        if self.files is not None:
            self.files.wake()
        for thread in self.threads:
            thread.join(timeout=KILL_GRACE + 3)
        if self.files is not None:
            self.files.close()

    def _poll_loop(self) -> None:
        while not self.stopping.wait(self.res.pollint):
            self.fire()

    def _watch_loop(self) -> None:
        res = self.res
        delay = 1.0
        while not self.stopping.is_set():
            started = time.monotonic()
            clean, how = self._watch_once()
            if self.stopping.is_set():
                return
            if time.monotonic() - started > WATCH_BACKOFF_MAX:
                delay = 1.0
            res.ctx.report("info" if clean else "warning", f"{res}: {how}; restarting it in {delay:g}s")
            if self.stopping.wait(delay):
                return
            delay = min(delay * 2, WATCH_BACKOFF_MAX)

    def _watch_once(self) -> tuple[bool, str]:
        """Runs the watch command until it ends; returns (ended with status 0, how it ended)."""
        res = self.res
        with tempfile.TemporaryFile() as errors:
            with self.lock:
                if self.stopping.is_set():
                    return True, "stopped"
                try:
                    proc = res.popen(res.watch_argv(), res.watchcwd, stdout=subprocess.PIPE, stderr=errors)
                except ResourceError as err:
                    return False, f"watchcmd: {err}"
                self.proc = proc
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    if line.strip():
                        res.ctx.report("debug", f"{res}: watchcmd: {clip(line)}")
                        self.fire()
            finally:
                proc.stdout.close()
                status = proc.wait()
                with self.lock:
                    self.proc = None
            errors.seek(0)
            detail = last_line(errors.read()[-OUTPUT_LIMIT:].decode(errors="replace"))
        how = f"watchcmd exited with status {status}"
        return status == 0, f"{how}: {detail}" if detail else how
