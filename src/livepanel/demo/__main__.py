"""``python -m livepanel.demo [OPTIONS]``: ``livepanel demo``, with the same parser and flags."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from livepanel.cli import main as cli_main

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``livepanel demo`` with ``argv`` (``sys.argv[1:]`` when ``None``); the exit status."""
    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
