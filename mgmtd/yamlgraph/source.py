"""Reading a graph file safely: only a regular file, without waiting on a
FIFO, at most MAX_BYTES."""

from __future__ import annotations

import os
import stat

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


def read_graph_bytes(path: str) -> bytes:
    """The graph file's bytes, at most MAX_BYTES. Only a regular file is read:
    opening a FIFO would wait for a writer (forever), a device could stream
    without end. The open itself does not wait (O_NONBLOCK) and the type is
    taken from the opened file, so a file swapped in meanwhile cannot slip by."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise GraphError(Location(path), _open_failure(path, err)) from None
    try:
        st = os.fstat(fd)
        mode = st.st_mode
        if not stat.S_ISREG(mode):
            raise GraphError(Location(path), f"not a regular file ({describe(mode)})")
        chunks: list[bytes] = []
        size = 0
        # sized to the file (a read of n bytes allocates n first), then in steps
        step = min(st.st_size + 1, MAX_BYTES + 1)
        while size <= MAX_BYTES:
            chunk = os.read(fd, min(step, MAX_BYTES + 1 - size))
            step = 1 << 20
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise GraphError(Location(path), f"cannot read graph: {err.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise GraphError(Location(path), f"graph is larger than {MAX_BYTES // (1024 * 1024)} MiB")
    return b"".join(chunks)
