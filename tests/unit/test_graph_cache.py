"""The loaded graph kept for the next start (mgmtd.yamlgraph.cache)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mgmtd.yamlgraph import cache
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import load_file

GRAPH = """graph: g
resources:
  file:
  - name: dir
    path: "{d}/"
  - name: a
    path: "{d}/a"
    content: "a\\n"
edges: []
"""


def write_graph(tmp_path, text=GRAPH):
    graph = tmp_path / "g.yaml"
    graph.write_text(text.format(d=tmp_path / "out"))
    return str(graph)


def test_the_cached_graph_is_the_loaded_one(tmp_path) -> None:
    graph = write_graph(tmp_path)
    prefix = str(tmp_path / "state")
    first = cache.load_file_cached(graph, prefix)
    assert os.path.exists(os.path.join(prefix, "cache", "graph"))
    again = cache.load_file_cached(graph, prefix)
    plain = load_file(graph)
    for spec in (first, again):
        assert [(r.key, r.params, r.meta) for r in spec.resources] == \
            [(r.key, r.params, r.meta) for r in plain.resources]
        assert spec.locations == plain.locations and spec.digest == plain.digest
    built = again.build()
    assert built.requires[("file", "a")] == {("file", "dir")}   # the autoedge came along


def test_another_file_content_or_path_is_loaded_anew(tmp_path) -> None:
    graph = write_graph(tmp_path)
    prefix = str(tmp_path / "state")
    cache.load_file_cached(graph, prefix)
    data = open(graph, "rb").read()
    digest = hashlib.sha256(data).digest()
    assert cache.graph_key(graph, digest) != cache.graph_key(graph, hashlib.sha256(data + b"\n").digest())
    assert cache.graph_key(graph, digest) != cache.graph_key(graph + "2", digest)
    with open(graph, "a") as handle:
        handle.write("# changed\n")
    spec = cache.load_file_cached(graph, prefix)
    assert spec.digest == hashlib.sha256(open(graph, "rb").read()).digest()
    assert spec.digest != digest


def test_a_damaged_or_foreign_cache_is_not_used(tmp_path) -> None:
    graph = write_graph(tmp_path)
    prefix = str(tmp_path / "state")
    cache.load_file_cached(graph, prefix)
    path = os.path.join(prefix, "cache", "graph")
    key = cache.graph_key(graph, hashlib.sha256(open(graph, "rb").read()).digest())
    assert cache.read(os.path.dirname(path), key) is not None
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(path, "wb") as handle:
        handle.write(data)
    assert cache.read(os.path.dirname(path), key) is None
    cache.load_file_cached(graph, prefix)          # written again, whole
    assert cache.read(os.path.dirname(path), key) is not None
    os.chmod(path, 0o622)
    assert cache.read(os.path.dirname(path), key) is None


def test_an_unwritable_state_directory_costs_only_the_cache(tmp_path) -> None:
    graph = write_graph(tmp_path)
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    spec = cache.load_file_cached(graph, str(blocker))
    assert [r.name for r in spec.resources] == ["dir", "a"]


def test_every_example_graph_comes_back_from_the_cache_as_loaded(tmp_path) -> None:
    """Every kind's resources survive the cache: what a restart runs is what
    the YAML says (a kind whose objects cannot be pickled is loaded from YAML)."""
    examples = sorted((Path(__file__).resolve().parents[2] / "examples" / "yaml").glob("*.yaml"))
    assert examples
    for example in examples:
        try:
            plain = load_file(str(example))
        except GraphError:
            continue   # examples of what is refused
        prefix = str(tmp_path / example.stem)
        cache.load_file_cached(str(example), prefix)
        assert os.path.exists(os.path.join(prefix, "cache", "graph")), example.name
        cached = cache.load_file_cached(str(example), prefix)
        assert [(type(r), r.key, r.params, r.meta) for r in cached.resources] == \
            [(type(r), r.key, r.params, r.meta) for r in plain.resources], example.name
        assert (cached.edges, cached.collect, cached.warnings) == \
            (plain.edges, plain.collect, plain.warnings), example.name


MACHINE_KINDS = """graph: machine
resources:
  pkg:
  - name: curl
    state: installed
  svc:
  - name: cron
    state: running
    startup: enabled
  user:
  - name: alice
    state: exists
  group:
  - name: staff2
    state: exists
  hostname:
  - name: h
    hostname: h1
"""


def test_the_kinds_that_configure_a_machine_are_cached_too(tmp_path) -> None:
    graph = tmp_path / "m.yaml"
    graph.write_text(MACHINE_KINDS)
    prefix = str(tmp_path / "state")
    plain = load_file(str(graph))
    cache.load_file_cached(str(graph), prefix)
    assert os.path.exists(os.path.join(prefix, "cache", "graph"))
    cached = cache.load_file_cached(str(graph), prefix)
    assert [(type(r), r.key, r.params, r.meta) for r in cached.resources] == \
        [(type(r), r.key, r.params, r.meta) for r in plain.resources]
