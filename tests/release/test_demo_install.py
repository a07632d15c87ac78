"""``make demo`` installs what the demo needs, not the development set ``make test`` uses."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.docs.markdown import ROOT

MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def closure(name: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """Every distribution ``name[extras]`` pulls in, from the installed metadata."""
    seen: set[str] = set()
    todo = [(name, extras)]
    while todo:
        current, wanted = todo.pop()
        key = re.sub(r"[-_.]+", "-", current).lower()
        if key in seen and not wanted:
            continue
        seen.add(key)
        for text in metadata.requires(current) or []:
            requirement = Requirement(text)
            environments = [default_environment() | {"extra": e} for e in wanted or {""}]
            if requirement.marker is None or any(
                requirement.marker.evaluate(env) for env in environments
            ):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return seen


def recipe(target: str) -> str:
    """The lines of a Makefile target's recipe, and of the stamp it depends on."""
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", MAKEFILE, re.MULTILINE)
    assert match, f"no {target} target"
    return match.group(1)


def test_the_demo_extra_is_under_forty_packages() -> None:
    """livepanel[demo] with everything it depends on: fewer than 40 distributions."""
    packages = closure("livepanel", frozenset({"demo"}))
    assert "uvicorn" in packages
    assert len(packages) < 40, sorted(packages)


def test_make_demo_installs_the_demo_extra_and_make_test_the_whole_set() -> None:
    """make demo: livepanel[demo] through the pins; make test and make docs: [dev]."""
    demo_stamp = recipe("$(DEMO_STAMP)")
    assert "-e '.[demo]'" in demo_stamp
    assert "[dev]" not in demo_stamp
    assert "-c $(CONSTRAINTS)" in demo_stamp
    assert re.search(r"^demo: \$\(DEMO_STAMP\)$", MAKEFILE, re.MULTILINE)
    assert "-e '.[dev]'" in recipe("$(STAMP)")
    for target in ("pytest", "docs", "lint", "typecheck"):
        assert re.search(rf"^{target}: \$\(STAMP\)", MAKEFILE, re.MULTILINE), target
