"""The import graph has layers only: flows -> tasks -> stages -> library, no circle, no stage-to-stage import.

Every import counts, at module level or inside a function (a function-level import hides a circle, it
does not remove it). Run ``python tests/test_layers.py`` to print the graph by layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cutswap", "tasks", "flows")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The project module an import names (``a.b.c`` may be a name inside module ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        me = _module_name(path)
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for name in names:
                target = _resolve(name.strip("."), modules)
                if target and target != me:
                    found.add(target)
        graph[me] = found
    return graph


def external_imports(package: str) -> set[str]:
    """Top-level names of the third-party modules a package imports."""
    out = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                out.add(node.module.split(".")[0])
    return out


def layer(module: str) -> int:
    if module.startswith("flows"):
        return 3
    if module.startswith("tasks"):
        return 2
    if module.startswith("cutswap.pipeline.stages"):
        return 1
    return 0


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_imports_point_down_the_layers_only():
    graph = import_graph()
    upward = [(a, b) for a, targets in graph.items() for b in targets if layer(b) > layer(a)]
    assert not upward, f"imports against the layers: {upward}"


#: The library's two floors: the method and what it needs (datasets, training, scoring), plain arguments in
#: and out; and what makes it a benchmark and a product (settings, stores, the cluster, reports, experiment
#: trackers, the terminal, deployment). ``cutswap``, ``cutswap.errors``, ``cutswap.atomic`` and
#: ``cutswap.roots`` (files and objects under a folder or a URL: a training checkpoint is one, a store's
#: chunks are others), with ``cutswap.stalls`` (what roots says when object storage stops answering), serve
#: both.
CORE = ("cutswap.data", "cutswap.method", "cutswap.learn", "cutswap.score")
OUTER = ("cutswap.pipeline", "cutswap.report", "cutswap.track", "cutswap.deploy", "cutswap.app")


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_core_never_imports_the_pipeline_report_deploy_or_app():
    graph = import_graph()
    leaks = [(a, b) for a, targets in graph.items() if _in(a, CORE) for b in targets if _in(b, OUTER)]
    assert not leaks, f"core modules importing outer ones: {leaks}"
    assert {m for m in graph if _in(m, CORE)} and {m for m in graph if _in(m, OUTER)}  # both floors seen
    floors = {m for m in graph if m.startswith("cutswap.")} - {m for m in graph if _in(m, CORE + OUTER)}
    assert floors == {"cutswap.errors", "cutswap.atomic", "cutswap.roots", "cutswap.stalls"}, (
        floors
    )  # every other module has its floor


def test_no_stage_imports_another_stage():
    graph = import_graph()
    stages = {m for m in graph if m.startswith("cutswap.pipeline.stages.")}
    sideways = [(a, b) for a in stages for b in graph[a] if b in stages]
    assert not sideways, f"stage-to-stage imports: {sideways}"


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]  # the detector itself works


def test_the_library_never_imports_prefect():
    assert "prefect" not in external_imports("cutswap")
    assert "prefect" in external_imports("tasks")  # the check sees imports at all


def _floor(module: str) -> str:
    return "core" if _in(module, CORE) else "outer" if _in(module, OUTER) else "base"


if __name__ == "__main__":
    graph = import_graph()
    sections = [(3, None, "flows"), (2, None, "tasks"), (1, None, "stages")]
    sections += [
        (0, "outer", "library, outer floor"),
        (0, "core", "library, core"),
        (0, "base", "library, base"),
    ]
    for level, floor, title in sections:
        print(f"{title}:")
        for module in sorted(m for m in graph if layer(m) == level and (floor is None or _floor(m) == floor)):
            targets = sorted(graph[module], key=lambda t: (-layer(t), t))
            print(f"  {module} -> {', '.join(targets) or '(nothing of ours)'}")
    core_leaks = [(a, b) for a in graph if _in(a, CORE) for b in graph[a] if _in(b, OUTER)]
    print("circles:", _cycles(graph) or "none")
    print("core -> outer imports:", core_leaks or "none")
