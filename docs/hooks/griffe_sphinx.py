"""A griffe extension: the reST bits of livepanel's docstrings, rendered by mkdocstrings.

livepanel's docstrings are written for ``help()`` and IDEs as much as for the
site: Google-style sections, Sphinx cross-reference roles (``:class:`Event```)
and ``::`` literal blocks. This turns, before mkdocstrings renders them,

- a role into a link to the API reference (``[`Event`][livepanel.events.Event]``)
  when its target is documented, else into inline code;
- ``Example::`` plus an indented block into an ``Example:`` admonition, and
  any other ``text::`` plus an indented block into ``text:`` and a fenced block
  (``pycon`` for ``>>>`` sessions, ``console`` for ``$`` prompts, else ``python``).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|data|exc|obj):`(~?)([\w.]+?)(\(\))?`")
_SECTION = re.compile(r"^(Examples?)::$")


class SphinxRoles(griffe.Extension):
    """Rewrites roles and literal blocks of every docstring of the loaded packages.

    Args:
        documented: the modules the API reference renders; a role links only
            to a public object of these (anything else would be a broken link).
    """

    def __init__(self, documented: list[str] | None = None) -> None:
        super().__init__()
        self.documented = set(documented or ())

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.is_alias or obj.docstring is None:
            return
        text = _literal_blocks(obj.docstring.value)
        obj.docstring.value = _ROLE.sub(lambda m: self._link(m, obj, loader), text)

    def _link(self, match: re.Match[str], obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
        role, short, target, _ = match.groups()
        shown = target.rsplit(".", 1)[-1] if short else target
        if role in ("func", "meth"):
            shown += "()"
        found = _resolve(target, obj, loader)
        if found is not None and self._rendered(found):
            return f"[`{shown}`][{found.path}]"
        return f"`{shown}`"

    def _rendered(self, obj: griffe.Object | griffe.Alias) -> bool:
        """Whether the API reference has a heading for ``obj``."""
        if obj.is_module:
            return obj.path in self.documented
        parent = obj.parent
        if parent is None or not obj.is_public or not self._rendered(parent):
            return False
        target = obj.final_target if obj.is_alias else obj
        return target.docstring is not None or target.is_class


def _resolve(
    target: str, obj: griffe.Object, loader: griffe.GriffeLoader
) -> griffe.Object | griffe.Alias | None:
    """The documented object ``target`` names, seen from ``obj`` (as Sphinx looks it up)."""
    scopes: list[str] = [""]
    scope: griffe.Object | None = obj
    while scope is not None:
        scopes.insert(0, scope.path + ".")
        scope = scope.parent
    for prefix in scopes:
        try:
            found = loader.modules_collection[prefix + target]
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        return found
    return None


def _literal_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.rstrip()
        if not stripped.endswith("::") or stripped.lstrip().startswith((">>>", "$")):
            out.append(line)
            index += 1
            continue
        indent = len(line) - len(line.lstrip())
        body: list[str] = []
        end = index + 1
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
        ):
            body.append(lines[end])
            end += 1
        while body and not body[-1].strip():
            body.pop()
            end -= 1
        code = textwrap.dedent("\n".join(body)).strip("\n")
        if not code:
            out.append(line)
            index += 1
            continue
        pad = " " * indent
        head = stripped.lstrip()
        if _SECTION.match(head):
            out.append(f"{pad}{head[:-1]}")
            out.extend(_fence(code, pad + "    "))  # griffe renders it as an admonition
        else:
            out.append(f"{pad}{head[:-1]}")
            out.append("")
            out.extend(_fence(code, pad))
        index = end
    return "\n".join(out)


def _fence(code: str, pad: str) -> list[str]:
    first = code.lstrip().split("\n", 1)[0]
    lang = "pycon" if first.startswith(">>>") else "console" if first.startswith("$ ") else "python"
    return [f"{pad}```{lang}", *(pad + c if c else "" for c in code.splitlines()), f"{pad}```"]
