"""Reading the docs as a test sees them: fenced blocks, snippet includes and shell commands."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")
_INCLUDE = re.compile(r"""^--8<--\s+["'](?P<path>[^"']+)["']\s*$""")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def include(self) -> str | None:
        """The file a ``--8<-- "path"`` block includes, or ``None`` for literal code."""
        lines = [line for line in self.code.splitlines() if line.strip()]
        if len(lines) == 1 and (match := _INCLUDE.match(lines[0].strip())):
            return match["path"]
        return None


def pages() -> list[Path]:
    """Every Markdown page the site or the repository shows: docs/**/*.md and README.md."""
    return [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in order (nested fences are not used in these docs)."""
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        lang = opening["info"].strip().split(" ")[0].split("{")[0].strip().lower()
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not re.match(
            rf"^{re.escape(indent)}{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]
        ):
            line = lines[end]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page}:{index + 1}: unclosed code fence")
        found.append(Block(page, index + 1, lang, "\n".join(body) + "\n"))
        index = end + 1
    return found


@dataclass(frozen=True)
class Command:
    """One simple command of a shell line: environment assignments, then argv."""

    env: dict[str, str]
    argv: list[str]
    source: str


def shell_lines(code: str) -> list[str]:
    """The command lines of a console block, continuations joined.

    A block with ``$ `` prompts holds commands on the prompt lines only (the
    rest is output); a block without prompts is all commands. Comments go.
    """
    raw = code.splitlines()
    prompted = any(line.startswith("$ ") for line in raw)
    commands: list[str] = []
    current: str | None = None
    for line in raw:
        if current is not None:
            current += " " + line.strip()
        elif prompted:
            if not line.startswith("$ "):
                continue
            current = line[2:]
        else:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            current = line
        if current.endswith("\\"):
            current = current[:-1]
            continue
        commands.append(current.strip())
        current = None
    assert current is None, f"a continued line never ends: {current!r}"
    return commands


def simple_commands(line: str) -> list[Command]:
    """Split a shell line at ``|``, ``&&``, ``||`` and ``;`` into commands (comments dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    commands: list[Command] = []
    words: list[str] = []
    redirect = False
    for token in [*tokens, ";"]:
        if redirect:  # the file a redirection names is no argument of the command
            redirect = False
            continue
        if token in (">", ">>", "<", "2>"):
            redirect = True
            continue
        if token in ("|", "||", "&&", ";", "&"):
            if words:
                env: dict[str, str] = {}
                while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
                    name, _, value = words.pop(0).partition("=")
                    env[name] = value
                commands.append(Command(env, words, line))
            words = []
        else:
            words.append(token)
    return commands
