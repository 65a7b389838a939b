"""The package's rooms follow the data flow (docs/architecture.md): no import cycle, no library module
importing the test helpers or the command line, no module over 600 lines, and the stage rules.

Imports are read with ``ast`` from the source (every import, also those inside functions and under
TYPE_CHECKING: they shape the design as much as the top-level ones)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dreamrelation"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The package module an imported dotted name lives in (None outside the package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for name in names:
            target = _target(name)
            # a module's own parent packages are not a dependency of it (importing it runs them)
            if (
                target
                and target != module
                and not module.startswith(target + ".")
                and target != "dreamrelation"
            ):
                found.add(target)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    assert _cycles(GRAPH) == []


def test_library_modules_import_neither_the_test_helpers_nor_the_command_line() -> None:
    library = [m for m in GRAPH if _room(m) not in ("cli", "testing", "__main__")]
    bad = sorted(
        (module, target)
        for module in library
        for target in GRAPH[module]
        if _room(target) in ("cli", "testing")
    )
    assert bad == []


def test_no_module_is_over_600_lines() -> None:
    sizes = {m: len(p.read_text("utf-8").splitlines()) for m, p in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize(
    ("room", "must_not_reach"),
    [
        # generation comes before evaluation in the data flow
        ("generation", ("evaluation", "benchmark", "toyworld", "analysis")),
        # the generic runner plugs the toy world in through a prompt-set hook, never by import
        ("benchmark", ("toyworld",)),
        ("data", ("training", "generation", "evaluation", "benchmark", "toyworld")),
        ("backbones", ("training", "generation", "evaluation", "benchmark", "toyworld", "cache")),
    ],
)
def test_a_stage_does_not_import_a_later_one(room: str, must_not_reach: tuple[str, ...]) -> None:
    bad = sorted(
        (module, target)
        for module in GRAPH
        if _room(module) == room
        for target in GRAPH[module]
        if _room(target) in must_not_reach
    )
    assert bad == []


def test_reading_a_config_imports_neither_torch_nor_peft() -> None:
    code = (
        "import sys, dreamrelation.config, dreamrelation.training.adapter_config; "
        "print(sorted(m for m in ('torch', 'peft', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
