"""Loads an mgmt-style YAML graph into resources, edges and collect rules.

Everything is checked before anything is built, and every problem is one
``GraphError`` with file, line and column."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from mgmtd import graph as graphs
from mgmtd.resources import KINDS, unknown_kind
from mgmtd.resources.base import (
    DEFAULT_META,
    EFFECTIVE_META,
    EXPORT_ALL,
    Field,
    FieldError,
    Meta,
    Resource,
    export_problem,
    limit_problem,
    meta_refusal,
    poll_problem,
    sema_problem,
    shown,
)
from mgmtd.yamlgraph import compose as composing
from mgmtd.yamlgraph.errors import GraphError, GraphWarning, Location
from mgmtd.yamlgraph.source import MAX_BYTES, read_graph_bytes

EXPORT_MARK = "@@"
# What a graph may hold with every alias expanded (an alias counts as a copy
# of what it names): a few aliases nested in each other ("billion laughs")
# would otherwise stand for more than any memory holds. A million nodes take
# about 300 MB once composed.
MAX_NODES = 1_000_000
MAX_TEXT = MAX_BYTES    # characters of scalar text, likewise expanded
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# the meta of an '@@' resource without meta: (most of them), built and checked once
EXPORTED_META_DEFAULT = dataclasses.replace(DEFAULT_META, hidden=True, export=(EXPORT_ALL,))


@dataclass(frozen=True)
class CollectRule:
    kind: str
    pattern: str | None = None
    hosts: tuple[str, ...] = ()
    set: tuple[tuple[str, Any], ...] = ()
    location: Location | None = None
    # what collected resources may do beyond the safe defaults (see COLLECT_ALLOWANCES)
    allow: frozenset[str] = frozenset()


# Collected resources are untrusted input. These are the rights a collect rule
# can grant on purpose, each named in its ``allow:`` list; nothing else is allowed.
COLLECT_ALLOWANCES = {
    "source": "a collected file may copy a file of this host (source:)",
    "setid": "a collected file may have setuid, setgid or sticky bits in its mode",
    "owner": "a collected file may set owner and group to other than this host's defaults",
}


@dataclass
class GraphSpec:
    name: str
    source: str
    resources: list[Resource] = field(default_factory=list)   # applied here
    exports: list[Resource] = field(default_factory=list)     # '@@': sent to the cluster
    edges: list[graphs.Edge] = field(default_factory=list)
    collect: list[CollectRule] = field(default_factory=list)
    locations: dict[graphs.Key, Location] = field(default_factory=dict)
    digest: bytes | None = None  # SHA-256 of the file's bytes (graph_digest): an edit, not a touch
    warnings: list[GraphWarning] = field(default_factory=list)   # loaded anyway; shown once per load
    # the graph built when loading (autoedges, cycles) and the metas it was built with:
    # handed out once by build() while they still hold, instead of building it again
    built: tuple[graphs.Graph, tuple[Meta, ...]] | None = field(default=None, repr=False)
    # this spec's own graph, kept to be extended by collected resources (never handed
    # out, never cached on disk), and the metas it was built with
    base: tuple[graphs.Base, tuple[Meta, ...]] | None = field(default=None, repr=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "base": None}   # built again from the resources: not worth its bytes

    def build(self, extra: list[Resource] | None = None, keep: bool = False) -> graphs.Graph:
        """The graph of this spec's resources and ``extra``; a new one at each
        call (the caller may change it). ``keep``: remembered for the next call.
        With ``extra`` (collected resources, pending reversals) this spec's own
        graph is built once and extended at each call."""
        built, self.built = self.built, None
        if not extra and built is not None and self._same_metas(built[1]):
            return built[0]
        if extra:
            if self.base is None or not self._same_metas(self.base[1]):
                with self._cycle_named():
                    base = graphs.build_base(self.resources, self.edges)
                self.base = (base, tuple(res.meta for res in self.resources))
            graph = graphs.extend(self.base[0], extra)
            if graph is not None:
                return graph
        graph = self._build(extra or [])   # a cycle or a clash, named
        if keep and not extra:
            self.built = (graph, tuple(res.meta for res in self.resources))
        return graph

    def _same_metas(self, metas: tuple[Meta, ...]) -> bool:
        """Whether the resources still have the metas a graph was built with
        (--no-autoedges and the like replace them before the first build)."""
        return len(metas) == len(self.resources) and all(
            res.meta is meta for res, meta in zip(self.resources, metas, strict=True))

    def _build(self, extra: list[Resource]) -> graphs.Graph:
        with self._cycle_named():
            return graphs.build([*self.resources, *extra], self.edges)

    @contextlib.contextmanager
    def _cycle_named(self) -> Iterator[None]:
        """A cycle as a GraphError, located where the graph file has it."""
        try:
            yield
        except graphs.CycleError as err:
            raise GraphError(self.locations.get(err.cycle[0], Location(self.source)), str(err)) from None


class _Node:
    """A YAML node with its value converted and its place kept."""

    __slots__ = ("value", "loc")

    def __init__(self, value: Any, loc: Location) -> None:
        self.value = value
        self.loc = loc


# Top-level keys that mgmt parses past without a word (its YAML decoder is
# not strict): loaded with a warning, never silently.
IGNORED_TOP_LEVEL = {
    "remote": "top-level key 'remote' is ignored: mgmt ignores it too (its remote execution over "
              "SSH is gone); mgmtd runs the graph on this host only",
}


class _Resources:
    """Builds the graph's resources one YAML entry at a time, checking names,
    exports and managed objects against those built before."""

    def __init__(self, loader: Loader, spec: GraphSpec) -> None:
        self.loader = loader
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        self.spec.resources, self.spec.exports, self.spec.locations = [], [], {}
        self.spec.warnings.clear()   # those of the resources built so far: built again
        # what is checked against, kept small: a graph's resources are seen in
        # spec.locations; an exported one ("@@") apart
        self.seen_exported: dict[graphs.Key, Location] = {}
        self.identities: dict[tuple, Resource | list[Resource]] = {}   # managed object -> resources
        self.exported_at: dict[graphs.Key, Location] = {}

    def add(self, kind_node: yaml.Node, item: yaml.Node) -> None:
        loader, spec = self.loader, self.spec
        kind = kind_node.value
        cls = KINDS.get(kind)
        if cls is None:
            raise loader.error(kind_node, unknown_kind(kind))
        res, exported = loader.load_resource(cls, item)
        loc = loader.loc(item)
        key = res.key
        seen = self.seen_exported if exported else spec.locations
        if key in seen:
            raise loader.error(loc, f"duplicate name (first defined at line {seen[key].line})",
                               self.label(kind, res, exported))
        if res.meta.export:
            if key in self.exported_at:
                raise loader.error(loc, f"exported twice: {key[0]}/{res.name} is also "
                                   f"exported at line {self.exported_at[key].line}",
                                   self.label(kind, res, exported))
            self.exported_at[key] = loc
            spec.exports.append(res)
        if exported:
            seen[key] = loc
            return
        if not res.meta.hidden:  # a hidden resource manages nothing here
            identity = res.identity()
            found = self.identities.get(identity)
            if found is None:
                self.identities[identity] = res
            else:
                others = found if isinstance(found, list) else [found]
                for other in others:
                    # some kinds allow several resources on one object (kv with skiplessthan)
                    if not getattr(res, "shares_with", lambda _: False)(other):
                        raise loader.error(loc, f"manages the same object as {graphs.key_str(other.key)} "
                                           f"(line {spec.locations[other.key].line})",
                                           self.label(kind, res, exported))
                self.identities[identity] = [*others, res]
        spec.resources.append(res)
        spec.locations[key] = loc

    @staticmethod
    def label(kind: str, res: Resource, exported: bool) -> str:
        return f"{kind}[{EXPORT_MARK if exported else ''}{res.name}]"


class Loader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[GraphWarning] = []
        self.constructor = yaml.SafeLoader("")

    def loc(self, node: yaml.Node) -> Location:
        mark = node.start_mark
        return Location(self.source, mark.line + 1, mark.column + 1)

    def error(self, node: yaml.Node | Location, message: str, subject: str = "") -> GraphError:
        loc = node if isinstance(node, Location) else self.loc(node)
        return GraphError(loc, message, subject)

    # --- YAML -> nodes ------------------------------------------------------
    def measure(self, events: Iterable[yaml.Event]) -> None:
        """Refuses a document that, with its aliases expanded, holds more than
        MAX_NODES nodes or MAX_TEXT characters, or an alias inside the node it
        names. Runs on the parser's events, before anything is composed, so
        neither check costs more memory than the document's anchors."""
        nodes = text = 0
        aliased = False
        sizes: dict[str, tuple[int, int]] = {}        # anchor -> expanded (nodes, characters)
        open_nodes: list[tuple[str | None, int, int]] = []   # (anchor, nodes, text) at its start
        for event in events:
            if isinstance(event, yaml.AliasEvent):
                aliased = True
                if event.anchor not in sizes:
                    if any(anchor == event.anchor for anchor, _, _ in open_nodes):
                        raise self.error(self.mark_loc(event), f"alias {shown('*' + event.anchor)} is "
                                         "inside the node it names (a recursive structure)")
                    return   # undefined: composing reports it
                more_nodes, more_text = sizes[event.anchor]
                nodes, text = nodes + more_nodes, text + more_text
            elif isinstance(event, yaml.ScalarEvent):
                nodes, text = nodes + 1, text + len(event.value)
                if event.anchor is not None:
                    sizes[event.anchor] = (1, len(event.value))
            elif isinstance(event, yaml.CollectionStartEvent):
                if event.anchor is not None:
                    sizes.pop(event.anchor, None)   # a redefined anchor names the new node from here
                open_nodes.append((event.anchor, nodes, text))
                nodes += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, nodes_before, text_before = open_nodes.pop()
                if anchor is not None:
                    sizes[anchor] = (nodes - nodes_before, text - text_before)
            if nodes > MAX_NODES or text > MAX_TEXT:
                what = "aliases expand the graph" if aliased else "the graph is"
                raise self.error(self.mark_loc(event), f"{what} beyond {MAX_NODES} YAML nodes or "
                                 f"{MAX_TEXT // (1024 * 1024)} MiB of text")

    def mark_loc(self, event: yaml.Event) -> Location:
        mark = event.start_mark
        return Location(self.source, mark.line + 1, mark.column + 1) if mark else Location(self.source)

    def compose(self, text: str | bytes, adding: _Resources | None = None) -> yaml.Node | None:
        if isinstance(text, bytes):
            # a file's bytes (checked UTF-8): the parser reads them as they are, no
            # copy as a str and back; anything unusual goes the way of a str below
            if b"*" not in text and b"!" not in text:
                try:
                    return composing.compose(text, MAX_NODES, SAFE_LOADER,
                                             adding.add if adding is not None else None)
                except (composing.TooBig, composing.Fallback, yaml.YAMLError):
                    pass   # the str's way says where and what
            if adding is not None:
                adding.reset()
            text = text.decode("utf-8")
        try:
            if "*" not in text and "!" not in text:
                # No alias and no explicit tag: counting the nodes as they are made
                # bounds them (and memory) as ``measure`` does, in one parse instead of
                # two. The text is already at most MAX_TEXT.
                try:
                    return composing.compose(text, MAX_NODES, SAFE_LOADER,
                                             adding.add if adding is not None else None)
                except (composing.TooBig, composing.Fallback):
                    if adding is not None:
                        adding.reset()   # PyYAML's tree holds every resource: start again
            self.measure(yaml.parse(text, Loader=SAFE_LOADER))
            return yaml.compose(text, Loader=SAFE_LOADER)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            loc = Location(self.source, mark.line + 1, mark.column + 1) if mark else Location(self.source)
            problem = err.problem or err.context or "invalid YAML"
            raise GraphError(loc, f"YAML syntax error: {problem}") from None
        except yaml.reader.ReaderError as err:
            before = text[: err.position]
            line = before.count("\n") + 1
            column = err.position - (before.rfind("\n") + 1) + 1
            raise GraphError(Location(self.source, line, column),
                             f"YAML syntax error: character {err.character!r} is not allowed") from None
        except yaml.YAMLError as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise GraphError(Location(self.source, 1, 1), f"YAML error: {first}") from None
        except RecursionError:
            raise GraphError(Location(self.source, 1, 1), "YAML nesting is too deep") from None

    def scalar(self, node: yaml.Node, subject: str = "") -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as err:
            raise self.error(node, f"bad value: {getattr(err, 'problem', err)}", subject) from None
        except RecursionError:
            raise self.error(node, "value is nested too deeply", subject) from None
        except ValueError as err:
            # Python refuses integers of more than 4300 digits; datetime, impossible dates
            if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":int"):
                raise self.error(node, f"bad value: an integer of {len(node.value)} digits", subject) from None
            raise self.error(node, f"bad value: {str(err).splitlines()[0][:100]}", subject) from None
        finally:
            # PyYAML keeps every node it constructed (to share aliased values) until
            # the end of a document: one value at a time here, so nothing to keep
            constructor = self.constructor
            if constructor.constructed_objects:
                constructor.constructed_objects = {}
                constructor.recursive_objects = {}

    def mapping(self, node: yaml.Node, what: str, subject: str = "") -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping", subject)
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise self.error(key_node, f"{what}: keys must be strings", subject)
            if key in out:
                raise self.error(key_node, f"{what}: key {shown(key)} appears twice", subject)
            out[key] = (key_node, value_node)
        return out

    def sequence(self, node: yaml.Node, what: str, subject: str = "") -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{what} must be a list", subject)
        return list(node.value)

    def string(self, node: yaml.Node, what: str, subject: str = "") -> str:
        value = self.scalar(node)
        if not isinstance(value, str) or not value:
            raise self.error(node, f"{what} must be a non-empty string", subject)
        return value

    def typed(self, node: yaml.Node, name: str, spec: Field, subject: str) -> Any:
        value = self.scalar(node, subject)
        problem = spec.problem(name, value)
        if problem:
            raise self.error(node, problem, subject)
        return value

    # --- the graph ----------------------------------------------------------
    def load(self, text: str | bytes) -> GraphSpec:
        spec = GraphSpec(name="graph", source=self.source)
        self.warnings = spec.warnings
        adding = _Resources(self, spec)
        root = self.compose(text, adding)   # resources are built as they are composed
        if root is None:
            raise GraphError(Location(self.source, 1, 1), "the graph is empty")
        top = self.mapping(root, "the graph")
        allowed = {"graph", "comment", "resources", "edges", "collect"}
        warnings: list[GraphWarning] = []
        for key, (key_node, _) in top.items():
            if key in IGNORED_TOP_LEVEL:
                warnings.append(GraphWarning(self.loc(key_node), IGNORED_TOP_LEVEL[key]))
            elif key not in allowed:
                raise self.error(key_node, f"unknown top-level key {shown(key)} (expected one of: "
                                 f"{', '.join(sorted(allowed))})")
        if "graph" in top:
            spec.name = self.string(top["graph"][1], "graph")
        spec.warnings[:0] = warnings   # the top level's first, as they come in the file
        if "resources" in top:
            self.load_resources(top["resources"][1], adding)
        if "edges" in top:
            self.load_edges(top["edges"][1], spec)
        if "collect" in top:
            self.load_collect(top["collect"][1], spec)
        spec.build(keep=True)  # autoedges and cycles, before anything runs
        return spec

    def load_resources(self, node: yaml.Node, adding: _Resources) -> None:
        """The resources not built yet as they were composed (all of them when
        PyYAML composed the graph)."""
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return
        for kind_node, list_node in self.mapping(node, "resources").values():
            if kind_node.value not in KINDS:
                raise self.error(kind_node, unknown_kind(kind_node.value))
            for item in self.sequence(list_node, f"resources.{kind_node.value}"):
                adding.add(kind_node, item)

    def load_resource(self, cls: type[Resource], node: yaml.Node) -> tuple[Resource, bool]:
        fields = self.mapping(node, f"a {cls.kind} resource")
        if "name" not in fields:
            raise self.error(node, "resource has no name", cls.kind)
        name = self.scalar(fields["name"][1])
        if isinstance(name, int | float) and not isinstance(name, bool):
            name = str(name)
        if not isinstance(name, str) or not name.strip() or name == EXPORT_MARK:
            raise self.error(fields["name"][1], "name must be a non-empty string", cls.kind)
        if any(not ch.isprintable() for ch in name):
            raise self.error(fields["name"][1], f"name {shown(name)} contains control characters", cls.kind)
        exported = name.startswith(EXPORT_MARK)
        if exported:
            name = name[len(EXPORT_MARK):]
        subject = f"{cls.kind}[{name}]"
        params: dict[str, Any] = {}
        meta = DEFAULT_META
        for key, (key_node, value_node) in fields.items():
            if key == "name":
                continue
            if key == "meta":
                meta = self.load_meta(value_node, subject)
                self.check_meta_for(cls, meta, value_node, subject)
                continue
            field_spec = cls.FIELDS.get(key)
            if field_spec is None and key in cls.UNSUPPORTED:
                raise self.error(key_node, f"{cls.kind}.{key} (mgmt's field) is not supported: "
                                 f"{cls.UNSUPPORTED[key]}", subject)
            legacy = getattr(cls, "LEGACY_FIELDS", {})
            if key in legacy:    # an old mgmt field that mgmt HEAD no longer reads
                self.warnings.append(GraphWarning(self.loc(key_node), f"field {shown(key)}: {legacy[key]}",
                                                  subject))
            if field_spec is None:
                known = ", ".join(sorted(cls.FIELDS))
                raise self.error(key_node, f"unknown field {shown(key)} for kind {cls.kind} "
                                 f"(known: name, meta, {known})", subject)
            value = self.typed(value_node, key, field_spec, subject)
            # short values repeat across resources ("exists", "0644", "root"): one string each
            params[key] = sys.intern(value) if type(value) is str and len(value) <= 16 else value
        if name.startswith("$") and not meta.dollar:
            # mgmt's rule: most likely a variable the author forgot to interpolate
            raise self.error(fields["name"][1], f"name {shown(name)} starts with '$' (a variable "
                             "not interpolated?); set meta.dollar: true if it is meant", cls.kind)
        for key, field_spec in cls.FIELDS.items():
            if field_spec.required and params.get(key) is None:
                raise self.error(node, f"field {key!r} is required", subject)
        if exported:
            # '@@' is mgmt's short form of meta hidden: true, export: ["*"] (a list
            # given in meta.export says to which hosts instead)
            meta = EXPORTED_META_DEFAULT if meta is DEFAULT_META else \
                dataclasses.replace(meta, hidden=True, export=meta.export or (EXPORT_ALL,))
        try:
            res = cls(name, params, meta)
            res.validate()
        except FieldError as err:
            where = fields[err.field][1] if err.field in fields else node
            raise self.error(where, str(err), subject) from None
        except ValueError as err:
            raise self.error(node, str(err), subject) from None
        problem = res.reverse_problem() if res.meta.reverse else ""
        if problem:
            raise self.error(self.mapping(fields["meta"][1], "meta", subject)["reverse"][1], problem, subject)
        return res, exported

    def load_meta(self, node: yaml.Node, subject: str) -> Meta:
        values: dict[str, Any] = {}
        for key, (key_node, value_node) in self.mapping(node, "meta", subject).items():
            spec = Meta.FIELDS.get(key)
            if spec is None:
                raise self.error(key_node, f"unknown meta parameter {shown(key)} (known: "
                                 f"{', '.join(sorted(Meta.FIELDS))})", subject)
            value = self.typed(value_node, f"meta.{key}", spec, subject)
            refusal = meta_refusal(key, value)
            if refusal:
                raise self.error(value_node, refusal, subject)
            if key in EFFECTIVE_META and value is not None:
                values[key] = value
        fields = self.mapping(node, "meta", subject)
        for key, problem in (("limit", limit_problem(values.get("limit", math.inf), values.get("burst", 0))),
                             ("poll", poll_problem(values.get("poll", 0))),
                             ("sema", sema_problem(values.get("sema", []))),
                             ("export", export_problem(values.get("export", [])))):
            if problem:
                raise self.error(fields[key][1] if key in fields else node, problem, subject)
        return Meta(**values) if values else DEFAULT_META

    def check_meta_for(self, cls: type[Resource], meta: Meta, node: yaml.Node, subject: str) -> None:
        """The meta checks that depend on the kind."""
        fields = self.mapping(node, "meta", subject)
        if "autogroup" in fields and meta.autogroup and not cls.GROUPABLE:
            can = ", ".join(sorted(k for k, c in KINDS.items() if c.GROUPABLE))
            raise self.error(fields["autogroup"][1], f"meta.autogroup: kind {cls.kind} cannot be "
                             f"grouped (kinds that can: {can}); leave it out or write false", subject)

    def endpoint(self, node: yaml.Node, spec: GraphSpec, what: str) -> graphs.Key:
        fields = self.mapping(node, f"edge {what}")
        for key, (key_node, _) in fields.items():
            if key not in ("kind", "name"):
                raise self.error(key_node, f"unknown field {shown(key)} in edge {what} (expected kind, name)")
        if "kind" not in fields or "name" not in fields:
            raise self.error(node, f"edge {what} needs kind and name")
        kind = self.string(fields["kind"][1], "kind")
        name = self.scalar(fields["name"][1])
        name = str(name) if name is not None else ""
        key = (kind, name.removeprefix(EXPORT_MARK))
        if key not in spec.locations:
            raise self.error(fields["name"][1], f"edge {what} names a resource that does not exist "
                             f"in this graph: {kind}[{name}]")
        return key

    def load_edges(self, node: yaml.Node, spec: GraphSpec) -> None:
        for item in self.sequence(node, "edges"):
            fields = self.mapping(item, "an edge")
            for key, (key_node, _) in fields.items():
                if key not in ("name", "from", "to", "notify"):
                    raise self.error(key_node, f"unknown field {shown(key)} in edge "
                                     "(expected name, from, to, notify)")
            if "from" not in fields or "to" not in fields:
                raise self.error(item, "edge needs from and to")
            source = self.endpoint(fields["from"][1], spec, "from")
            target = self.endpoint(fields["to"][1], spec, "to")
            notify = self.scalar(fields["notify"][1]) if "notify" in fields else False
            if not isinstance(notify, bool):
                raise self.error(fields["notify"][1], "notify must be true or false")
            name = str(self.scalar(fields["name"][1])) if "name" in fields else ""
            if source == target:
                raise self.error(item, f"edge from {graphs.key_str(source)} to itself")
            spec.edges.append(graphs.Edge(source, target, notify, name))

    def load_collect(self, node: yaml.Node, spec: GraphSpec) -> None:
        for item in self.sequence(node, "collect"):
            fields = self.mapping(item, "a collect rule")
            for key, (key_node, _) in fields.items():
                if key not in ("kind", "pattern", "hosts", "set", "allow"):
                    raise self.error(key_node, f"unknown field {shown(key)} in collect rule "
                                     "(expected kind, pattern, hosts, set, allow)")
            if "kind" not in fields:
                raise self.error(item, "collect rule needs a kind")
            kind = self.string(fields["kind"][1], "kind")
            cls = KINDS.get(kind)
            if cls is None:
                raise self.error(fields["kind"][1], unknown_kind(kind))
            pattern = None
            if "pattern" in fields:
                value = self.scalar(fields["pattern"][1])
                if value not in (None, "") and not isinstance(value, str):
                    raise self.error(fields["pattern"][1], "pattern must be a string")
                pattern = value or None
            hosts: tuple[str, ...] = ()
            if "hosts" in fields:
                hosts = tuple(self.string(h, "hosts entry") for h in self.sequence(fields["hosts"][1], "hosts"))
            overrides: list[tuple[str, Any]] = []
            if "set" in fields:
                for key, (key_node, value_node) in self.mapping(fields["set"][1], "set").items():
                    field_spec = cls.FIELDS.get(key)
                    if field_spec is None or key == "name":
                        raise self.error(key_node, f"set: unknown field {shown(key)} for kind {kind}")
                    overrides.append((key, self.typed(value_node, key, field_spec, f"collect {kind}")))
            allow: set[str] = set()
            if "allow" in fields:
                for entry in self.sequence(fields["allow"][1], "allow"):
                    right = self.string(entry, "allow entry")
                    if right not in COLLECT_ALLOWANCES:
                        raise self.error(entry, f"allow: unknown right {shown(right)} (known: "
                                         f"{', '.join(sorted(COLLECT_ALLOWANCES))})")
                    allow.add(right)
            spec.collect.append(CollectRule(kind, pattern, hosts, tuple(overrides), self.loc(item),
                                            frozenset(allow)))


def load_text(text: str | bytes, source: str = "<graph>") -> GraphSpec:
    """The graph in ``text`` (bytes: UTF-8, already checked)."""
    # Loading makes many objects and frees few (the YAML tree at the end): the cyclic
    # collector would walk the growing heap again and again for nothing. Nothing
    # here makes a cycle that refcounting cannot free, and it runs again afterwards.
    paused = gc.isenabled()
    gc.disable()
    try:
        return Loader(source).load(text)
    finally:
        if paused:
            gc.enable()


def check_utf8(data: bytes, path: str) -> None:
    try:
        data.decode("utf-8")   # checked, not kept: the parser reads the bytes
    except UnicodeDecodeError as err:
        raise GraphError(Location(path), f"graph is not UTF-8 (byte {err.start})") from None


def load_file(path: str) -> GraphSpec:
    data = read_graph_bytes(path)
    check_utf8(data, path)
    spec = load_text(data, path)
    spec.digest = hashlib.sha256(data).digest()
    return spec
