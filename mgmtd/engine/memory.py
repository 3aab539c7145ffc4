"""The engine's share of glibc's malloc: fewer arenas, and the memory a
graph's load freed given back. Both measured under ``mgmtd run`` with 10,000
files (bench/engine.py ``node_memory``, issue 19): each takes 3-5 MiB off the
engine's peak RSS. Where the C library is not glibc (musl, macOS) they do
nothing: they are savings, never needed for correctness."""

from __future__ import annotations

import ctypes

from mgmtd import log

LOG = log.get("engine")

M_ARENA_MAX = -8    # glibc's malloc.h: mallopt's parameter for the number of arenas
ARENAS = 1          # see limit_arenas

def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc, by its soname (ctypes.util.find_library
    would run ldconfig); looked up at each call: the engine calls these once
    per load, and dlopen of a loaded library is a lookup."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas() -> bool:
    """One malloc arena for all threads, set before the engine starts any.
    glibc gives every thread that allocates while another holds the lock an
    arena of its own, up to 8 per core; the engine runs 8 workers, the
    watchers, grpc's threads: each arena keeps what its thread freed, pages
    no other thread reuses. The threads mostly take turns (the GIL), and
    each has its own small cache (tcache) before the arena's lock: measured
    at 10,000 files, 2 arenas took 3-4 MiB off the peak, 1 another 1.6 MiB,
    with no slower converge. Set here, not as MALLOC_ARENA_MAX in the
    environment: the commands the engine runs inherit no tuning of ours, and
    ``mgmtd engine`` alone gets it too."""
    libc = _glibc()
    if libc is None:
        return False
    done = bool(libc.mallopt(M_ARENA_MAX, ARENAS))
    if not done:
        LOG.debug("mallopt(M_ARENA_MAX) refused: malloc arenas left as they are")
    return done


def give_back() -> None:
    """Returns freed heap pages to the system (``malloc_trim(0)``): after a
    load the parser's temporaries are free but still resident, and the peak
    RSS counts them; what the running graph needs later is taken again."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
