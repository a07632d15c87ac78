"""Every public name has a docstring, with a short example for classes and functions.

Public names are ``livepanel.__all__`` and each public module's ``__all__``.
Constants and type aliases carry an attribute docstring (the string literal
right after the assignment), which is what the API reference shows. The
``>>>`` examples among them run as doctests.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import itertools
import pkgutil
import re
from types import ModuleType
from typing import Any

import pytest

import livepanel
from tests.docs.markdown import DOCS

MODULES = sorted(
    name
    for info in pkgutil.walk_packages(livepanel.__path__, "livepanel.")
    if not (name := info.name).rsplit(".", 1)[-1].startswith("_")
)

# Gaps in modules that were being rewritten elsewhere when this test was written; each entry
# must still be a gap (so the list shrinks as they are filled), and nothing else may be one.
KNOWN_GAPS: set[str] = set()  # every public name has a docstring with an example


def module(name: str) -> ModuleType:
    return importlib.import_module(name)


def attribute_docstrings(mod: ModuleType) -> dict[str, str]:
    """``NAME = value`` followed by a string literal: what griffe and the reference show."""
    source = inspect.getsource(mod)
    found: dict[str, str] = {}
    body = ast.parse(source).body
    for node, after in itertools.pairwise(body):
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = after.value.value
    return found


def gaps_of(mod: ModuleType) -> list[str]:
    gaps = []
    documented_attributes = attribute_docstrings(mod)
    for name in getattr(mod, "__all__", ()):
        if name.startswith("__"):
            continue  # __version__
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if obj.__module__ != mod.__name__:
                continue  # re-exported: checked where it is defined
            doc = inspect.getdoc(obj) or ""
            if not doc:
                gaps.append(f"{mod.__name__}.{name}: no docstring")
            elif "Example" not in doc and ">>>" not in doc:
                gaps.append(f"{mod.__name__}.{name}: no example")
        elif name not in documented_attributes:
            source = inspect.getsource(mod)
            if re.search(rf"^{name}\b.*=", source, flags=re.M):
                gaps.append(f"{mod.__name__}.{name}: no attribute docstring")
    return gaps


@pytest.mark.parametrize("name", MODULES)
def test_public_names_have_docstrings_with_examples(name: str) -> None:
    """Each class and function in ``__all__`` has an example; each constant a docstring."""
    mod = module(name)
    assert mod.__doc__, f"{name} has no module docstring"
    gaps = set(gaps_of(mod))
    known = {gap for gap in KNOWN_GAPS if gap.startswith(name + ".")}
    assert gaps - known == set()
    assert known <= gaps, f"filled since, remove from KNOWN_GAPS: {sorted(known - gaps)}"


def test_the_package_face_exports_are_documented() -> None:
    """Every name of ``livepanel.__all__`` is in the API reference's table, and has a docstring."""
    table = (DOCS / "reference" / "index.md").read_text(encoding="utf-8")
    for name in livepanel.__all__:
        assert f"`{name}`" in table, f"docs/reference/index.md does not list {name}"
        if not name.startswith("__"):
            assert inspect.getdoc(getattr(livepanel, name)), name


def doctests() -> list[Any]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = []
    for name in MODULES:
        for test in finder.find(module(name), name):
            if test.examples:
                found.append(pytest.param(test, id=test.name))
    return found


@pytest.mark.parametrize("test", doctests())
def test_docstring_examples_run(test: doctest.DocTest) -> None:
    """The ``>>>`` examples of the docstrings give the output they show."""
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
