"""Print the lowest version of each runtime dependency that pyproject.toml admits, pinned.

``make lock`` resolves the lowest-versions test environment from these pins
(``constraints/lowest.txt``): every ``>=`` floor of ``[project].dependencies``
and of the runtime extras below is a version some run has passed on.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["RUNTIME_EXTRAS", "floors", "off_the_floor"]

RUNTIME_EXTRAS = ("redis", "metrics", "otel", "demo")
"""The extras a user installs; dev, bench and docs tooling are pinned in dev.txt instead."""

_PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"
_FLOOR = re.compile(r'"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][^",<; ]*)')


def floors(text: str) -> dict[str, str]:
    """``{name: lowest version}`` for the runtime requirements in a pyproject.toml's text.

    Example::

        floors('[project]\\ndependencies = ["wsproto>=1.2"]\\n')  # {"wsproto": "1.2"}
    """
    found: dict[str, str] = {}
    section, key = "", ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith('["'):
            section, key = stripped, ""
            continue
        if "=" in stripped and not stripped.startswith('"'):
            key = stripped.partition("=")[0].strip()
        wanted = (section, key) == ("[project]", "dependencies") or (
            section == "[project.optional-dependencies]" and key in RUNTIME_EXTRAS
        )
        if wanted:
            for name, version in _FLOOR.findall(stripped):
                found[name.lower()] = version
    return found


def _release(version: str) -> tuple[int, ...]:
    """``"1.2"`` and ``"1.2.0"`` alike: the release numbers, trailing zeros dropped."""
    numbers = [int(part) for part in re.findall(r"\d+", version.split("+")[0])[:4]]
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def off_the_floor(wanted: dict[str, str]) -> list[str]:
    """One line per floor that the running interpreter does not have installed exactly.

    Example::

        off_the_floor({"wsproto": "1.2"})  # [] in the lowest-versions environment
    """
    problems = []
    for name, version in wanted.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed, the floor is {version}")
            continue
        if _release(installed) != _release(version):
            problems.append(f"{name}: {installed} installed, the floor is {version}")
    return problems


if __name__ == "__main__":
    found = floors(_PYPROJECT.read_text())
    if sys.argv[1:] == ["--check"]:
        lines = off_the_floor(found)
        for line in lines:
            print(f"not the floor: {line} (after moving a floor: make lock)", file=sys.stderr)
        sys.exit(1 if lines else 0)
    sys.stdout.write("".join(f"{name}=={version}\n" for name, version in found.items()))
