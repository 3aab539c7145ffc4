"""Where a ``file`` resource's object lives, and the few operations on it, done
so that no symbolic link is ever followed where an attacker could have put one.

A ``Place`` is a directory and a name in it. The object itself (the name) is
never followed: it is opened with ``O_NOFOLLOW``, replaced by ``rename`` (which
replaces a link, not what it points at) and removed with ``unlink``. Its mode
and owner are changed through a file descriptor of the object itself, never
by path.

How the directory is reached depends on who asked for the file:

- the host's own graph (``locate(target)``): by path, symlinks in the parent
  directories followed; the graph's author chose those paths;
- a collected export (``locate(target, anchor)``): the trusted ``anchor``
  directory (derived from the collect rule's pattern) is opened by path, and
  every directory below it is opened with ``O_NOFOLLOW`` relative to the one
  above, at the moment of the write. A symlink anywhere below the anchor is
  refused, whatever it points at, so swapping one in after the export was
  selected gains nothing."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator

TEMP_PREFIX = ".mgmtd-tmp-"

_OBJECT_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class PlaceError(OSError):
    """The path cannot be used safely; the message says why (one line)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class MissingParent(PlaceError):
    """A directory on the way to the object does not exist."""

    def __init__(self, directory: str) -> None:
        super().__init__(f"parent directory {directory}/ does not exist")
        self.directory = directory


class Place:
    """A directory (an open descriptor, or None: reached by path) and a name in it."""

    __slots__ = ("dir_fd", "dir_path", "name", "path")

    def __init__(self, dir_fd: int | None, dir_path: str, name: str) -> None:
        self.dir_fd = dir_fd
        self.dir_path = dir_path
        self.name = name if dir_fd is not None else os.path.join(dir_path, name)
        self.path = os.path.join(dir_path, name)

    def close(self) -> None:
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    def __enter__(self) -> Place:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _sibling(self, name: str) -> str:
        return name if self.dir_fd is not None else os.path.join(self.dir_path, name)

    # --- looking --------------------------------------------------------------
    def lstat(self) -> os.stat_result | None:
        try:
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open_object(self, want_dir: bool) -> int:
        """A descriptor of the object itself, refusing a symlink and any object
        that is not what the resource manages (a FIFO, a device...)."""
        return self._open_object(want_dir)[0]

    def _open_object(self, want_dir: bool) -> tuple[int, os.stat_result]:
        try:
            fd = os.open(self.name, _OBJECT_FLAGS, dir_fd=self.dir_fd)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise PlaceError(f"{self.path} is a symbolic link: it is never followed") from None
            raise
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode) != want_dir or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            os.close(fd)
            raise PlaceError(f"{self.path} is {describe(st.st_mode)}, not "
                             f"{'a directory' if want_dir else 'a regular file'}")
        return fd, st

    def read(self) -> bytes:
        fd, st = self._open_object(want_dir=False)
        try:
            # a file object costs more than the read of a small file: plain reads
            # until the end (it may have grown since the open's fstat)
            chunks = []
            size = min(st.st_size + 1, 1 << 16)   # not a MiB per worker for a small file
            while True:
                chunk = os.read(fd, size)
                size = 1 << 16
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            os.close(fd)

    # --- changing -------------------------------------------------------------
    def chmod(self, mode: int, want_dir: bool, single_link: bool = False) -> None:
        fd = self.open_object(want_dir)
        try:
            _refuse_hard_link(fd, self.path, single_link)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def chown(self, uid: int, gid: int, want_dir: bool, single_link: bool = False) -> None:
        fd = self.open_object(want_dir)
        try:
            _refuse_hard_link(fd, self.path, single_link)
            os.fchown(fd, uid, gid)
        finally:
            os.close(fd)

    def write_atomically(self, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
        """A new file beside the old one, synced, renamed over it: a crash
        leaves the old content or the new one, never half of it."""
        temp = TEMP_PREFIX + os.urandom(6).hex()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._sibling(temp), flags, 0o600, dir_fd=self.dir_fd)
        with self._into_place(temp), os.fdopen(fd, "wb") as out:
            out.write(data)
            if uid != -1 or gid != -1:
                os.fchown(out.fileno(), uid, gid)
            os.fchmod(out.fileno(), mode)   # after fchown, which clears setuid bits
            out.flush()
            os.fsync(out.fileno())

    def readlink(self) -> str:
        """The target of the link at this place, never followed."""
        return os.readlink(self.name, dir_fd=self.dir_fd)

    def symlink_atomically(self, target: str, uid: int = -1, gid: int = -1) -> None:
        """A new link beside the object, owned as asked, renamed over it: the
        name always resolves to the old object or the new link, never to
        nothing. (rename cannot replace a directory by a link: the caller
        removes an empty directory first.)"""
        temp = TEMP_PREFIX + os.urandom(6).hex()
        os.symlink(target, self._sibling(temp), dir_fd=self.dir_fd)
        with self._into_place(temp):
            if uid != -1 or gid != -1:
                os.chown(self._sibling(temp), uid, gid, dir_fd=self.dir_fd, follow_symlinks=False)

    @contextlib.contextmanager
    def _into_place(self, temp: str) -> Iterator[None]:
        """After the block has made ``temp`` beside the object: renames it over
        the object and syncs the directory; any failure removes ``temp``."""
        try:
            yield
            os.rename(self._sibling(temp), self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._sibling(temp), dir_fd=self.dir_fd)
            raise
        self.sync_directory()

    def lchown(self, uid: int, gid: int) -> None:
        """Owner of the link itself (what it points at is never touched)."""
        os.chown(self.name, uid, gid, dir_fd=self.dir_fd, follow_symlinks=False)

    def mkdir(self, mode: int) -> None:
        os.mkdir(self.name, 0o700, dir_fd=self.dir_fd)   # no window with wider rights than asked
        self.chmod(mode, want_dir=True)

    def remove(self, recursive: bool) -> None:
        st = self.lstat()
        if st is None:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(self.name, dir_fd=self.dir_fd)
        elif recursive:
            shutil.rmtree(self.name, dir_fd=self.dir_fd)  # fd-based: never leaves the tree by a link
        else:
            os.rmdir(self.name, dir_fd=self.dir_fd)

    def sync_directory(self) -> None:
        fd = self.dir_fd if self.dir_fd is not None else os.open(self.dir_path, _DIR_FLAGS)
        try:
            os.fsync(fd)
        finally:
            if fd != self.dir_fd:
                os.close(fd)

    def inside(self) -> Place:
        """This place, a directory opened without following a link, as the
        container of the entries in it (``.at(name)``). The caller closes it."""
        return Place(_descend(self.dir_fd, self.name, self.path, False), self.path, "")

    def at(self, name: str) -> Place:
        """Another entry of the same directory; it shares (does not own) the descriptor."""
        return Place(self.dir_fd, self.dir_path, name)


def _refuse_hard_link(fd: int, path: str, single_link: bool) -> None:
    # a hard link made by someone else to a file outside the pattern would
    # let a collected mode or owner reach that file
    if single_link:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            raise PlaceError(f"{path} has {st.st_nlink} hard links: a collected file's mode "
                             "and owner are only set on a file with one")


def describe(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "a special file"


def anchor_of(pattern: str | None) -> str:
    """The trusted directory of a collect pattern: the directory above its
    fixed leading part (``/tmp/mgmtA/`` -> ``/tmp``, ``/srv/a/*.conf`` -> ``/srv``,
    ``/tmp/mgmt?/f?`` -> ``/tmp``). The pattern's own first directory is below
    it, so it too is opened without following a link, and can be created by a
    collected directory resource."""
    if not pattern or not pattern.startswith("/"):
        return "/"
    fixed = pattern
    for index, char in enumerate(pattern):
        if char in "*?[":
            fixed = pattern[:index]
            break
    return os.path.dirname(fixed.rstrip("/")) or "/"


def locate(target: str, anchor: str | None = None, make_parents: bool = False) -> Place:
    """The place of ``target`` (absolute, no ``..``, no trailing ``/``). With
    an anchor, every directory between it and the target is opened without
    following links (and, with ``make_parents``, created when missing)."""
    if anchor is None:
        directory, name = os.path.split(target)
        if make_parents:
            os.makedirs(directory, exist_ok=True)
        return Place(None, directory, name)
    base = anchor.rstrip("/") or "/"
    if base != "/" and not target.startswith(base + "/") or target == base:
        raise PlaceError(f"{target} is not below {base}/")
    parts = target[len(base):].strip("/").split("/")
    fd = os.open(base, _DIR_FLAGS)
    walked = base
    try:
        for part in parts[:-1]:
            walked = os.path.join(walked, part)
            child = _descend(fd, part, walked, make_parents)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return Place(fd, walked, parts[-1])


def _descend(fd: int | None, part: str, walked: str, make_parents: bool) -> int:
    """The directory ``part`` below ``fd``, never through a link."""
    try:
        try:
            return os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            if not make_parents:
                raise MissingParent(walked) from None
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            return os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
    except PlaceError:
        raise
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        try:  # O_NOFOLLOW|O_DIRECTORY says ENOTDIR for a link too: say which it was
            what = describe(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
        except OSError:
            what = "something else"
        if what == "a symbolic link":
            raise PlaceError(f"{walked} is a symbolic link: mgmtd does not write through it") from None
        raise PlaceError(f"{walked} is {what}, not a directory") from None
