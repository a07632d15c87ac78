"""The layout's rules, read from the source: dependencies point one way, nobody reaches past
the backend contract, and no module or class grows past what one reader holds in mind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "livepanel"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 350


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``static/`` holds no Python)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules ``name`` imports: at the top, under TYPE_CHECKING or in a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                targets.add(candidate if candidate in known else base)
    return {t for t in targets if t in known and t != name}


def cycles() -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    known = modules()
    graph = {name: imported(name, path, set(known)) for name, path in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle_inside_the_package() -> None:
    """No two modules of livepanel import each other, directly or around a circle, even under
    TYPE_CHECKING or inside a function."""
    assert cycles() == []


def test_the_cycle_finder_sees_a_type_checking_import(tmp_path: Path) -> None:
    """The check itself: an import under TYPE_CHECKING counts as an arrow."""
    path = tmp_path / "m.py"
    path.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from livepanel.hub import Hub\n"
    )
    assert imported("livepanel.m", path, {"livepanel.hub", "livepanel.m"}) == {"livepanel.hub"}


def reaches_past_the_backend(tree: ast.AST) -> list[str]:
    """Private names of a backend, probes of one, and sys.modules look-ups, where they occur."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = ast.unparse(node.value)
            if node.attr == "modules" and owner == "sys":
                found.append(f"line {node.lineno}: sys.modules")
            elif (
                "backend" in owner.lower()
                and node.attr.startswith("_")
                and not node.attr.endswith("__")
            ):
                found.append(f"line {node.lineno}: {owner}.{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("hasattr", "getattr")
            and node.args
        ):
            probed = ast.unparse(node.args[0])
            if "backend" in probed.lower():
                found.append(f"line {node.lineno}: {node.func.id}({probed}, ...)")
    return found


def test_nothing_outside_the_backends_reaches_past_their_contract() -> None:
    """Outside livepanel.backends, no private name of a backend, no hasattr/getattr probe of
    one, no sys.modules: features use the declared capabilities."""
    offenders = {}
    for name, path in modules().items():
        if name == "livepanel.backends" or name.startswith("livepanel.backends."):
            continue
        found = reaches_past_the_backend(ast.parse(path.read_text(encoding="utf-8")))
        if found:
            offenders[name] = found
    assert offenders == {}


def test_the_contract_check_catches_a_probe() -> None:
    """The check itself: each kind of reach is reported."""
    source = (
        "import sys\n"
        "sys.modules.get('x')\n"
        "broadcaster.backend._require_client()\n"
        "hasattr(backend, 'reader_status')\n"
    )
    assert len(reaches_past_the_backend(ast.parse(source))) == 3


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_or_class_is_too_long(name: str) -> None:
    """At most 600 lines a module and 350 a class: one job each."""
    path = modules()[name]
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{name}: {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= MAX_CLASS_LINES, f"{name}.{node.name}: {length} lines"
