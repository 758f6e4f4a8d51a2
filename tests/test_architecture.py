"""The package's folders are its layers: imports run one way, with no circles.

Read from the source with ``ast`` (every import counts, ``TYPE_CHECKING`` ones included), so a
new module that reaches upwards or closes a loop fails here, with the offending edge named.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "eventtape"

# What each place may import besides itself. Entry points (the package face, cli, testing)
# sit on top; adapters (stores, sinks) see only the core.
ALLOWED: dict[str, set[str]] = {
    "_core": set(),
    "_model": {"_core"},
    "_runtime": {"_core"},
    "_projections": {"_core", "_model", "_runtime"},
    "_sagas": {"_core", "_model", "_runtime"},
    "stores": {"_core"},
    "sinks": {"_core"},
    "privacy": {"_core"},
    "testing": {"_core", "_model", "stores"},
    "cli": {"_core", "_model", "_projections", "_sagas", "stores", "sinks", "console"},
    "console": {"_core", "_model", "_projections", "stores", "sinks"},
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            for candidate in candidates:
                if candidate in modules and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def _place(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_circles() -> None:
    graph = _imports()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                loop = [*stack[stack.index(target) :], target]
                pytest.fail("import circle: " + " -> ".join(loop))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_layers_import_downwards_only() -> None:
    wrong = []
    for module, targets in _imports().items():
        place = _place(module)
        if place not in ALLOWED:  # the package face and top-level modules
            continue
        for target in targets:
            other = _place(target)
            if other != place and other not in ALLOWED[place]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layers: " + ", ".join(sorted(wrong))


def test_nothing_inside_imports_the_package_face() -> None:
    graph = _imports()
    assert not [m for m, targets in graph.items() if "eventtape" in targets and m != "eventtape"]
