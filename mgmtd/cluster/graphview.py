"""The running graph as people look at it: a view (resources with their state
and, when collected, their exporters; edges by kind), drawn as Graphviz DOT
(``--graphviz``, ``mgmtctl graph``) and stored as compact JSON in etcd
(``{ns}/graph/{host}``, the one place that writes and reads that value).

Pure: the engine hands in the graph and the states, the callers do the I/O.
Output is sorted, so the same graph gives the same bytes (an unchanged graph
is never rewritten)."""

from __future__ import annotations

import bisect
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]

from mgmtd.graph import Graph, Key, key_str

# mgmt's pgraph/graphviz.go: the programs --graphviz-filter may name, dot by default
FILTERS = ("dot", "neato", "twopi", "circo", "fdp", "sfdp", "patchwork", "osage")
DEFAULT_FILTER = "dot"

# what a resource is doing, as drawn: the scheduler's states, plus retrying and noop
OK, PENDING, RETRYING, FAILED, BLOCKED, WOULD_CHANGE = (
    "ok", "pending", "retrying", "failed", "blocked", "would-change")
STATE_COLOURS = {
    OK: "palegreen",          # in state at its last check
    PENDING: "lightyellow",   # not yet in state: waiting for its dependencies, or being applied
    RETRYING: "orange",       # its last run failed; meta retry runs it again
    FAILED: "tomato",         # failed for good (retries used up): its dependants are blocked
    BLOCKED: "lightgray",     # waits on a failed resource
    WOULD_CHANGE: "lightblue",  # --noop or meta noop: out of state, left alone
}
EXPLICIT, AUTOEDGE, NOTIFY = "explicit", "autoedge", "notify"
EDGE_STYLES = {
    EXPLICIT: 'style="solid"',
    AUTOEDGE: 'style="dashed", color="gray40"',
    NOTIFY: 'style="bold", color="blue"',
}

WIRE_VERSION = 1
COMPRESS_ABOVE = 256 * 1024   # bytes of JSON: etcd refuses requests over 1.5 MiB by default


def shown_state(state: str, retrying: bool, would_change: bool) -> str:
    """The drawn state of a resource from the scheduler's (pending, ok, failed,
    blocked), whether a retry is due and whether noop left it out of state."""
    if state in (FAILED, BLOCKED):
        return state
    if retrying:
        return RETRYING
    if state == OK:
        return WOULD_CHANGE if would_change else OK
    return PENDING


@dataclass(frozen=True, slots=True)   # one per resource in each view drawn: small
class NodeView:
    kind: str
    name: str
    state: str
    hosts: tuple[str, ...] = ()   # collected: the hosts that export it (sorted); local: ()

    @property
    def key(self) -> Key:
        return (self.kind, self.name)


@dataclass(frozen=True, slots=True)
class EdgeView:
    source: Key
    target: Key
    kind: str                     # explicit | autoedge | notify


@dataclass(frozen=True)
class GraphView:
    graph: str                    # the graph file's name (``graph:``)
    host: str                     # whose graph it is
    nodes: tuple[NodeView, ...]   # sorted by key
    edges: tuple[EdgeView, ...]   # sorted by (source, target)


def edge_kind(graph: Graph, source: Key, target: Key) -> str:
    """A notify edge is drawn as such even when written explicitly; an autoedge
    only when no explicit edge joins the same two resources."""
    if (source, target) in graph.notifies:
        return NOTIFY
    if (source, target) in graph.auto:
        return AUTOEDGE
    return EXPLICIT


def view_of(graph: Graph, states: Mapping[Key, str], host: str) -> GraphView:
    """The view of a running graph; a resource without a state yet is pending."""
    nodes = tuple(NodeView(kind, name, states.get((kind, name), PENDING),
                           tuple(sorted(graph.collected.get((kind, name), ()))))
                  for kind, name in sorted(graph.resources))
    edges = tuple(EdgeView(source, target, edge_kind(graph, source, target))
                  for source in sorted(graph.dependants) for target in sorted(graph.dependants[source]))
    return GraphView(graph.name, host, nodes, edges)


# --- DOT ------------------------------------------------------------------------------
def quote(text: str) -> str:
    """A DOT double-quoted string for any text. Backslash, quote and line
    breaks are escaped, so a name can never end the string early, and the
    escapes graphviz reads in labels give the text back (``\\\\`` is a
    backslash, ``\\n`` a line break; no ``\\N``/``\\G`` expansion can arise)."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + out.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n") + '"'


def node_label(node: NodeView) -> str:
    label = key_str(node.key)
    if node.hosts:
        label += "\ncollected from " + ", ".join(node.hosts)
    return label


def to_dot(view: GraphView) -> str:
    """The view as a DOT digraph: one statement per line, nodes then edges,
    sorted. Fill colour by state (STATE_COLOURS), edge style by kind
    (EDGE_STYLES), collected resources double-framed and labelled with
    their exporters."""
    lines = [
        f"// mgmtd: graph {view.graph} on {view.host}".replace("\n", " ").replace("\r", " "),
        "// fill: " + ", ".join(f"{colour} {state}" for state, colour in STATE_COLOURS.items()),
        "// edges: solid explicit, dashed autoedge, bold blue notify; double frame: collected",
        f"digraph {quote(view.graph)} {{",
        f"\tlabel={quote(f'graph {view.graph} on {view.host}')};",
        "\tnewrank=true;",
        '\tnode [shape="box", style="rounded,filled"];',
    ]
    for node in view.nodes:
        attrs = [f"label={quote(node_label(node))}",
                 f"fillcolor={quote(STATE_COLOURS.get(node.state, 'white'))}",
                 f"tooltip={quote(node.state)}"]
        if node.hosts:
            attrs.append('peripheries="2"')
        lines.append(f"\t{quote(key_str(node.key))} [{', '.join(attrs)}];")
    for edge in view.edges:
        lines.append(f"\t{quote(key_str(edge.source))} -> {quote(key_str(edge.target))} "
                     f"[{EDGE_STYLES[edge.kind]}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- the value of {ns}/graph/{host} -----------------------------------------------------
# Compact JSON, keys sorted: {"edges":[[SOURCE,TARGET,KIND],...],"graph":G,"host":H,
# "nodes":[[KIND,NAME,STATE,[HOST,...]],...],"version":1}, nodes sorted by key, edges by
# node index; zlib-compressed when large, so that a graph of many thousand resources stays
# well under etcd's request limit.
_BATCH = 512   # items joined into one piece of text: a few KiB at a time, never the whole


class _Wire:
    """The value written piece by piece: plain while it is small, then through
    one zlib stream, so a big graph never exists as one JSON text (nor as lists
    of lists) next to its compressed form: the engine's peak memory is the
    graph, not the graph and two drawings of it."""

    def __init__(self) -> None:
        self.plain: list[bytes] | None = []
        self.size = 0
        self.zipper = zlib.compressobj(6)
        self.out: list[bytes] = []

    def write(self, text: str) -> None:
        data = text.encode()
        if self.plain is not None:
            self.plain.append(data)
            self.size += len(data)
            if self.size <= COMPRESS_ABOVE:
                return
            data, self.plain = b"".join(self.plain), None
        self.out.append(self.zipper.compress(data))

    def value(self) -> bytes:
        if self.plain is not None:
            return b"".join(self.plain)
        self.out.append(self.zipper.flush())
        return b"".join(self.out)


def _write_list(wire: _Wire, items) -> None:
    """A JSON list of already-encoded items, in batches."""
    wire.write("[")
    batch: list[str] = []
    first = True
    for item in items:
        batch.append(item)
        if len(batch) == _BATCH:
            wire.write(("" if first else ",") + ",".join(batch))
            batch, first = [], False
    if batch:
        wire.write(("" if first else ",") + ",".join(batch))
    wire.write("]")


def _wire(graph: str, host: str, nodes, edges) -> bytes:
    """``nodes``: (kind, name, state, hosts) sorted by key; ``edges``:
    (source index, target index, kind)."""
    q = encode_basestring_ascii   # as json.dumps writes a string
    wire = _Wire()
    wire.write('{"edges":')
    _write_list(wire, (f"[{s},{t},{q(kind)}]" for s, t, kind in edges))
    wire.write(f',"graph":{q(graph)},"host":{q(host)},"nodes":')
    _write_list(wire, (f"[{q(kind)},{q(name)},{q(state)},[{','.join(map(q, hosts))}]]"
                       for kind, name, state, hosts in nodes))
    wire.write(f',"version":{WIRE_VERSION}}}')
    return wire.value()


def encode(view: GraphView) -> bytes:
    """The value of a view (``encode_graph`` gives the same bytes straight from the graph)."""
    index = {node.key: i for i, node in enumerate(view.nodes)}
    return _wire(view.graph, view.host, ((n.kind, n.name, n.state, n.hosts) for n in view.nodes),
                 ((index[e.source], index[e.target], e.kind) for e in view.edges))


def encode_graph(graph: Graph, states: Mapping[Key, str], host: str) -> bytes:
    """``encode(view_of(graph, states, host))`` without the view: the engine
    publishes a graph of 10,000 resources about once a second while it
    converges, and the view's objects would cost MiBs at each drawing. Nodes
    are found by bisection in the sorted keys (no index dict either)."""
    keys = sorted(graph.resources)
    collected = graph.collected

    def position(key: Key) -> int:
        i = bisect.bisect_left(keys, key)
        if i == len(keys) or keys[i] != key:
            raise KeyError(key)   # as encode's index: an edge to a node the graph lacks
        return i

    nodes = ((kind, name, states.get((kind, name), PENDING), sorted(collected.get((kind, name), ())))
             for kind, name in keys)
    edges = ((position(source), position(target), edge_kind(graph, source, target))
             for source in sorted(graph.dependants) for target in sorted(graph.dependants[source]))
    return _wire(graph.name, host, nodes, edges)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def decode(raw: bytes | None) -> GraphView | None:
    """A view from the key's value; None when missing or not one (another
    version, bad JSON, wrong shapes, edges to nodes that are not there):
    whatever is in etcd is untrusted, never a crash."""
    if not raw:
        return None
    try:
        text = raw if raw[:1] == b"{" else zlib.decompressobj().decompress(raw, 64 * 1024 * 1024)
        value = json.loads(text)
    except (zlib.error, ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or value.get("version") != WIRE_VERSION:
        return None
    graph, host, nodes, edges = (value.get(k) for k in ("graph", "host", "nodes", "edges"))
    if not isinstance(graph, str) or not isinstance(host, str) or not isinstance(nodes, list) \
            or not isinstance(edges, list):
        return None
    views = []
    for item in nodes:
        if not (isinstance(item, list) and len(item) == 4 and _strings(item[:3]) and _strings(item[3])):
            return None
        views.append(NodeView(item[0], item[1], item[2], tuple(item[3])))
    edge_views = []
    for item in edges:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], str)
                and item[2] in EDGE_STYLES and all(type(i) is int and 0 <= i < len(views) for i in item[:2])):
            return None
        edge_views.append(EdgeView(views[item[0]].key, views[item[1]].key, item[2]))
    return GraphView(graph, host, tuple(views), tuple(edge_views))
