"""The findings of ``livepanel doctor`` and what its checks share."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from livepanel.client.endpoint import Endpoint
from livepanel.client.link import open_socket
from livepanel.doctor._http import (
    Answer,
    read_body,
    read_head,
    write_request,
)

Level = Literal["ok", "warn", "FAIL"]
"""How a finding stands: ``"FAIL"`` makes ``livepanel doctor`` exit 1."""

FOREIGN_ORIGIN = "https://doctor.livepanel.invalid"
"""The ``Origin`` a handshake is sent from to check that other sites are refused."""
MAX_WATCH = 120.0
"""The longest the idle connection and the event stream are watched, in seconds."""
CLOCK_TOLERANCE = 2.0
"""Seconds of clock skew (beyond the round trip) that count as a finding."""
NGINX_UPGRADE_FIX = (
    "pass the upgrade on: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
    "proxy_set_header Connection $connection_upgrade (docs/deployment.md)"
)

BUFFERING_FIX = (
    "stop the proxy buffering text/event-stream (nginx: proxy_buffering off, and do not "
    "ignore X-Accel-Buffering)"
)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One line of the report: a check's name, how it stands, what was seen, the fix.

    Example::

        >>> print(Finding("tls", "warn", "plain http", "serve it over TLS").line())
        warn  tls          plain http; fix: serve it over TLS
    """

    check: str
    level: Level
    message: str
    fix: str = ""

    def line(self) -> str:
        """The finding as the report prints it."""
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{self.level:<4}  {self.check:<11}  {self.message}{fix}"


def report(findings: Iterable[Finding]) -> tuple[list[str], int]:
    """The report's lines and the exit status: 0 when no finding failed, else 1.

    Example::

        lines, status = report(await diagnose("https://panel.example.com/ws"))
    """
    findings = list(findings)
    failed = sum(f.level == "FAIL" for f in findings)
    lines = [f.line() for f in findings]
    lines.append(f"{len(findings)} checks, {failed} failed" if failed else "all checks hold")
    return lines, 1 if failed else 0


class Probe:
    """What every check shares: the endpoint, the timeout, the findings so far."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.findings: list[Finding] = []
        self.heartbeat: float | None = None
        self.welcomed = asyncio.Event()  # set once welcome told the heartbeat

    def add(self, check: str, level: Level, message: str, fix: str = "") -> None:
        self.findings.append(Finding(check, level, message, fix))

    @property
    def http_url(self) -> str:
        scheme = "https" if self.endpoint.ssl is not None else "http"
        return f"{scheme}://{self.endpoint.host_header}{self.endpoint.path}"

    async def _get(self, path: str, extra: Iterable[tuple[str, str]] = ()) -> Answer:
        endpoint = self.endpoint
        writer: asyncio.StreamWriter | None = None

        async def exchange() -> Answer:
            nonlocal writer
            reader, writer = await open_socket(endpoint)
            sent = time.time()
            headers = [*endpoint.headers, *extra, ("Connection", "close")]
            write_request(writer, endpoint.host_header, path, headers)
            status, fields = await read_head(reader)
            answer = Answer(status, fields, sent_at=sent, received_at=time.time())
            answer.peercert = writer.get_extra_info("peercert")
            answer.body = await read_body(reader, fields)
            return answer

        try:
            return await asyncio.wait_for(exchange(), self.timeout)
        finally:
            if writer is not None:
                writer.transport.abort()

    # ------------------------------------------------------------------ clock

    def _clock_from_welcome(self, frame: dict[str, Any], sent: float, received: float) -> None:
        try:
            stamp = datetime.fromisoformat(str(frame.get("timestamp")).replace("Z", "+00:00"))
            server = stamp.timestamp()
        except (ValueError, OverflowError):
            return
        self._clock(server, sent, received, "welcome's timestamp")

    def _clock_from_date(self, answer: Answer) -> None:
        try:
            server = parsedate_to_datetime(answer.headers.get("date", "")).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        # a Date header has whole seconds: the server's reading lies within the second after
        self._clock(server, answer.sent_at - 1.0, answer.received_at, "Date header")

    def _clock(self, server: float, sent: float, received: float, source: str) -> None:
        self.findings = [f for f in self.findings if f.check != "clock"]  # the finer one wins
        if server < sent - CLOCK_TOLERANCE:
            skew, level = sent - server, "FAIL"
            message = f"the server's clock is {skew:.1f}s behind this machine's ({source})"
        elif server > received + CLOCK_TOLERANCE:
            skew, level = server - received, "FAIL"
            message = f"the server's clock is {skew:.1f}s ahead of this machine's ({source})"
        else:
            level, message = "ok", f"the server's clock agrees with this machine's ({source})"
        fix = "synchronise the clocks (NTP: chrony or systemd-timesyncd)" if level != "ok" else ""
        self.add("clock", "FAIL" if level == "FAIL" else "ok", message, fix)
