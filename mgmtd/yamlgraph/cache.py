"""The loaded graph, kept in the engine's state directory for the next start.

Loading 10,000 resources from YAML takes about 0.4 s of CPU; the same graph
unpickled takes 0.04 s. A start with an unchanged graph file (a restart, a
reboot, ``mgmtd engine`` run from cron) takes the loaded graph from
``{prefix}/cache/graph``.

What makes it the same graph: the cache is used only when its key equals
the key of this load, a digest of everything the loaded graph depends on:
the file's bytes and path (locations name it), mgmtd's code and PyYAML's
version (a new release may read a field differently) and the user's home
(svc's session autoedges). Anything else, and the file is loaded again.
A reload writes the cache only for a graph of WORTH_CACHING_ON_RELOAD
resources or more (a start always writes it).

Why it can be trusted: the cache is pickled, and unpickling runs code, so
it is read only from a directory and a file owned by this user and writable
by no one else (as ``{prefix}`` is: a writer there can change what mgmtd does
anyway). A torn or damaged file fails its digest and the graph is loaded again
from YAML (mgmtd.statefile)."""

from __future__ import annotations

import functools
import gc
import hashlib
import os
import pickle
import pwd
import sys
from pathlib import Path

import yaml

from mgmtd import log, statefile
from mgmtd.yamlgraph.loader import GraphSpec, check_utf8, load_text
from mgmtd.yamlgraph.source import read_graph_bytes

LOG = log.get("engine.cache")

CACHE_DIR = "cache"
GRAPH_FILE = "graph"
# a reload writes the cache only for a graph this big: a smaller one parses at
# the next start in a few ms (100 file resources: 4 ms), less than the cache's
# write (a pickle and an fsync, 0.4-0.7 ms) costs at every reload, and that
# write would compete for the disk and the CPU with the exports it follows
WORTH_CACHING_ON_RELOAD = 100
MAGIC = b"mgmtd graph cache 2\n"
DIGEST = 32


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> bytes:
    """mgmtd's code as it is on disk (each module's path, size and mtime),
    Python's and PyYAML's versions: once per process."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.blake2b(digest_size=DIGEST)
    digest.update(f"{sys.version}\0{yaml.__version__}\0{package}\0".encode())
    for root, dirs, files in os.walk(package):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(root, name))
                digest.update(f"{root}/{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.digest()


def graph_key(path: str, file_digest: bytes) -> bytes:
    """What the loaded graph depends on (see the module's docstring), the
    file's bytes by their SHA-256 (``GraphSpec.digest``)."""
    digest = hashlib.blake2b(code_fingerprint(), digest_size=DIGEST)
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir   # as svc's autoedges find it
    except KeyError:
        home = ""
    digest.update(f"{os.path.abspath(path)}\0{home}\0".encode())
    digest.update(file_digest)
    return digest.digest()


def read(directory: str, key: bytes):
    """The object cached under ``key``, or None (no cache, another key, a
    damaged file, or a file someone else could have written). The layout:
    MAGIC, the key, the pickle, sealed (mgmtd.statefile)."""
    path = os.path.join(directory, GRAPH_FILE)
    data = statefile.read_private(path)
    if data is None or not data.startswith(MAGIC + key):
        return None
    body = statefile.unseal(data)
    if body is None:
        LOG.info("%s is damaged: loading the graph from its file", path)
        return None
    collecting = gc.isenabled()
    gc.disable()   # many objects, no garbage: the cyclic collector would only walk them
    try:
        return pickle.loads(body[len(MAGIC) + len(key):])
    except Exception as err:   # e.g. classes changed under a file of the same key
        LOG.info("%s cannot be read (%s): loading the graph from its file", path, err)
        return None
    finally:
        if collecting:
            gc.enable()


def write(directory: str, key: bytes, value) -> None:
    """Caches ``value`` under ``key``, atomically; failures are logged, never raised."""
    try:
        with statefile.replacing(os.path.join(directory, GRAPH_FILE)) as out:
            out.write(MAGIC + key)
            pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)   # streamed, not held
    except OSError as err:
        LOG.info("cannot cache the loaded graph in %s: %s", directory, err.strerror or err)
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as err:
        LOG.debug("graph not cached: %s", err)   # a value that cannot be pickled: nothing lost


def load_file_cached(path: str, prefix: str) -> GraphSpec:
    """``load_file``, through the cache in ``{prefix}/cache/``."""
    data = read_graph_bytes(path)
    directory = os.path.join(prefix, CACHE_DIR)
    file_digest = hashlib.sha256(data).digest()   # once: the engine keeps it as spec.digest
    key = graph_key(path, file_digest)
    spec = read(directory, key)
    if not isinstance(spec, GraphSpec):
        check_utf8(data, path)
        spec = load_text(data, path)
        write(directory, key, spec)   # as loaded: before the engine lends it anything
    spec.digest = file_digest
    return spec
