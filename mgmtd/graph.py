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


def autoedges(resources: Iterable[Resource]) -> list[Edge]:
    """A resource that needs a path runs after every resource that provides it
    (a file after the resource managing its parent directory, at any depth)."""
    providers: dict[str, list[Key]] = {}
    listed = [(res, res.key) for res in resources if res.meta.autoedge]
    for res, key in listed:
        for path in res.autoedge_provides():
            found = providers.get(path)
            if found is None:
                providers[path] = [key]
            else:
                found.append(key)
    edges = []
    for res, key in listed:
        for path in res.autoedge_requires():
            for provider in providers.get(path, ()):
                if provider != key:
                    edges.append(Edge(provider, key, name="autoedge"))
    return edges


def build(resources: Iterable[Resource], edges: Iterable[Edge]) -> Graph:
    """Builds the graph with explicit and automatic edges. Raises CycleError.
    Explicit edges must name existing vertices (the loader checks that)."""
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
    for edge in autoedges(graph.resources.values()):
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
    """A built graph kept to be extended (``extend``), with who provides and
    who requires each autoedge token among its resources."""

    graph: Graph
    providers: dict[str, list[Key]]
    requirers: dict[str, list[Key]]


def base_of(graph: Graph) -> Base:
    providers: dict[str, list[Key]] = {}
    requirers: dict[str, list[Key]] = {}
    for key, res in graph.resources.items():
        if res.meta.autoedge:
            for token in res.autoedge_provides():
                providers.setdefault(token, []).append(key)
            for token in res.autoedge_requires():
                requirers.setdefault(token, []).append(key)
    return Base(graph, providers, requirers)


def extend(base: Base, extra: Iterable[Resource]) -> Graph | None:
    """The graph ``build`` would make of the base's resources and edges and
    ``extra``, made without going over the base's resources again: a host of
    10,000 resources that collects one changed export took 0.1 s to build
    them all anew. None when ``build`` has to say (an extra resource named
    as a base one, or a cycle, which only a new autoedge can close)."""
    src = base.graph
    graph = Graph(dict(src.resources), dict(src.requires), dict(src.dependants),
                  set(src.notifies), set(src.auto), src.name)
    added: list[tuple[Resource, Key]] = []
    for res in extra:
        key = res.key
        if key in graph.resources:
            return None
        graph.resources[key] = res
        graph.requires[key] = set()
        graph.dependants[key] = set()
        if res.meta.autoedge:
            added.append((res, key))
    new_providers: dict[str, list[Key]] = {}
    for res, key in added:
        for token in res.autoedge_provides():
            new_providers.setdefault(token, []).append(key)
    edges: list[tuple[Key, Key]] = []
    for res, key in added:   # the extras after whatever provides what they need
        for token in res.autoedge_requires():
            for provider in (*base.providers.get(token, ()), *new_providers.get(token, ())):
                if provider != key:
                    edges.append((provider, key))
    for token, providers in new_providers.items():   # base resources after the extras they need
        for requirer in base.requirers.get(token, ()):
            edges.extend((provider, requirer) for provider in providers)
    for source, target in edges:
        graph.add_edge(Edge(source, target, name="autoedge"))
        graph.auto.add((source, target))   # explicit edges never name an extra resource
    if any(_reaches(graph, key, key) for _, key in added):
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
