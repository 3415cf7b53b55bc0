"""The packages of src/smolgrpo form layers: a module imports only from its own package or from
the packages below it in LAYERS, and no modules import each other in a cycle. Imports inside
functions count too (a lazy import hides a cycle from Python but not from a reader)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src/smolgrpo"

# Lowest first: the pipeline's stages in the order they may depend on each other.
LAYERS = (
    "errors",
    "rewards",
    "tasks",
    "algo",
    "models",
    "runs",
    "config",
    "generation",
    "evaluation",
    "reporting",
    "training",
    "cli",
)
# Outside the layers: the package's entry points and its test fixtures.
TOP = {"", "__main__", "testing", "testing.tiny"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """src/smolgrpo/tasks/gym.py -> "tasks.gym"; src/smolgrpo/tasks/__init__.py -> "tasks"."""
    parts = list(path.relative_to(package).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its file (subpackages included:
    "tasks", "tasks.gym"; `from smolgrpo.tasks import gym` counts as "tasks.gym")."""
    paths = sorted(package.rglob("*.py"))
    modules = {module_name(path, package) for path in paths}

    def resolve(base: str, names) -> set[str]:
        found = {f"{base}.{alias.name}" if base else alias.name for alias in names}
        found &= modules
        return found or ({base} if base else set())

    graph: dict[str, set[str]] = {}
    for path in paths:
        name = module_name(path, package)
        own_package = name if path.stem == "__init__" else name.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                parts = node.module.split(".")
                if parts[0] == "smolgrpo":
                    imported |= resolve(".".join(parts[1:]), node.names)
            elif isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = own_package.split(".") if own_package else []
                base = base[: len(base) - (node.level - 1)]
                if node.module:
                    base.append(node.module)
                imported |= resolve(".".join(base), node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "smolgrpo" and len(parts) > 1:
                        imported.add(".".join(parts[1:]))
        graph[name] = (imported & modules) - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, ())):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def test_finder_sees_cycles_through_lazy_imports():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a module from a higher layer, as "importer -> imported"."""

    def layer(module: str) -> int:
        return LAYERS.index(module.split(".")[0])

    return sorted(
        f"{module} -> {imported}"
        for module, imports in graph.items()
        if module not in TOP
        for imported in imports
        if imported not in TOP and layer(imported) > layer(module)
    )


def test_the_graph_reads_every_import_form():
    graph = import_graph()
    trainer = graph["training.trainer"]
    assert {
        "models.fsdp",
        "runs.guards",
        "runs.checkpoint",
    } <= trainer  # `from smolgrpo.x import y`
    assert "evaluation.evaluate" in graph["training.periodic_eval"]  # inside a function
    assert "tasks.kinds" in graph["tasks"]  # a package's __init__ is scanned too
    assert {"tasks.gym", "tasks.files"} <= graph["tasks.kinds"]  # imports inside methods


def test_every_module_sits_in_a_layer():
    assert {module.split(".")[0] for module in import_graph()} - set(LAYERS) <= TOP


def test_lower_layers_never_import_higher_ones():
    assert layer_violations(import_graph()) == []


def test_the_layer_check_can_fail():
    assert layer_violations({"rewards.builtin": {"training.trainer"}, "cli.main": {"errors"}}) == [
        "rewards.builtin -> training.trainer"
    ]


def test_no_import_cycles():
    assert find_cycles(import_graph()) == []
