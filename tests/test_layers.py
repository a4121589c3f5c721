"""codyd's modules form layers: no import cycle, not even one only type checkers follow, and
no import that runs up the layers.

The layers, lowest first (a module may import its own layer and those below):

  0 base     the package root, errors, protocol, paths, checks, redact, spec, config, logging,
             manpage, systemd: no part of the daemon's machinery
  1 model    codyd.model: plain data (records, states, outcomes, events, the state layout)
  2 store    codyd.store, codyd.telemetry, codyd.agents
  3 mirror   codyd.mirror, codyd.leases, codyd.notify: Redis and webhooks, over the store
  4 runs     codyd.runs
  5 serve    codyd.rpc, codyd.server, codyd.http
  6 daemon   codyd.daemon
  7 cli      codyd.cli, codyd.__main__

codyctl stands apart: it may import only codyd's root (its version), codyd.model,
codyd.protocol, codyd.paths, codyd.errors and codyd.manpage.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "codyd"

# Each module's layer is that of its longest listed prefix; a module none names fails the test.
LAYERS: dict[str, int] = {
    **dict.fromkeys(
        [
            "codyd",
            "codyd.errors",
            "codyd.protocol",
            "codyd.paths",
            "codyd.checks",
            "codyd.redact",
            "codyd.spec",
            "codyd.config",
            "codyd.logging",
            "codyd.manpage",
            "codyd.systemd",
        ],
        0,
    ),
    "codyd.model": 1,
    **dict.fromkeys(["codyd.store", "codyd.telemetry", "codyd.agents"], 2),
    **dict.fromkeys(["codyd.mirror", "codyd.leases", "codyd.notify"], 3),
    "codyd.runs": 4,
    **dict.fromkeys(["codyd.rpc", "codyd.server", "codyd.http"], 5),
    "codyd.daemon": 6,
    **dict.fromkeys(["codyd.cli", "codyd.__main__"], 7),
}
CODYCTL_MAY_IMPORT = (
    "codyd",
    "codyd.model",
    "codyd.protocol",
    "codyd.paths",
    "codyd.errors",
    "codyd.manpage",
)


def module_names(package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    names: dict[str, Path] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
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


def layer_of(name: str, table: dict[str, int]) -> int | None:
    """The layer of the longest prefix of ``name`` (by whole dotted parts) the table lists.

    The package root counts only for itself: a new module must be given its layer.
    """
    prefix = name
    while prefix:
        if prefix in table and (prefix != PACKAGE or prefix == name):
            return table[prefix]
        prefix = prefix.rpartition(".")[0]
    return None


def upward_imports(graph: dict[str, set[str]], table: dict[str, int]) -> list[str]:
    """Every import of a module in a higher layer than the importer's, and every unplaced module."""
    found = []
    for name in sorted(graph):
        own = layer_of(name, table)
        if own is None:
            found.append(f"{name} has no layer")
            continue
        for target in sorted(graph[name]):
            theirs = layer_of(target, table)
            if theirs is not None and theirs > own:
                found.append(f"{name} (layer {own}) imports {target} (layer {theirs})")
    return found


def is_allowed(target: str, allowed: tuple[str, ...]) -> bool:
    """``codyd`` allows only the root itself; any other entry allows its whole subtree."""
    return any(target == a or (a != PACKAGE and target.startswith(f"{a}.")) for a in allowed)


def codyctl_imports_of_codyd() -> dict[str, set[str]]:
    """What each codyctl module imports from codyd (``if TYPE_CHECKING:`` and local imports too)."""
    known = set(module_names())
    return {
        name: imports_of(name, path, known | {name})
        for name, path in module_names("codyctl").items()
    }


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


def test_no_import_runs_up_the_layers() -> None:
    """Every module has a layer and imports only its own layer and those below."""
    graph = import_graph()
    found = upward_imports(graph, LAYERS)
    assert not found, "\n".join(found) + f"\n{describe(graph)}"


def test_codyctl_imports_only_the_shared_parts_of_codyd() -> None:
    """codyctl uses codyd's data, protocol and errors, never the daemon's machinery."""
    imported = codyctl_imports_of_codyd()
    assert "codyd.model.state" in imported["codyctl.cli"]  # else the walk proves nothing
    found = [
        f"{name} imports {target}"
        for name, targets in sorted(imported.items())
        for target in sorted(targets)
        if target.startswith(PACKAGE) and not is_allowed(target, CODYCTL_MAY_IMPORT)
    ]
    assert not found, found


def test_an_upward_import_is_found() -> None:
    """A lower layer importing a higher one, or a module outside every layer, is reported."""
    table = {"low": 0, "high": 1}
    graph = {"low": {"high.part"}, "high.part": {"low"}, "stray": set()}
    assert upward_imports(graph, table) == [
        "low (layer 0) imports high.part (layer 1)",
        "stray has no layer",
    ]
    assert layer_of("codyd.runs.turn", LAYERS) == 4 and layer_of("codyd.model", LAYERS) == 1
    assert layer_of("codyd.store", LAYERS) == 2 and layer_of("codyd.storex", LAYERS) is None
    assert layer_of("codyd", LAYERS) == 0
    assert not is_allowed("codyd.store", CODYCTL_MAY_IMPORT)
    assert is_allowed("codyd", CODYCTL_MAY_IMPORT)
    assert is_allowed("codyd.model.state", CODYCTL_MAY_IMPORT)
