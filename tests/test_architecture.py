"""The package's shape: imports point down only (no cycle among hf_adapt's modules, counting
imports inside functions too), the layers of ../shared/STYLE.md hold, and the installed package
holds no benchmark harness."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hf_adapt"

# Top to bottom; a module may import modules of its own layer or below, never above.
LAYERS = [
    {"cli"},
    {"compare", "groupwise", "tune"},
    {"reports", "recipes", "recipes.full", "recipes.partial", "recipes.lora"},
    {"engine"},
    {"trainer", "outputs", "interrupts", "hardware", "controls", "strategies", "head_init", "hub", "cards", "caching",
     "export"},
    {"modeling", "data", "streaming", "optim", "pooling", "inference", "forgetting", "schedule"},
    {"config", "metrics", "errors", "probes"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def import_graph() -> dict[str, set[str]]:
    """module -> the hf_adapt modules it imports (every import statement, also inside functions)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py") if "metric_modules" not in p.parts}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(["hf_adapt", *package[: len(package) - node.level + 1], *([base] if base else [])])
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if not target.startswith("hf_adapt."):
                    continue
                target = target[len("hf_adapt."):]
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_hf_adapt() -> None:
    assert cycles(import_graph()) == []


def test_imports_point_down_the_layers() -> None:
    layer_of = {module: depth for depth, layer in enumerate(LAYERS) for module in layer}
    graph = import_graph()
    unplaced = sorted(m for m in graph if m not in layer_of and m != "__init__")
    assert unplaced == [], f"modules missing from LAYERS: {unplaced}"
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                    if m in layer_of and t in layer_of and layer_of[t] < layer_of[m])
    assert upward == []


def test_the_package_holds_no_benchmark_harness() -> None:
    from hf_adapt.cli import build_parser

    names = {p.stem for p in PACKAGE.rglob("*.py")}
    assert not [n for n in names if "bench" in n or "profile" in n]
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) == {"train", "eval", "predict", "export", "push", "forgetting", "compare", "groupwise",
                             "tune"}


def test_user_messages_name_no_repository_paths() -> None:
    """An installed package has no scripts/ folder: an error message must not send users there."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and "scripts/" in ast.unparse(node):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
