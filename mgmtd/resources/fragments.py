"""A ``file`` built from ``fragments`` (mgmt's field): the concatenation of a
list of local files, where a path ending in ``/`` stands for the files of that
directory (one level deep, by name, as Go's ``os.ReadDir`` lists them).

Validation, the content, the paths to watch and the autoedge tokens are pure
functions of the list (and of the file system, for the content)."""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from mgmtd.resources.base import FieldError, ResourceError, shown

# a file resource provides this token for every file it manages in a directory
# (``entry:/dir``): a fragment directory's users run after those files are written
ENTRY_TOKEN = "entry:"

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def check_fragment_fields(fragments: Any, target: str, *, content: str | None, source: str | None,
                          state: str, is_dir: bool, purge: bool) -> None:
    """mgmt's rules for ``fragments`` (file.go Validate): one of content,
    source and fragments; not for a directory, an absent file or with purge."""
    check_fragments(fragments, target)
    if content is not None or source is not None:
        raise FieldError("fragments", "give one of content, source and fragments")
    if is_dir:
        raise FieldError("fragments", f"{target} is a directory (trailing '/'): it has no fragments")
    if state == "absent":
        raise FieldError("fragments", "state: absent cannot have fragments (as in mgmt)")
    if purge:
        raise FieldError("purge", "purge cannot be combined with fragments")


def check_fragments(fragments: Any, target: str) -> list[str]:
    """The list as given, or ``FieldError``: absolute paths without ``..``,
    and the file itself neither one of them nor under a fragment directory
    (it would read its own output: mgmt's "inside a frag")."""
    if not isinstance(fragments, list) or not fragments:
        raise FieldError("fragments", "fragments must be a non-empty list of absolute paths")
    for frag in fragments:
        if not isinstance(frag, str) or not os.path.isabs(frag):
            raise FieldError("fragments", f"a fragment must be an absolute path, not {shown(frag)}")
        if ".." in frag.split("/") or "\0" in frag:
            raise FieldError("fragments", f"a fragment must not contain '..': {shown(frag)}")
        if _has_path_prefix(target, frag):
            raise FieldError("fragments", f"{target} is inside its own fragment {shown(frag)}")
    return fragments


def _has_path_prefix(path: str, prefix: str) -> bool:
    path, prefix = path.rstrip("/"), prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or prefix == ""


def read_fragments(fragments: list[str]) -> bytes:
    """The content: each file in turn; for a directory, its entries sorted by
    name (bytes), skipping subdirectories (not followed into). Anything else
    that is not a regular file (a FIFO, a device) is an error, never read."""
    parts = []
    for frag in fragments:
        if not frag.endswith("/"):
            parts.append(_read(frag, "fragment"))
            continue
        directory = frag.rstrip("/") or "/"
        try:
            entries = list(os.scandir(directory))
        except OSError as err:
            raise ResourceError(f"cannot read fragment directory {frag}: {err.strerror}") from None
        for entry in sorted(entries, key=lambda e: os.fsencode(e.name)):
            try:
                if entry.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            try:
                parts.append(_read(entry.path, "fragment"))
            except _Vanished:
                continue  # removed while we listed: its removal is an event of its own
    return b"".join(parts)


class _Vanished(ResourceError):
    pass


def _read(path: str, what: str) -> bytes:
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise _Vanished(f"{what} {path} does not exist") from None
    except OSError as err:
        raise ResourceError(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ResourceError(f"{what} {path} is {kind}"
                                + (" (a fragment directory ends with '/')" if stat.S_ISDIR(st.st_mode) else ""))
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except OSError as err:
                if err.errno == errno.EINTR:
                    continue
                raise ResourceError(f"cannot read {what} {path}: {err.strerror}") from None
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def fragment_watch_paths(fragments: list[str]) -> list[str]:
    """A file is watched as itself; a directory keeps its trailing ``/``,
    which asks the watcher for the directory and every entry in it."""
    return list(fragments)


def fragment_requires(fragments: list[str]) -> list[str]:
    """Autoedge tokens: the resource managing each fragment file, each
    fragment directory, and every file managed inside a fragment directory."""
    tokens = []
    for frag in fragments:
        if frag.endswith("/"):
            directory = frag.rstrip("/") or "/"
            tokens += [directory, ENTRY_TOKEN + directory]
        else:
            tokens.append(f"file:{frag}")
    return tokens
