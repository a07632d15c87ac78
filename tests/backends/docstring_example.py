"""The complete backend in ``livepanel.backends.base.Backend``'s docstring, as a class."""

from __future__ import annotations

import textwrap
from typing import Any

from livepanel.backends.base import Backend

__all__ = ["docstring_example"]


def docstring_example() -> dict[str, Any]:
    """Run the docstring's example; return its namespace (``ListBackend``, ``broadcaster``)."""
    doc = Backend.__doc__ or ""
    _, marker, body = doc.partition("::\n")
    assert marker, "Backend's docstring has no example block"
    lines = []
    for line in body.splitlines():
        if line.strip() and not line.startswith(" " * 8):
            break  # the block ends where the indentation does
        lines.append(line)
    namespace: dict[str, Any] = {}
    exec(compile(textwrap.dedent("\n".join(lines)), "Backend.__doc__", "exec"), namespace)
    return namespace
