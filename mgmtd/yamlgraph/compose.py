"""Composing a graph's YAML into nodes in one pass of the parser, with a bound
on their number, for the common text: no alias (``*``) and no explicit tag
(``!``). Anything else (and every error) is left to PyYAML's own composer.

A node here is a PyYAML node (the loader and PyYAML's constructor use it as
one) without a ``__dict__`` and without an end mark, which nothing reads: a
graph of 10,000 files composed by PyYAML held about 31 MiB of nodes at the
peak of the engine's memory, most of it per-node dictionaries and marks."""

from __future__ import annotations

from collections.abc import Callable
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


def compose(text: str, budget: int, loader: type = yaml.SafeLoader,
            on_item: Callable[[yaml.Node, yaml.Node], None] | None = None) -> yaml.Node | None:
    """The document's root node (None for an empty stream), as PyYAML's
    ``compose`` would make it. Raises TooBig past ``budget`` nodes, Fallback
    when the text needs PyYAML's own composer, and PyYAML's errors.

    ``on_item(kind_key, item)``: each entry of a list at ``resources.KIND`` is
    handed to it as soon as it is composed, and left out of the tree, so a big
    graph's nodes never all exist at once."""
    resolver = Resolver()
    resolve = resolver.resolve
    stack: list[yaml.Node] = []
    under: list[yaml.Node | None] = []    # the key each node of the stack is the value of
    root = None
    documents = 0
    events = yaml.parse(text, Loader=loader)

    def hand(kind_key: yaml.Node, item: yaml.Node) -> None:
        try:
            on_item(kind_key, item)
        except Exception:
            for _ in events:   # a syntax error further on is the one to report
                pass
            raise

    for event in events:
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
            node = stack.pop()
            under.pop()
            if on_item is not None and _is_item_list(stack, under):
                hand(under[2], node)
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
        key = None
        if stack:
            parent = stack[-1]
            if type(parent) is SequenceNode:
                if on_item is not None and _is_item_list(stack, under):
                    if kind is yaml.ScalarEvent:
                        hand(under[2], node)
                else:
                    parent.value.append(node)
            elif parent.key is None:
                parent.key = node
            else:
                key = parent.key
                parent.value.append((key, node))
                parent.key = None
        else:
            root = node
        if kind is not yaml.ScalarEvent:
            stack.append(node)
            under.append(key)
    return root


def _is_item_list(stack: list[yaml.Node], under: list[yaml.Node | None]) -> bool:
    """True when the top of the stack is the list at ``resources.KIND`` of the root mapping."""
    if len(stack) != 3 or type(stack[0]) is not MappingNode or type(stack[1]) is not MappingNode:
        return False
    top_key, kind_key = under[1], under[2]
    return (type(stack[2]) is SequenceNode and type(top_key) is ScalarNode
            and top_key.value == "resources" and type(kind_key) is ScalarNode)
