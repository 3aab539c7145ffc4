"""No hidden global state in mgmtd: a function never rebinds a module global
(``global``) nor changes a module-level container in place (``_seen.add``,
``_cache[k] = v``). Such state is set in one place and read implicitly in
another (TLS settings set by the CLI and frozen into a channel cache, ports a
process has handed out): what a function works with is passed to it or held
by an object its caller owns.

The modules are read with ``ast``, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import mgmtd
from mgmtd.supervisor import preflight
from mgmtd.supervisor.preflight import PortAllocator

ROOT = Path(mgmtd.__file__).parent

# methods that change a list, dict, set or deque in place
MUTATORS = frozenset({
    "add", "append", "appendleft", "clear", "discard", "extend", "extendleft", "insert", "pop",
    "popitem", "popleft", "remove", "reverse", "rotate", "setdefault", "sort", "update",
    "difference_update", "intersection_update", "symmetric_difference_update",
})
CONTAINER_CALLS = frozenset({"dict", "list", "set", "bytearray", "defaultdict", "deque", "OrderedDict",
                             "Counter"})
CONTAINER_DISPLAYS = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def global_statements(tree: ast.AST) -> list[tuple[int, str]]:
    return [(node.lineno, f"global {', '.join(node.names)}")
            for node in ast.walk(tree) if isinstance(node, ast.Global)]


def is_container(value: ast.AST) -> bool:
    if isinstance(value, CONTAINER_DISPLAYS):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        return name in CONTAINER_CALLS
    return False


def module_containers(tree: ast.Module) -> set[str]:
    """Names the module binds to a mutable container at its top level."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and is_container(node.value):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif (isinstance(node, ast.AnnAssign) and node.value is not None and is_container(node.value)
              and isinstance(node.target, ast.Name)):
            names.add(node.target.id)
    return names


def local_names(function: ast.AST) -> set[str]:
    """Names a function binds itself (its parameters and whatever it assigns)."""
    names = {a.arg for a in ast.walk(function.args) if isinstance(a, ast.arg)}
    names |= {n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def changed_in_place(node: ast.AST) -> str | None:
    """The name an expression or a target changes in place, if it does."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in MUTATORS and isinstance(node.func.value, ast.Name)):
        return node.func.value.id
    if (isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del))
            and isinstance(node.value, ast.Name)):
        return node.value.id
    return None


def container_changes(tree: ast.Module) -> list[tuple[int, str]]:
    containers = module_containers(tree)
    found = set()
    for function in ast.walk(tree):
        if not isinstance(function, FUNCTIONS):
            continue
        shadowed = local_names(function)
        for node in ast.walk(function):
            name = changed_in_place(node)
            if name in containers and name not in shadowed:
                found.add((node.lineno, f"changes the module-level {name}"))
    return sorted(found)


def hidden_state(source: str) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    return sorted(global_statements(tree) + container_changes(tree))


def test_no_module_state_changed_by_functions() -> None:
    found = [f"{path.relative_to(ROOT.parent)}:{line}: {what}"
             for path in modules() for line, what in hidden_state(path.read_text())]
    assert not found, ("module-level state changed by functions (pass it explicitly, or keep it in "
                       "an object the caller holds):\n" + "\n".join(found))


SAMPLE = """\
_current = None
_seen: set[int] = set()
_cache = {}
LIMITS = {"a": 1}
def configure(files):
    global _current
    _current = files
def remember(port):
    _seen.add(port)
class Cache:
    def put(self, key, value):
        _cache[key] = value
def local_only():
    _seen = set()
    _seen.add(1)
    return LIMITS["a"]
"""


def test_the_check_sees_what_it_forbids() -> None:
    assert hidden_state(SAMPLE) == [(6, "global _current"), (9, "changes the module-level _seen"),
                                    (12, "changes the module-level _cache")]


def test_an_allocator_never_hands_out_a_port_twice(monkeypatch) -> None:
    """What the module-level set did, the allocator its caller holds does: a
    port drawn again is skipped (it may not be bound yet); another allocator
    remembers nothing of this one's ports."""
    drawn = iter([20001, 20001, 20002, 20001])
    bounds = []

    def randrange(low: int, high: int) -> int:
        bounds.append((low, high))
        return next(drawn)

    monkeypatch.setattr(preflight.random, "randrange", randrange)
    monkeypatch.setattr(preflight, "_ephemeral_low", lambda: 32768)
    monkeypatch.setattr(preflight, "_bindable", lambda host, port: True)  # whatever runs here
    ports = PortAllocator()
    assert [ports.free_port(), ports.free_port()] == [20001, 20002]
    assert PortAllocator().free_port() == 20001
    assert set(bounds) == {(10000, 32768)}   # below the ephemeral range
