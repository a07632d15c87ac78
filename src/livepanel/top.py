"""``livepanel top``: a running endpoint's health and rates in a terminal, refreshed in place.

For an operator on a server without Grafana. It reads the URLs it is given,
each either a health check (``livepanel.health_app``: JSON) or a Prometheus
``/metrics`` page (``livepanel.metrics``), and redraws one screen every
``interval`` seconds with plain ANSI escapes; rates are the change between two
reads. Only the standard library: it runs wherever livepanel is installed.
Every value it read is printed through :func:`livepanel.terminal.printable`, as
``tail`` prints payloads: a health check or a metrics page (or whatever answers
at their address) cannot drive the terminal.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from livepanel.terminal import printable

__all__ = ["Reading", "parse_metrics", "read", "render", "top"]

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_COUNTERS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("published", "livepanel_events_published_total", {}),
    ("delivered", "livepanel_events_delivered_total", {}),
    ("dropped", "livepanel_events_dropped_total", {}),
    ("slow disconnects", "livepanel_slow_disconnects_total", {}),
    ("replays granted", "livepanel_replays_total", {"outcome": "granted"}),
    ("replays unavailable", "livepanel_replays_total", {"outcome": "unavailable"}),
)
_CLEAR_LINE = "\x1b[K"
_HOME = "\x1b[H"
_CLEAR_BELOW = "\x1b[J"
_CLEAR_SCREEN = "\x1b[2J"
_HIDE_CURSOR, _SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
_GREEN, _RED, _BOLD, _RESET = "\x1b[32m", "\x1b[31m", "\x1b[1m", "\x1b[0m"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Prometheus samples by name and sorted label pairs."""


def parse_metrics(text: str) -> Samples:
    """The samples of a Prometheus text page (comments and malformed lines skipped).

    Example::

        >>> parse_metrics('livepanel_replays_total{outcome="granted"} 3.0')
        {('livepanel_replays_total', (('outcome', 'granted'),)): 3.0}
    """
    samples: Samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None or line.startswith("#"):
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        labels = tuple(sorted(_LABEL.findall(match["labels"] or "")))
        samples[(match["name"], labels)] = value
    return samples


@dataclass
class Reading:
    """What one round of reads found: a health report, metric samples, errors by URL.

    Example::

        reading = read(["http://127.0.0.1:8000/healthz", "http://127.0.0.1:8000/metrics"])
        print(reading.health, reading.errors)
    """

    at: float
    health: dict[str, Any] | None = None
    health_status: int | None = None
    samples: Samples = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float | None:
        """One sample's value, ``None`` when the page had no such sample."""
        return self.samples.get((name, tuple(sorted(labels.items()))))


def read(urls: Sequence[str], timeout: float = 3.0) -> Reading:
    """Fetch every URL once: JSON answers are health reports, anything else metrics.

    Example::

        reading = read(["http://127.0.0.1:8000/healthz"])
        reading.health  # {"ok": True, "backend": "ok", ...}
    """
    reading = Reading(at=time.monotonic())
    for url in urls:
        try:
            status, kind, body = _fetch(url, timeout)
        except (OSError, ValueError) as exc:
            reading.errors[url] = _reason(exc)
            continue
        if "json" in kind:
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            if not isinstance(document, dict) or "ok" not in document or status not in (200, 503):
                reading.errors[url] = f"not a livepanel health report (HTTP {status})"
                continue
            reading.health = document
            reading.health_status = status
        else:
            reading.samples.update(parse_metrics(body))
    return reading


def _fetch(url: str, timeout: float) -> tuple[int, str, str]:
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"{url} is not an http:// or https:// URL")
    request = urllib.request.Request(url, headers={"Accept": "application/json, text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            kind = response.headers.get("content-type", "")
            return response.status, kind, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as refused:  # 503 from a health check still carries its report
        kind = refused.headers.get("content-type", "")
        if "json" not in kind:
            raise
        return refused.code, kind, refused.read().decode("utf-8", "replace")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def render(
    now: Reading, before: Reading | None, *, title: str = "livepanel top", color: bool = False
) -> list[str]:
    """The screen's lines for reading ``now``; rates against ``before`` when given.

    Example::

        >>> reading = Reading(at=0.0, health={"ok": True, "backend": "ok",
        ...     "readerLagSeconds": 0.0, "connections": 2, "draining": False})
        >>> render(reading, None)[2]
        'health      OK  backend ok  reader lag 0.000 s  connections 2  draining no'
    """

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    lines = [paint(printable(title), _BOLD), ""]
    health = now.health
    if health is not None:
        ok = health.get("ok") is True
        verdict = paint("OK" if ok else "NOT OK", _GREEN if ok else _RED)
        code = f" ({now.health_status})" if now.health_status is not None else ""
        lag = health.get("readerLagSeconds")
        lines.append(
            f"health      {verdict}{code}  backend {_text(health.get('backend'))}  "
            f"reader lag {_seconds(lag)}  connections {_text(health.get('connections'))}  "
            f"draining {'yes' if health.get('draining') else 'no'}"
        )
        lines.extend(_acks(health, paint))
    if now.samples:
        connections = now.value("livepanel_connections", transport="websocket")
        lag_metric = now.value("livepanel_backend_lag_seconds")
        if health is None:
            lines.append(f"connections {_number(connections)}  reader lag {_seconds(lag_metric)}")
        lines.append("")
        lines.append(f"{'':<22}{'total':>12}{'per second':>14}")
        rows = [(label, name, labels) for label, name, labels in _COUNTERS]
        statuses = sorted(
            dict(labels)["status"]
            for name, labels in now.samples
            if name == "livepanel_handshakes_total" and "status" in dict(labels)
        )
        rows += [
            (f"handshakes {printable(s)}", "livepanel_handshakes_total", {"status": s})
            for s in statuses
        ]
        elapsed = now.at - before.at if before is not None else 0.0
        for label, name, labels in rows:
            total = now.value(name, **labels)
            rate = "-"
            if before is not None and elapsed > 0 and total is not None:
                previous = before.value(name, **labels)
                if previous is not None:
                    rate = f"{max(0.0, total - previous) / elapsed:.1f}"
            lines.append(f"{label:<22}{_number(total):>12}{rate:>14}")
        quantiles = _quantiles(now.samples, "livepanel_delivery_seconds")
        if quantiles is not None:
            p50, p99 = quantiles
            lines.append("")
            lines.append(f"delivery    p50 <= {_seconds(p50)}  p99 <= {_seconds(p99)}")
        lag = _quantiles(now.samples, "livepanel_connection_lag_seconds")
        acking = now.value("livepanel_connection_lag_seconds_bucket", le="+Inf")
        if acking is not None:
            p50, p99 = lag if lag is not None else (0.0, 0.0)
            lines.append(
                f"ack lag     p50 <= {_seconds(p50)}  p99 <= {_seconds(p99)}  "
                f"acking {_number(acking)}"
            )
    for url, reason in now.errors.items():
        lines.append(paint(printable(f"{url}: {reason}"), _RED))
    if health is None and not now.samples and not now.errors:
        lines.append("nothing to show yet")
    return lines


def _acks(health: dict[str, Any], paint: Callable[[str, str], str]) -> list[str]:
    """The health report's dashboards line (how far the acking ones trail), and its reason."""
    lines = []
    acks = health.get("ackLag")
    if isinstance(acks, dict):
        ok = health.get("dashboards") == "ok"
        verdict = paint("ok" if ok else _text(health.get("dashboards")), _GREEN if ok else _RED)
        lines.append(
            f"dashboards  {verdict}  acking {_text(acks.get('acking'))}  "
            f"behind {_text(acks.get('behind'))} (over {_seconds(acks.get('limitSeconds'))})  "
            f"max lag {_seconds(acks.get('maxSeconds'))}"
        )
    reason = health.get("reason")
    if reason:
        lines.append(paint(f"reason      {_text(reason)}", _RED))
    return lines


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return f"{value:g}"  # fractions, and inf or nan from a page that says so


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{float(value):.3f} s"
    return _text(value)  # not a number: shown as it came, escaped


def _text(value: Any) -> str:
    """A value read from elsewhere, as the terminal may show it."""
    return printable(value if isinstance(value, str) else json.dumps(value))


def _quantiles(samples: Samples, name: str) -> tuple[float, float] | None:
    """Upper bounds of the 50th and 99th percentiles, from a histogram's cumulative buckets."""
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (sample, labels), count in samples.items()
        if sample == f"{name}_bucket" and "le" in dict(labels)
    )
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]

    def bound(q: float) -> float:
        for le, count in buckets:
            if count >= q * total:
                return le
        return math.inf

    return bound(0.5), bound(0.99)


def top(
    urls: Sequence[str],
    *,
    interval: float = 2.0,
    once: bool = False,
    out: TextIO | None = None,
    rounds: int | None = None,
) -> int:
    """Show ``urls`` every ``interval`` seconds until interrupted; return the exit status.

    Args:
        urls: health check and/or ``/metrics`` URLs of one process.
        interval: seconds between two reads.
        once: print one screen, without escape codes, and exit (1 when a URL could not
            be read as a health report or a metrics page).
        out: where to draw (stdout by default); colors and in-place refresh only on a
            terminal.
        rounds: stop after this many screens (``None``: until Ctrl-C).

    Example::

        top(["http://127.0.0.1:8000/healthz", "http://127.0.0.1:8000/metrics"], interval=1)
    """
    out = sys.stdout if out is None else out
    title = "livepanel top  " + "  ".join(urls)
    if once:
        reading = read(urls)
        out.write("\n".join(render(reading, None, title=title)) + "\n")
        out.flush()
        return 1 if reading.errors else 0
    tty = out.isatty()
    before: Reading | None = None
    shown = 0
    if tty:
        out.write(_HIDE_CURSOR + _CLEAR_SCREEN)
    try:
        while rounds is None or shown < rounds:
            reading = read(urls, timeout=max(1.0, interval))
            stamp = time.strftime("%H:%M:%S")
            lines = render(reading, before, title=f"{title}  {stamp}", color=tty)
            if tty:
                out.write(_HOME + "".join(f"{line}{_CLEAR_LINE}\n" for line in lines))
                out.write(_CLEAR_BELOW)
            else:
                out.write("\n".join(lines) + "\n\n")
            out.flush()
            before = reading
            shown += 1
            if rounds is None or shown < rounds:
                time.sleep(max(0.0, interval - (time.monotonic() - reading.at)))
    finally:
        if tty:
            out.write(_SHOW_CURSOR)
            out.flush()
    return 0
