"""The resource graph: vertices by (kind, name), explicit edges, autoedges,
and a topological order (a cycle is an error that names it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mgmtd.resources.base import Resource

Key = tuple[str, str]


def key_str(key: Key) -> str:
    return f"{key[0]}[{key[1]}]"


@dataclass(frozen=True, slots=True)
class Edge:
    source: Key           # runs first
    target: Key           # runs after source is in state
    notify: bool = False  # a change of source refreshes target
    name: str = ""


class CycleError(ValueError):
    def __init__(self, cycle: list[Key]) -> None:
        self.cycle = cycle
        path = " -> ".join(key_str(k) for k in [*cycle, cycle[0]])
        super().__init__(f"dependency cycle: {path}")


@dataclass
class Graph:
    resources: dict[Key, Resource] = field(default_factory=dict)
    # key -> what it waits for / who waits for it; once built, equal sets are one
    # frozenset (10,000 files in one directory: one {dir} and one empty set)
    requires: dict[Key, set[Key] | frozenset[Key]] = field(default_factory=dict)
    dependants: dict[Key, set[Key] | frozenset[Key]] = field(default_factory=dict)
    notifies: set[tuple[Key, Key]] = field(default_factory=set)
    auto: set[tuple[Key, Key]] = field(default_factory=set)        # autoedges no explicit edge repeats
    name: str = ""                                                  # the graph file's ``graph:``
    collected: dict[Key, tuple[str, ...]] = field(default_factory=dict)  # collected -> exporting hosts

    def __len__(self) -> int:
        return len(self.resources)

    def add_edge(self, edge: Edge) -> None:
        self.requires[edge.target] = _mutable(self.requires[edge.target])
        self.requires[edge.target].add(edge.source)
        self.dependants[edge.source] = _mutable(self.dependants[edge.source])
        self.dependants[edge.source].add(edge.target)
        if edge.notify:
            self.notifies.add((edge.source, edge.target))

    def order(self) -> list[Key]:
        """A topological order; raises CycleError naming one cycle."""
        pending = {k: len(v) for k, v in self.requires.items()}
        ready = sorted(k for k, n in pending.items() if n == 0)
        order: list[Key] = []
        while ready:
            key = ready.pop()
            order.append(key)
            for dependant in self.dependants[key]:
                pending[dependant] -= 1
                if pending[dependant] == 0:
                    ready.append(dependant)
        if len(order) != len(self.resources):
            raise CycleError(self._find_cycle({k for k, n in pending.items() if n > 0}))
        return order

    def _find_cycle(self, stuck: set[Key]) -> list[Key]:
        # every stuck vertex has a stuck predecessor: walk back until one repeats
        start = min(stuck)
        seen: dict[Key, int] = {}
        walk: list[Key] = []
        key = start
        while key not in seen:
            seen[key] = len(walk)
            walk.append(key)
            key = min(k for k in self.requires[key] if k in stuck)
        cycle = walk[seen[key]:]
        cycle.reverse()  # walked against the edges
        return cycle


Tokens = dict[str, list[Key]]   # autoedge token -> the resources that provide (or require) it


def autoedge_index(resources: Iterable[Resource]) -> tuple[Tokens, Tokens]:
    """Who provides and who requires each autoedge token, among the resources
    with ``meta.autoedge``."""
    providers: Tokens = {}
    requirers: Tokens = {}
    for res in resources:
        if res.meta.autoedge:
            key = res.key
            for token in res.autoedge_provides():
                providers.setdefault(token, []).append(key)
            for token in res.autoedge_requires():
                requirers.setdefault(token, []).append(key)
    return providers, requirers


def autoedges(resources: Iterable[Resource], index: tuple[Tokens, Tokens] | None = None) -> list[Edge]:
    """A resource that needs a path runs after every resource that provides it
    (a file after the resource managing its parent directory, at any depth)."""
    providers, requirers = index if index is not None else autoedge_index(resources)
    return [Edge(provider, requirer, name="autoedge")
            for token, requiring in requirers.items() for requirer in requiring
            for provider in providers.get(token, ()) if provider != requirer]


def build(resources: Iterable[Resource], edges: Iterable[Edge],
          index: tuple[Tokens, Tokens] | None = None) -> Graph:
    """Builds the graph with explicit and automatic edges. Raises CycleError.
    Explicit edges must name existing vertices (the loader checks that).
    ``index``: the resources' ``autoedge_index``, when the caller keeps it."""
    graph = Graph()
    for res in resources:
        key = res.key
        graph.resources[key] = res
        graph.requires[key] = set()
        graph.dependants[key] = set()
    explicit = list(edges)
    for edge in explicit:
        graph.add_edge(edge)
    explicit_pairs = {(edge.source, edge.target) for edge in explicit}
    for edge in autoedges(graph.resources.values(), index):
        graph.add_edge(edge)
        if (edge.source, edge.target) not in explicit_pairs:
            graph.auto.add((edge.source, edge.target))  # drawn apart (--graphviz, mgmtctl graph)
    graph.order()
    for table in (graph.requires, graph.dependants):
        shared: dict[frozenset[Key], frozenset[Key]] = {}
        for key, keys in table.items():
            frozen = frozenset(keys)
            table[key] = shared.setdefault(frozen, frozen)
    return graph


def _mutable(keys: set[Key] | frozenset[Key]) -> set[Key]:
    return keys if isinstance(keys, set) else set(keys)


@dataclass
class Base:
    """A built graph kept to be extended (``extend``), with its autoedge index."""

    graph: Graph
    providers: Tokens
    requirers: Tokens


def build_base(resources: list[Resource], edges: Iterable[Edge]) -> Base:
    """``build``, and the index it took its autoedges from, kept."""
    index = autoedge_index(resources)
    return Base(build(resources, edges, index), *index)


def extend(base: Base, extra: list[Resource]) -> Graph | None:
    """The graph ``build`` would make of the base's resources and edges and
    ``extra``, made without going over the base's resources again: a host of
    10,000 resources that collects one changed export took 0.1 s to build
    them all anew. None when ``build`` has to say (an extra resource named
    as a base one, or a cycle, which only a new autoedge can close)."""
    src = base.graph
    graph = Graph(dict(src.resources), dict(src.requires), dict(src.dependants),
                  set(src.notifies), set(src.auto), src.name)
    for res in extra:
        key = res.key
        if key in graph.resources:
            return None
        graph.resources[key] = res
        graph.requires[key] = set()
        graph.dependants[key] = set()
    providers, requirers = autoedge_index(extra)
    # the extras after whatever provides what they need, base resources after the extras they need
    edges = [(provider, requirer) for token, requiring in requirers.items() for requirer in requiring
             for provider in (*base.providers.get(token, ()), *providers.get(token, ()))
             if provider != requirer]
    edges += [(provider, requirer) for token, providing in providers.items()
              for requirer in base.requirers.get(token, ()) for provider in providing]
    for source, target in edges:
        graph.add_edge(Edge(source, target, name="autoedge"))
        graph.auto.add((source, target))   # explicit edges never name an extra resource
    if any(_reaches(graph, res.key, res.key) for res in extra):
        return None
    return graph


def _reaches(graph: Graph, start: Key, goal: Key) -> bool:
    """Whether ``goal`` runs after ``start`` (through its dependants)."""
    seen: set[Key] = set()
    todo = list(graph.dependants[start])
    while todo:
        key = todo.pop()
        if key == goal:
            return True
        if key not in seen:
            seen.add(key)
            todo.extend(graph.dependants[key])
    return False
