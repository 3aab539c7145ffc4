"""Reading a graph file safely: only a regular file, without waiting on a
FIFO, at most MAX_BYTES."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator

from mgmtd.resources.fsplace import describe
from mgmtd.yamlgraph.errors import GraphError, Location

MAX_BYTES = 16 * 1024 * 1024


def _open_failure(path: str, err: OSError) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        return f"not a regular file ({describe(mode)})"   # a socket cannot be opened (ENXIO)
    return f"cannot read graph: {err.strerror}"


def _chunks(path: str, first: int | None) -> Iterator[bytes]:
    """The graph file's bytes in pieces: ``first`` bytes, or the file's size
    when None (a read of n bytes allocates n first), then 1 MiB at a time.
    Only a regular file is read: opening a FIFO would wait for a writer
    (forever), a device could stream without end. The open itself does not
    wait (O_NONBLOCK) and the type is taken from the opened file, so a file
    swapped in meanwhile cannot slip by. At most MAX_BYTES."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise GraphError(Location(path), _open_failure(path, err)) from None
    try:
        st = os.fstat(fd)
        mode = st.st_mode
        if not stat.S_ISREG(mode):
            raise GraphError(Location(path), f"not a regular file ({describe(mode)})")
        size = 0
        step = min(st.st_size + 1 if first is None else first, MAX_BYTES + 1)
        while size <= MAX_BYTES:
            chunk = os.read(fd, min(step, MAX_BYTES + 1 - size))
            step = 1 << 20
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_BYTES:
                raise GraphError(Location(path), f"graph is larger than {MAX_BYTES // (1024 * 1024)} MiB")
            yield chunk
    except OSError as err:
        raise GraphError(Location(path), f"cannot read graph: {err.strerror}") from None
    finally:
        os.close(fd)


def read_graph_bytes(path: str) -> bytes:
    """The graph file's bytes, at most MAX_BYTES (only a regular file, see _chunks)."""
    return b"".join(_chunks(path, None))


def graph_digest(path: str) -> bytes:
    """The SHA-256 of what ``read_graph_bytes`` would return, read 1 MiB at a
    time: telling an edit from a touch never holds a big graph's bytes."""
    digest = hashlib.sha256()
    for chunk in _chunks(path, 1 << 20):
        digest.update(chunk)
    return digest.digest()
