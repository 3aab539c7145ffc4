"""Arrows only point down: no module of mgmtd imports a layer above its own.

The layers, bottom-up (a module may import its own layer and any below it):

1. base: ``mgmtd`` itself (the version), log, backoff, protocol (the
   supervisor-engine pipe), tls, certs, hostnames, urls, statefile (how
   files of state kept between runs are read and written), and
   ``cluster.keys``: the etcd key schema is names only, no I/O, and the
   ``kv`` resource writes under it.
2. resources: the kinds and their field schema (``resources.base``).
3. graph: the resource graph, plain data over resources.
4. yamlgraph: graph files into resources, edges and collect rules.
5. cluster: talking to etcd: clients, observing and steering members, and the
   export record with its wire format (``cluster.exported``).
6. engine: applies a graph, publishes and collects exports.
7. supervisor: runs etcd and the engine as child processes.
8. entry points: ``mgmtd`` (cli) and ``mgmtctl`` (ctl).

Some pairs the order alone would allow are kept apart as well (``APART``):
the supervisor talks to the engine only through its process and the
protocol, never by importing it; and ``mgmtctl`` is a client of the
cluster: it reads exports with ``cluster.exported``, not the engine, and
loads neither the supervisor nor the ``mgmtd`` command.

Imports are read with ``ast``, nothing is imported, so a cycle is caught
even where Python would happen to resolve it; imports inside functions and
under ``TYPE_CHECKING`` count like any other."""

from __future__ import annotations

import ast
from pathlib import Path

import mgmtd

PACKAGE = "mgmtd"
ROOT = Path(mgmtd.__file__).parent

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("mgmtd", "mgmtd.log", "mgmtd.backoff", "mgmtd.protocol", "mgmtd.tls", "mgmtd.certs",
              "mgmtd.hostnames", "mgmtd.urls", "mgmtd.statefile", "mgmtd.cluster.keys")),
    ("resources", ("mgmtd.resources",)),
    ("graph", ("mgmtd.graph",)),
    ("yamlgraph", ("mgmtd.yamlgraph",)),
    ("cluster", ("mgmtd.cluster",)),
    ("engine", ("mgmtd.engine",)),
    ("supervisor", ("mgmtd.supervisor",)),
    ("entry points", ("mgmtd.cli", "mgmtd.ctl", "mgmtd.mgmtflags")),
)

APART: tuple[tuple[str, str], ...] = (   # (importer, imported): never, whatever the order says
    ("mgmtd.supervisor", "mgmtd.engine"),
    ("mgmtd.ctl", "mgmtd.engine"),
    ("mgmtd.ctl", "mgmtd.supervisor"),
    ("mgmtd.ctl", "mgmtd.cli"),
)


def within(module: str, prefix: str) -> bool:
    """``module`` is ``prefix`` or inside it; the bare package name stands for
    ``mgmtd/__init__.py`` alone, not for everything under it."""
    return module == prefix or (prefix != PACKAGE and module.startswith(prefix + "."))


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the longest entry that holds ``module``."""
    best: tuple[int, int] | None = None   # (length of the entry, layer)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if within(module, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """The mgmtd modules that ``source`` imports: ``from mgmtd.x import y``
    counts as ``mgmtd.x.y`` when ``y`` is a module, as ``mgmtd.x`` otherwise."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[:len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if is_module(candidate) else base)
    return {name for name in found if within(name, PACKAGE) or name.startswith(PACKAGE + ".")}


def modules() -> dict[str, tuple[Path, set[str]]]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        out[name] = (path, imports_of(path.read_text(), name, path.name == "__init__.py"))
    return out


def upward_imports(table: dict[str, set[str]]) -> list[str]:
    """Every import that points up the layer table or across an APART pair,
    and every module the table does not place, one line each."""
    problems = []
    for module, imported in sorted(table.items()):
        own = layer_of(module)
        if own is None:
            problems.append(f"{module} has no layer: add it to LAYERS")
            continue
        for target in sorted(imported):
            theirs = layer_of(target)
            if theirs is None:
                problems.append(f"{module} imports {target}, which has no layer")
            elif theirs > own:
                problems.append(f"{module} ({LAYERS[own][0]}) imports {target} ({LAYERS[theirs][0]})")
            elif any(within(module, a) and within(target, b) for a, b in APART):
                problems.append(f"{module} imports {target}: they are kept apart")
    return problems


def test_no_module_imports_upward() -> None:
    table = {name: imported for name, (_, imported) in modules().items()}
    problems = upward_imports(table)
    assert not problems, "\n".join(problems)


def test_every_layer_entry_names_a_module() -> None:
    # a layer entry that names nothing is a typo that would let modules through
    names = modules()
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            assert any(within(name, prefix) for name in names), f"{prefix} names no module"


def test_the_check_sees_what_it_must() -> None:
    # an upward import, a relative one, one across APART, and an unplaced module
    assert imports_of("from . import graph\n", "mgmtd.yamlgraph.loader", False) == {"mgmtd.yamlgraph"}
    assert imports_of("from .. import log\n", "mgmtd.yamlgraph.loader", False) == {"mgmtd.log"}
    assert imports_of("def f():\n    import mgmtd.engine.main\n", "mgmtd.ctl", False) == {"mgmtd.engine.main"}
    assert imports_of("from mgmtd.cluster import keys\n", "mgmtd.resources.kv", False) == {"mgmtd.cluster.keys"}
    assert upward_imports({"mgmtd.yamlgraph.loader": {"mgmtd.engine.main"}}) == [
        "mgmtd.yamlgraph.loader (yamlgraph) imports mgmtd.engine.main (engine)"]
    assert upward_imports({"mgmtd.supervisor.node": {"mgmtd.engine.main"}}) == [
        "mgmtd.supervisor.node imports mgmtd.engine.main: they are kept apart"]
    assert upward_imports({"mgmtd.ctl": {"mgmtd.engine.collect"}}) == [
        "mgmtd.ctl imports mgmtd.engine.collect: they are kept apart"]
    assert upward_imports({"mgmtd.resources.kv": {"mgmtd.cluster.keys", "mgmtd.log"}}) == []
    assert upward_imports({"mgmtd.nowhere": set()}) == ["mgmtd.nowhere has no layer: add it to LAYERS"]
