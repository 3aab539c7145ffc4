"""File watching through inotify: one descriptor for the whole graph, one
watch per parent directory, events mapped back to the resources they concern.

A path ending in ``/`` asks for a directory and every entry in it (a file's
fragment directory): the directory's parent is watched for the directory
itself, and the directory for its entries."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterable

from inotify_simple import flags as F

from mgmtd import log
from mgmtd.engine.wakeable import WakeableINotify
from mgmtd.graph import Key

LOG = log.get("engine.watch")

MASK = (F.CREATE | F.DELETE | F.MODIFY | F.ATTRIB | F.CLOSE_WRITE | F.MOVED_FROM | F.MOVED_TO
        | F.DELETE_SELF | F.MOVE_SELF | F.ONLYDIR)
SELF_GONE = F.DELETE_SELF | F.MOVE_SELF | F.IGNORED


class FileWatcher:
    """Calls ``poke(keys)`` with the resources whose paths may have changed,
    all those one read of events touched at once."""

    def __init__(self, poke: Callable[[set[Key]], None]) -> None:
        self.poke = poke
        self.inotify = WakeableINotify()
        self.lock = threading.Lock()
        self.wd_dir: dict[int, str] = {}
        self.dir_wd: dict[str, int] = {}
        self.by_path: dict[str, tuple[Key, ...]] = {}   # watched path -> resources (mostly one)
        self.by_dir: dict[str, set[Key]] = {}      # parent dir -> resources with paths in it
        self.by_contents: dict[str, set[Key]] = {}  # dir -> resources concerned by any entry in it
        self.key_paths: dict[Key, tuple[str, ...]] = {}
        self.key_contents: dict[Key, tuple[str, ...]] = {}
        self.unwatched: set[str] = set()            # dirs that did not exist yet
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="inotify", daemon=True)
        self.thread.start()

    def watch(self, key: Key, paths: Iterable[str]) -> None:
        self.watch_many([(key, paths)])

    def watch_many(self, watches: Iterable[tuple[Key, Iterable[str]]]) -> None:
        """``watch`` for each (key, paths), under one hold of the lock (a graph
        swap starts thousands)."""
        with self.lock:
            for key, paths in watches:
                self._watch(key, paths)

    def _watch(self, key: Key, paths: Iterable[str]) -> None:
        paths = paths if isinstance(paths, list | tuple) else list(paths)
        normal = tuple(map(_normal, paths))
        contents = tuple(_normal(p) for p in paths if p.endswith("/")) if any(
            p.endswith("/") for p in paths) else ()
        if key in self.key_paths:
            self._forget(key)
        self.key_paths[key] = normal
        self.key_contents[key] = contents
        for path in normal:
            parent = os.path.dirname(path)
            keys = self.by_path.get(path, ())
            if key not in keys:
                self.by_path[path] = (*keys, key)
            found = self.by_dir.get(parent)
            if found is None:
                self.by_dir[parent] = {key}
                self._add_dir(parent)
            else:
                found.add(key)
        for directory in contents:
            self.by_contents.setdefault(directory, set()).add(key)
            self._add_dir(directory)

    def rearm(self, key: Key) -> None:
        """Tries again to watch directories that were missing (after the
        resource or a dependency created them)."""
        if not self.unwatched:
            return   # nothing missing (read without the lock: a set's size is read at once)
        with self.lock:
            for path in self.key_paths.get(key, ()):
                parent = os.path.dirname(path)
                if parent in self.unwatched:
                    self._add_dir(parent)
            for directory in self.key_contents.get(key, ()):
                if directory in self.unwatched:
                    self._add_dir(directory)

    def unwatch(self, key: Key) -> None:
        with self.lock:
            self._forget(key)

    def close(self) -> None:
        self.stopping.set()
        self.inotify.wake()
        self.thread.join(timeout=2)
        self.inotify.close()

    # --- internals, under self.lock ----------------------------------------
    def _add_dir(self, directory: str) -> None:
        if directory in self.dir_wd:
            return
        try:
            wd = self.inotify.add_watch(directory, MASK)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                LOG.warning("cannot watch %s: %s", directory, err.strerror)
            self.unwatched.add(directory)
            return
        self.unwatched.discard(directory)
        self.dir_wd[directory] = wd
        self.wd_dir[wd] = directory

    def _forget(self, key: Key) -> None:
        released = []
        for path in self.key_paths.pop(key, ()):
            parent = os.path.dirname(path)
            keys = tuple(k for k in self.by_path.get(path, ()) if k != key)
            if keys:
                self.by_path[path] = keys
            else:
                self.by_path.pop(path, None)
            _discard(self.by_dir, parent, key)
            released.append(parent)
        for directory in self.key_contents.pop(key, ()):
            _discard(self.by_contents, directory, key)
            released.append(directory)
        for directory in released:
            if directory in self.by_dir or directory in self.by_contents:
                continue   # still needed by another path or resource
            self.unwatched.discard(directory)
            wd = self.dir_wd.pop(directory, None)
            if wd is not None:
                self.wd_dir.pop(wd, None)
                try:
                    self.inotify.rm_watch(wd)
                except OSError:
                    pass

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                events = self.inotify.wait_events()
                if events is None:
                    return
            except OSError:
                if self.stopping.is_set():
                    return
                raise
            touched: set[Key] = set()
            with self.lock:
                for event in events:
                    directory = self.wd_dir.get(event.wd)
                    if directory is None:
                        continue
                    if event.name:
                        touched.update(self.by_path.get(os.path.join(directory, event.name), ()))
                        touched |= self.by_contents.get(directory, set())
                        continue
                    touched.update(self.by_path.get(directory, ()))
                    if event.mask & SELF_GONE:
                        touched |= self.by_dir.get(directory, set())
                        touched |= self.by_contents.get(directory, set())
                        # the watch now follows a moved or deleted inode: drop it
                        if event.mask & F.MOVE_SELF:
                            try:
                                self.inotify.rm_watch(event.wd)
                            except OSError:
                                pass
                        self.dir_wd.pop(directory, None)
                        self.wd_dir.pop(event.wd, None)
                        self.unwatched.add(directory)
            if touched:
                self.poke(touched)


def _normal(path: str) -> str:
    """``os.path.normpath``, the path itself when already normal (not a copy of it)."""
    if path.startswith("/") and "//" not in path and "/." not in path and not path.endswith("/"):
        return path   # already normal (most are): normpath costs more than this test
    normal = os.path.normpath(path)
    return path if normal == path else normal


def _discard(table: dict[str, set[Key]], index: str, key: Key) -> None:
    keys = table.get(index)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del table[index]
