"""The package's layers: every zactor import points down, nothing imports in a circle.

Read statically (``ast``), so a violation fails here even on a path no other
test runs. The layers, lowest first (docs/internals.md explains each):

0. ``errors``, ``checkpoint``, ``processes``: leaves every layer may use.
1. ``wire``: frames, payloads, the declared protocol tables.
2. ``transport``: moving messages; the only place that imports ``zmq``.
3. ``endpoint``: a process's inbox, outboxes and pending calls.
4. ``caller``: handles, futures, actor classes.
5. ``worker``: hosting actors.
6. ``control``: the head, supervision, placement, spawning, the cluster file.
7. the public API: ``zactor/__init__.py``, ``api``, ``pool`` (and the ``actor``
   module of pickle aliases, which nothing may import).
8. ``compat``: the Ray and Dask shims, built on the public API.
9. the tools: ``cli``, ``__main__``, ``benchmark``; they alone may import
   lazily, inside functions, to keep ``zactor --help`` quick.

Imports under ``if TYPE_CHECKING:`` are annotations only and do not count.
"""

from __future__ import annotations

import ast
import os

import pytest

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zactor")

LAYERS = [
    ("base", ["zactor.errors", "zactor.checkpoint", "zactor.processes"]),
    ("wire", ["zactor.wire"]),
    ("transport", ["zactor.transport"]),
    ("endpoint", ["zactor.endpoint"]),
    ("caller", ["zactor.caller"]),
    ("worker", ["zactor.worker"]),
    ("control", ["zactor.control"]),
    ("api", ["zactor", "zactor.api", "zactor.pool", "zactor.actor"]),
    ("compat", ["zactor.compat"]),
    ("tools", ["zactor.cli", "zactor.__main__", "zactor.benchmark"]),
]
TOOLS = LAYERS.index(("tools", ["zactor.cli", "zactor.__main__", "zactor.benchmark"]))
#: Where ``import zmq`` may stand.
ZMQ_ALLOWED = ("zactor.transport", "zactor.cli", "zactor.benchmark")
#: Kept for old pickles only; nothing in the package may import it.
PICKLE_ALIASES = {"zactor.actor"}


def layer_of(module: str) -> int | None:
    """The layer ``module`` belongs to: its longest matching prefix in :data:`LAYERS`."""
    best, best_len = None, -1
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                if prefix == "zactor" and module != "zactor":
                    continue  # the package root is its __init__ only
                best, best_len = index, len(prefix)
    return best


def package_modules() -> dict[str, str]:
    """Module name -> file, for every ``.py`` file of the package."""
    modules = {}
    root = os.path.dirname(PACKAGE_DIR)
    for dirpath, _dirs, files in os.walk(PACKAGE_DIR):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            parts = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = package_modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_package = MODULES.get(module, "").endswith("__init__.py")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for each import in ``module``,
    skipping ``if TYPE_CHECKING:`` blocks. ``from package import name`` counts as
    importing ``package.name`` when that is a module."""
    tree = ast.parse(open(MODULES[module]).read(), MODULES[module])
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, in_function)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append((alias.name, child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, child)
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    found.append((sub if sub in MODULES else target, child.lineno, in_function))
            inner = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            visit(child, inner)

    visit(tree, False)
    return found


def zactor_edges() -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    return {
        module: {target for target, _line, _fn in imports_of(module) if target in MODULES}
        for module in MODULES
    }


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, f"place these modules in a layer of tests/test_layers.py: {missing}"


def test_imports_only_point_down():
    upward = []
    for module in MODULES:
        mine = layer_of(module)
        for target, line, _fn in imports_of(module):
            if target in MODULES and layer_of(target) > mine:
                upward.append(
                    f"{module}:{line} ({LAYERS[mine][0]}) imports {target} "
                    f"({LAYERS[layer_of(target)][0]})"
                )
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_import_cycle():
    edges = zactor_edges()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                walk(target, path + [target])
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            walk(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_zmq_only_in_the_transport_and_the_tools():
    offenders = [
        f"{module}:{line}"
        for module in MODULES
        if not module.startswith(ZMQ_ALLOWED)
        for target, line, _fn in imports_of(module)
        if target == "zmq" or target.startswith("zmq.")
    ]
    assert not offenders, f"zmq imported outside zactor.transport: {offenders}"


def test_no_zactor_import_inside_a_function_below_the_tools():
    lazy = [
        f"{module}:{line} imports {target}"
        for module in MODULES
        if layer_of(module) < TOOLS
        for target, line, in_function in imports_of(module)
        if in_function and (target == "zactor" or target.startswith("zactor."))
    ]
    assert not lazy, "imports inside functions (move them to the module's top):\n" + "\n".join(lazy)


def test_pickle_aliases_are_imported_by_nobody():
    users = [
        f"{module}:{line}"
        for module in MODULES
        for target, line, _fn in imports_of(module)
        if target in PICKLE_ALIASES
    ]
    assert not users, f"import from zactor.caller instead: {users}"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from zactor.control import head\n", "upward"),
        ("import zmq\n", "zmq"),
        ("def f():\n    from zactor import errors\n", "lazy"),
    ],
)
def test_the_checks_catch_violations(tmp_path, monkeypatch, source, expected):
    """Each rule fails on a module written to break it (so these tests can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    monkeypatch.setitem(MODULES, "zactor.wire.bad", str(bad))
    checks = {
        "upward": test_imports_only_point_down,
        "zmq": test_zmq_only_in_the_transport_and_the_tools,
        "lazy": test_no_zactor_import_inside_a_function_below_the_tools,
    }
    with pytest.raises(AssertionError):
        checks[expected]()


def test_the_cycle_check_catches_a_cycle(tmp_path, monkeypatch):
    one, two = tmp_path / "one.py", tmp_path / "two.py"
    one.write_text("from zactor.wire import two\n")
    two.write_text("from zactor.wire import one\n")
    monkeypatch.setitem(MODULES, "zactor.wire.one", str(one))
    monkeypatch.setitem(MODULES, "zactor.wire.two", str(two))
    with pytest.raises(AssertionError, match="one"):
        test_no_import_cycle()
