"""Composing a graph's YAML into nodes in one pass of the parser, with a bound
on their number, for the common text: no alias (``*``) and no explicit tag
(``!``). Anything else (and every error) is left to PyYAML's own composer.

A node here is a PyYAML node (the loader and PyYAML's constructor use it as
one) without a ``__dict__`` and without an end mark, which nothing reads: a
graph of 10,000 files composed by PyYAML held about 31 MiB of nodes at the
peak of the engine's memory, most of it per-node dictionaries and marks."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.resolver import Resolver


class TooBig(Exception):
    """More nodes than allowed: the caller's measuring pass says where."""


class Fallback(Exception):
    """Not the common case (a tag, an alias, several documents): compose with PyYAML."""


class ScalarNode(yaml.ScalarNode):
    __slots__ = ("tag", "value", "start_mark", "end_mark", "style")

    def __init__(self, tag: str, value: Any, start_mark: Any, style: str | None) -> None:
        self.tag, self.value, self.start_mark, self.end_mark, self.style = tag, value, start_mark, None, style


class SequenceNode(yaml.SequenceNode):
    __slots__ = ("tag", "value", "start_mark", "end_mark", "flow_style")

    def __init__(self, tag: str, start_mark: Any, flow_style: bool | None) -> None:
        self.tag, self.value, self.start_mark, self.end_mark = tag, [], start_mark, None
        self.flow_style = flow_style


class MappingNode(yaml.MappingNode):
    __slots__ = ("tag", "value", "start_mark", "end_mark", "flow_style", "key")

    def __init__(self, tag: str, start_mark: Any, flow_style: bool | None) -> None:
        self.tag, self.value, self.start_mark, self.end_mark = tag, [], start_mark, None
        self.flow_style = flow_style
        self.key: yaml.Node | None = None   # a key waiting for its value


def compose(text: str, budget: int, loader: type = yaml.SafeLoader) -> yaml.Node | None:
    """The document's root node (None for an empty stream), as PyYAML's
    ``compose`` would make it. Raises TooBig past ``budget`` nodes, Fallback
    when the text needs PyYAML's own composer, and PyYAML's errors."""
    resolver = Resolver()
    resolve = resolver.resolve
    stack: list[yaml.Node] = []
    root = None
    documents = 0
    for event in yaml.parse(text, Loader=loader):
        kind = type(event)
        if kind is yaml.ScalarEvent:
            if event.tag is not None or event.anchor is not None:
                raise Fallback
            node = ScalarNode(resolve(yaml.ScalarNode, event.value, event.implicit), event.value,
                              event.start_mark, event.style)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            if event.tag is not None or event.anchor is not None:
                raise Fallback
            if kind is yaml.MappingStartEvent:
                node = MappingNode(resolve(yaml.MappingNode, None, event.implicit), event.start_mark,
                                   event.flow_style)
            else:
                node = SequenceNode(resolve(yaml.SequenceNode, None, event.implicit), event.start_mark,
                                    event.flow_style)
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            stack.pop()
            continue
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise Fallback   # PyYAML's error names both documents
            continue
        elif kind is yaml.AliasEvent:
            raise Fallback
        else:
            continue   # stream start/end, document end
        budget -= 1
        if budget < 0:
            raise TooBig
        if stack:
            parent = stack[-1]
            if type(parent) is SequenceNode:
                parent.value.append(node)
            elif parent.key is None:
                parent.key = node
            else:
                parent.value.append((parent.key, node))
                parent.key = None
        else:
            root = node
        if kind is not yaml.ScalarEvent:
            stack.append(node)
    return root
