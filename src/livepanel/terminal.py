"""What may reach a terminal: text from elsewhere with its control characters escaped.

``livepanel tail`` prints what dashboards receive and ``livepanel top`` what a
health check and a metrics page answered; neither is ours to trust. A value
written raw could move the cursor, retitle the window, clear the screen or hide
a line, so both print every such value through :func:`printable`.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

# what a terminal may act on (C0, DEL, C1: escape sequences, bells, carriage returns) and
# lone surrogates, which no terminal encoding can write
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1) and lone surrogates written as ``\\uXXXX``.

    What a payload holds cannot move the cursor, retitle the window or hide a line
    in the terminal that shows it; a JSON line stays valid JSON.

    Example::

        >>> printable("ok\\x1b]0;pwned\\x07 \\x9b2J")
        'ok\\\\u001b]0;pwned\\\\u0007 \\\\u009b2J'
    """
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
