"""A strict parser of the DOT that mgmtd writes (--graphviz, mgmtctl graph),
for the tests: it reads IDs as Graphviz's own scanner does (in a quoted
string only ``\\"`` is an escape) and labels as Graphviz draws them (``\\\\``
a backslash, ``\\n`` a line break), and refuses anything outside the subset
mgmtd emits: a stray token, a missing ';', an edge to an undeclared node, a
node declared twice."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r'(?P<space>\s+)|(?P<comment>//[^\n]*)|(?P<string>"(?:[^"\\\n]|\\.)*")|'
                    r'(?P<arrow>->)|(?P<punct>[{}\[\];,=])|(?P<word>[A-Za-z_][A-Za-z_0-9]*|-?[0-9]+)')


class DotError(ValueError):
    pass


@dataclass
class Dot:
    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    node_defaults: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    edges: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def label(self, node: str) -> str:
        return draw(self.nodes[node].get("label", node))

    def labelled(self) -> dict[str, dict[str, str]]:
        """Nodes by the first line of their drawn label (``kind[name]``)."""
        out = {}
        for node, attrs in self.nodes.items():
            first = self.label(node).split("\n")[0]
            if first in out:
                raise DotError(f"two nodes drawn as {first!r}")
            out[first] = attrs
        return out

    def labelled_edges(self) -> dict[tuple[str, str], dict[str, str]]:
        return {(self.label(a).split("\n")[0], self.label(b).split("\n")[0]): attrs
                for a, b, attrs in self.edges}


def tokens(text: str) -> list[tuple[str, str]]:
    out, at = [], 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise DotError(f"unexpected {text[at:at + 20]!r} at offset {at}")
        at = match.end()
        kind = match.lastgroup
        if kind in ("space", "comment"):
            continue
        value = match.group()
        if kind == "string":
            # Graphviz's scanner: \" is a quote, every other backslash stays
            value = value[1:-1].replace('\\"', '"')
            kind = "id"
        elif kind == "word":
            kind = "id"
        out.append((kind, value))
    return out


def draw(label: str) -> str:
    """A label as Graphviz draws it: \\\\ a backslash, \\n \\l \\r line breaks,
    another \\x the x."""
    out, chars = [], iter(label)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        nxt = next(chars, "")
        out.append("\n" if nxt in ("n", "l", "r") else nxt)
    return "".join(out)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = tokens(text)
        self.at = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        i = self.at + offset
        return self.toks[i] if i < len(self.toks) else ("eof", "")

    def take(self, kind: str, value: str | None = None) -> str:
        got = self.peek()
        if got[0] != kind or (value is not None and got[1] != value):
            raise DotError(f"expected {value or kind}, got {got[1] or got[0]!r} (token {self.at})")
        self.at += 1
        return got[1]

    def attrs(self) -> dict[str, str]:
        out: dict[str, str] = {}
        self.take("punct", "[")
        while self.peek() != ("punct", "]"):
            key = self.take("id")
            self.take("punct", "=")
            if key in out:
                raise DotError(f"attribute {key} twice")
            out[key] = self.take("id")
            if self.peek() == ("punct", ","):
                self.take("punct", ",")
        self.take("punct", "]")
        return out

    def parse(self) -> Dot:
        self.take("id", "digraph")
        dot = Dot(self.take("id"))
        self.take("punct", "{")
        while self.peek() != ("punct", "}"):
            first = self.take("id")
            nxt = self.peek()
            if nxt == ("punct", "="):
                self.take("punct", "=")
                dot.attrs[first] = self.take("id")
            elif first in ("node", "edge", "graph") and nxt == ("punct", "["):
                if first != "node":
                    raise DotError(f"{first} defaults are not emitted")
                dot.node_defaults.update(self.attrs())
            elif nxt == ("arrow", "->"):
                self.take("arrow")
                second = self.take("id")
                for end in (first, second):
                    if end not in dot.nodes:
                        raise DotError(f"edge to undeclared node {end!r}")
                dot.edges.append((first, second, self.attrs() if self.peek() == ("punct", "[") else {}))
            else:
                if first in dot.nodes:
                    raise DotError(f"node {first!r} declared twice")
                dot.nodes[first] = self.attrs() if nxt == ("punct", "[") else {}
            self.take("punct", ";")
        self.take("punct", "}")
        if self.peek()[0] != "eof":
            raise DotError(f"text after the graph: {self.peek()[1]!r}")
        return dot


def parse(text: str) -> Dot:
    return _Parser(text).parse()
