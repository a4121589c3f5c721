"""codyd's modules form layers: no import cycle, not even one only type checkers follow."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "codyd"


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    names: dict[str, Path] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules ``name`` imports anywhere in it, ``if TYPE_CHECKING:`` included."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a import b`` names module a.b when there is one, else a's attribute.
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in known else base for t in targets]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]  # ``import a.b.c`` of a function c
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    known = set(names)
    return {name: imports_of(name, path, known) for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
    """Modules by layer: each imports only modules of lower layers; a cycle's are left over."""
    placed: dict[str, int] = {}
    remaining = set(graph)
    result: list[list[str]] = []
    while remaining:
        layer = sorted(n for n in remaining if graph[n] <= set(placed))
        if not layer:
            result.append([f"(in or above a cycle) {n}" for n in sorted(remaining)])
            break
        for name in layer:
            placed[name] = len(result)
        remaining -= set(layer)
        result.append(layer)
    return result


def describe(graph: dict[str, set[str]]) -> str:
    lines = ["codyd's layers, lowest first:"]
    for n, layer in enumerate(layers(graph)):
        lines.append(f"  {n}: {', '.join(layer)}")
    return "\n".join(lines)


def test_no_import_cycle() -> None:
    """No module of codyd imports, even under TYPE_CHECKING, one that imports it back."""
    graph = import_graph()
    found = cycles(graph)
    assert not found, f"import cycles: {found}\n{describe(graph)}"


def test_graph_sees_the_imports_that_matter() -> None:
    """The walk finds plain, from-, relative and TYPE_CHECKING imports (else it proves nothing)."""
    graph = import_graph()
    assert "codyd.runs.supervisor" in graph["codyd.daemon"]
    assert "codyd.runs.driver" in graph["codyd.runs.supervisor"]
    assert "codyd.runs.procs" in graph["codyd.runs.turn"]  # from codyd.runs import procs
    assert "codyd.runs.pipeline" in graph["codyd.runs.driver"]


def test_a_cycle_is_found_and_shown(tmp_path: Path) -> None:
    """A cycle, including one through TYPE_CHECKING, is reported with the layers."""
    graph = {
        "a": {"b"},
        "b": {"c"},
        "c": {"a"},
        "d": set(),
        "e": {"d"},
    }
    assert cycles(graph) == [["a", "b", "c"]]
    shown = describe(graph)
    assert "0: d" in shown and "1: e" in shown and "(in or above a cycle) a" in shown
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from codyd.daemon import X\n"
    )
    assert imports_of("codyd.rpc", module, {"codyd.daemon", "codyd.rpc"}) == {"codyd.daemon"}
