"""What mgmtd's own files of state kept between runs share (the engine's graph
cache and check memos, in ``{prefix}/cache/``).

* Read only when the file and its directory belong to this user and no one
  else may write them: what they hold decides what mgmtd believes (a forged
  check memo would make it trust a file it must read; the graph cache is
  unpickled, which runs code).
* Written whole or not at all: a temporary file beside it, renamed over it.
  No fsync: a crash may leave a torn file, which the digest at its end tells
  apart (of all the bytes before it), and losing one costs a slow start only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from mgmtd import log

LOG = log.get("engine")

DIGEST = 32


def private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read_private(path: str) -> bytes | None:
    """The file's bytes; None when it is missing or unreadable, or when it or
    its directory could have been written by someone else (said once here)."""
    try:
        if not private(os.stat(os.path.dirname(path) or ".")):
            return None
        with open(path, "rb") as handle:
            if not private(os.fstat(handle.fileno())):
                LOG.warning("%s: not owned by this user or writable by others: not used", path)
                return None
            return handle.read()
    except OSError:
        return None


def _digest(data) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST).digest()


def unseal(data: bytes) -> memoryview | None:
    """What was written through ``replacing``; None when ``data`` is not a
    whole sealed file."""
    if len(data) < DIGEST:
        return None
    body = memoryview(data)[:-DIGEST]
    return body if _digest(body) == data[-DIGEST:] else None


class Sealing:
    """A file whose writes are digested as they go (streamed: no copy of the
    whole in memory); ``seal()`` ends it with the digest of all before."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.blake2b(digest_size=DIGEST)

    def write(self, data) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def seal(self) -> None:
        self.handle.write(self.digest.digest())


@contextlib.contextmanager
def replacing(path: str) -> Iterator[Sealing]:
    """Writes a new sealed ``path``: what the block writes, then the digest, in a
    temporary file renamed over ``path`` when the block ends. The directory is
    made (0700) when missing; on any failure the temporary file goes."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 16) as handle:
            sealing = Sealing(handle)
            yield sealing
            sealing.seal()
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
