"""``livepanel doctor URL``: check a deployment from the outside, one finding per line.

Every probe goes over the network as a dashboard's would, through whatever
proxy stands in front of the application: a plain ``GET`` (livepanel answers
426 once every check of a handshake passed), the same URL with and without its
trailing slash, a WebSocket handshake offering ``permessage-deflate`` (through
the client's own :class:`~livepanel.client.wire.ClientWire`), the connection
left idle for two heartbeat intervals, a Server-Sent Events stream watched for
a heartbeat, a handshake from a foreign ``Origin``, and the server's clock.
Each step is bounded by ``timeout``; the idle watch by two heartbeat intervals
(at most :data:`MAX_WATCH` seconds). The findings and their fixes are
described in ``docs/staying-live.md``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import ssl as ssl_module
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from livepanel.client.endpoint import REDIRECTS, Endpoint, refusal_reason
from livepanel.client.link import READ_SIZE, open_socket
from livepanel.client.wire import Accepted, ClientWire, Closed, FrameReceived, Rejected

__all__ = ["FOREIGN_ORIGIN", "MAX_WATCH", "Finding", "Level", "diagnose", "report"]

Level = Literal["ok", "warn", "FAIL"]
"""How a finding stands: ``"FAIL"`` makes ``livepanel doctor`` exit 1."""

FOREIGN_ORIGIN = "https://doctor.livepanel.invalid"
"""The ``Origin`` a handshake is sent from to check that other sites are refused."""
MAX_WATCH = 120.0
"""The longest the idle connection and the event stream are watched, in seconds."""
CLOCK_TOLERANCE = 2.0
"""Seconds of clock skew (beyond the round trip) that count as a finding."""
_MAX_HEADERS = 100
_MAX_BODY = 65536
_NGINX_UPGRADE = (
    "pass the upgrade on: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
    "proxy_set_header Connection $connection_upgrade (docs/deployment.md)"
)

_BUFFERING_FIX = (
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


@dataclasses.dataclass
class _Answer:
    """A plain HTTP answer: status, headers (names lowercased), the start of its body."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    sent_at: float = 0.0
    received_at: float = 0.0
    peercert: dict[str, Any] | None = None


async def diagnose(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
    ssl: ssl_module.SSLContext | None = None,
) -> list[Finding]:
    """Check the livepanel endpoint at ``url`` from the outside; one :class:`Finding` each.

    Args:
        url: ``https://host/ws`` or ``wss://host/ws`` (``http``/``ws`` for plain text).
        username: Basic Auth user name (``None``: no credentials).
        password: its password.
        timeout: seconds each network step may take.
        ssl: the TLS context (default: the system's CAs).

    Raises:
        ValueError: not an http(s) or ws(s) URL, or ``timeout`` not > 0.

    Example::

        findings = await diagnose("https://panel.example.com/ws", username="admin", password=pw)
        print("\\n".join(f.line() for f in findings))
    """
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError("timeout must be a number of seconds > 0")
    endpoint = Endpoint.parse(
        _ws_url(url),
        username=username,
        password=password,
        ssl=ssl if _ws_url(url).lower().startswith("wss:") else None,
    )
    return await _Doctor(endpoint, timeout).run()


def _ws_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    mapped = {"http": "ws", "https": "wss"}.get(scheme.lower())
    return f"{mapped}{sep}{rest}" if mapped and sep else url


class _Doctor:
    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.findings: list[Finding] = []
        self.heartbeat: float | None = None

    def add(self, check: str, level: Level, message: str, fix: str = "") -> None:
        self.findings.append(Finding(check, level, message, fix))

    @property
    def http_url(self) -> str:
        scheme = "https" if self.endpoint.ssl is not None else "http"
        return f"{scheme}://{self.endpoint.host_header}{self.endpoint.path}"

    async def run(self) -> list[Finding]:
        answer = await self._endpoint_check()
        if answer is None:
            return self.findings
        self._clock_from_date(answer)
        upgrade = asyncio.ensure_future(self._websocket_checks())
        others = await asyncio.gather(self._slash_check(), self._origin_check())
        del others
        await upgrade
        await self._stream_check(upgraded=upgrade.result())
        order = ["tls", "endpoint", "slash", "upgrade", "compression", "heartbeat", "stream"]
        order += ["origin", "clock"]
        self.findings.sort(key=lambda f: order.index(f.check) if f.check in order else 99)
        return self.findings

    # ------------------------------------------------------------------ plain HTTP

    async def _get(self, path: str, extra: Iterable[tuple[str, str]] = ()) -> _Answer:
        endpoint = self.endpoint
        writer: asyncio.StreamWriter | None = None

        async def exchange() -> _Answer:
            nonlocal writer
            reader, writer = await open_socket(endpoint)
            sent = time.time()
            headers = [*endpoint.headers, *extra, ("Connection", "close")]
            _write_request(writer, endpoint.host_header, path, headers)
            status, fields = await _read_head(reader)
            answer = _Answer(status, fields, sent_at=sent, received_at=time.time())
            answer.peercert = writer.get_extra_info("peercert")
            answer.body = await _read_body(reader, fields)
            return answer

        try:
            return await asyncio.wait_for(exchange(), self.timeout)
        finally:
            if writer is not None:
                writer.transport.abort()

    async def _endpoint_check(self) -> _Answer | None:
        target = self.endpoint.target(())
        try:
            answer = await self._get(target)
        except ssl_module.SSLCertVerificationError as exc:
            self.add(
                "tls",
                "FAIL",
                f"the certificate of {self.endpoint.host} is not valid: {exc.verify_message}",
                f"serve a certificate for {self.endpoint.host} from a trusted CA, with its chain",
            )
            return None
        except asyncio.TimeoutError:
            self.add(
                "endpoint",
                "FAIL",
                f"{self.http_url} did not answer a plain GET within {self.timeout:g}s",
                "check that the server (and the proxy in front of it) is up and answers",
            )
            return None
        except (OSError, ValueError) as exc:
            self.add("endpoint", "FAIL", f"cannot reach {self.http_url}: {_why(exc)}")
            return None
        self._tls_finding(answer)
        if answer.status in REDIRECTS:
            answer = await self._follow(answer) or answer
        return answer if self._endpoint_finding(answer) else None

    async def _follow(self, answer: _Answer) -> _Answer | None:
        location = answer.headers.get("location", "")
        moved = _same_origin_path(self.http_url, location)
        if moved is None:
            self.add(
                "slash",
                "FAIL",
                f"{self.http_url} redirects to {location[:200]!r}, another origin or scheme; "
                "clients do not follow it",
                "run the server with --proxy-headers behind a proxy that sets X-Forwarded-Proto "
                "and Host, or use the URL the redirect names",
            )
            return None
        self.add(
            "slash",
            "warn",
            f"{self.endpoint.path} redirects to {moved} (livepanel's clients follow it; "
            "browsers' EventSource does too)",
            f"connect to {moved} directly",
        )
        self.endpoint = dataclasses.replace(self.endpoint, path=moved)
        try:
            return await self._get(self.endpoint.target(()))
        except (OSError, ValueError, asyncio.TimeoutError):
            return None

    def _tls_finding(self, answer: _Answer) -> None:
        if self.endpoint.ssl is None:
            loopback = self.endpoint.host in ("localhost", "127.0.0.1", "::1")
            if loopback:
                self.add("tls", "ok", "plain http on the loopback interface")
            else:
                self.add(
                    "tls",
                    "warn",
                    "plain http: credentials and events travel unencrypted",
                    "serve the endpoint over https / wss (docs/deployment.md)",
                )
            return
        cert = answer.peercert
        if not cert:
            self.add("tls", "warn", "TLS is used but the certificate was not verified")
            return
        expires = datetime.fromtimestamp(
            ssl_module.cert_time_to_seconds(str(cert.get("notAfter"))), tz=timezone.utc
        )
        days = (expires - datetime.now(timezone.utc)).total_seconds() / 86400
        message = f"certificate valid for {self.endpoint.host} until {expires:%Y-%m-%d}"
        if days < 14:
            self.add("tls", "warn", f"{message}: it expires in {days:.1f} days", "renew it")
        else:
            self.add("tls", "ok", message)

    def _endpoint_finding(self, answer: _Answer) -> bool:
        status = answer.status
        code, message = refusal_reason(answer.body)
        if status == 426:
            self.add("endpoint", "ok", "a livepanel endpoint; the credentials are accepted")
            return True
        if status == 401:
            given = any(k.lower() == "authorization" for k, _ in self.endpoint.headers)
            self.add(
                "endpoint",
                "FAIL",
                "credentials refused (401)" if given else "the endpoint needs credentials (401)",
                "pass -u USER --password-env VAR with a user the server accepts",
            )
        elif status == 403 and code == "tls_required":
            self.add(
                "endpoint",
                "FAIL",
                "the server requires TLS but sees plain http (403 tls_required)",
                "let the proxy set X-Forwarded-Proto and run the server with --proxy-headers",
            )
        elif status in (403, 429):
            why = f" {code}" if code else ""
            self.add("endpoint", "FAIL", f"refused ({status}{why}): {message[:200]}".rstrip(": "))
        else:
            self.add(
                "endpoint",
                "FAIL",
                f"not a livepanel endpoint: a plain GET of {self.http_url} answered {status} "
                "(livepanel answers 426)",
                "check the URL's path (the endpoint, e.g. /ws) and that the proxy routes it",
            )
        return False

    async def _slash_check(self) -> None:
        if any(f.check == "slash" for f in self.findings):
            return  # the URL itself redirected: already reported
        path = self.endpoint.path
        other = path.rstrip("/") if path.endswith("/") and path != "/" else path + "/"
        if other == path:
            return
        try:
            answer = await self._get(self.endpoint.target(()).replace(path, other, 1))
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            self.add("slash", "warn", f"{other} could not be checked: {_why(exc)}")
            return
        if answer.status == 426:
            self.add("slash", "ok", f"{path} and {other} both reach the endpoint")
        elif answer.status in REDIRECTS:
            location = answer.headers.get("location", "")
            moved = _same_origin_path(self.http_url, location)
            if moved is None:
                self.add(
                    "slash",
                    "FAIL",
                    f"{other} redirects to {location[:200]!r}, another origin or scheme",
                    "run the server with --proxy-headers behind a proxy that sets "
                    "X-Forwarded-Proto and Host",
                )
            else:
                self.add("slash", "ok", f"{other} redirects to {moved} within the origin")
        else:
            self.add(
                "slash", "ok", f"only {path} is the endpoint ({other} answers {answer.status})"
            )

    async def _origin_check(self) -> None:
        try:
            answer = await self._get(self.endpoint.target(()), [("Origin", FOREIGN_ORIGIN)])
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            self.add("origin", "warn", f"could not be checked: {_why(exc)}")
            return
        code, _ = refusal_reason(answer.body)
        if answer.status == 403:
            self.add("origin", "ok", f"a foreign Origin is refused (403 {code or ''})".rstrip())
        else:
            self.add(
                "origin",
                "FAIL",
                f"a handshake from Origin {FOREIGN_ORIGIN} is not refused "
                f"(HTTP {answer.status}): any web page can open this stream",
                "keep allowed_origins=None (same origin) or list only your dashboards' origins",
            )

    # ------------------------------------------------------------------ WebSocket

    async def _websocket_checks(self) -> bool:
        """The upgrade, compression, welcome, and the idle watch; whether the upgrade passed."""
        writer: asyncio.StreamWriter | None = None
        try:
            reader, opened = await asyncio.wait_for(open_socket(self.endpoint), self.timeout)
            writer = opened
            return await self._upgrade(reader, opened)
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            self.add("upgrade", "FAIL", f"the WebSocket handshake failed: {_why(exc)}")
            return False
        finally:
            if writer is not None:
                writer.transport.abort()

    async def _upgrade(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        wire = ClientWire(
            self.endpoint.host_header, self.endpoint.target(()), self.endpoint.headers, deflate=True
        )
        writer.write(wire.data_to_send())
        sent = time.time()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        frames: list[tuple[float, dict[str, Any]]] = []
        accepted: Accepted | None = None
        while not frames:
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), deadline - loop.time())
            except asyncio.TimeoutError:
                if accepted is None:
                    raise
                self.add(
                    "upgrade",
                    "FAIL",
                    f"the upgrade was accepted but no welcome came within {self.timeout:g}s: "
                    "not a livepanel endpoint, or something in between holds the frames",
                )
                return True
            for output in wire.receive_data(data or None):
                if isinstance(output, Rejected):
                    self._refused_upgrade(output)
                    return False
                if isinstance(output, Accepted):
                    accepted = output
                elif isinstance(output, FrameReceived):
                    frames.append((time.time(), output.data))
                elif isinstance(output, Closed):
                    what = "accepted and closed" if accepted else "closed"
                    self.add("upgrade", "FAIL", f"the server {what} the connection: {output}")
                    return accepted is not None
            writer.write(wire.data_to_send())
        assert accepted is not None
        self.add("upgrade", "ok", "the WebSocket upgrade passes")
        if accepted.extensions:
            self.add("compression", "ok", f"negotiated: {', '.join(accepted.extensions)}")
        else:
            self.add("compression", "ok", "permessage-deflate was offered and not negotiated")
        received, welcome = frames[0]
        if welcome.get("type") != "welcome":
            self.add("heartbeat", "FAIL", "the first frame is not welcome: not a livepanel server")
            return True
        payload = welcome.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        self._clock_from_welcome(welcome, sent, received)
        await self._watch_idle(reader, writer, wire, payload.get("heartbeatInterval"))
        return True

    def _refused_upgrade(self, rejected: Rejected) -> None:
        if rejected.status == 426:
            self.add(
                "upgrade",
                "FAIL",
                "the application saw a plain GET (426): the proxy drops the Upgrade and "
                "Connection headers",
                _NGINX_UPGRADE,
            )
        else:
            code, _ = refusal_reason(rejected.body)
            why = f" {code}" if code else ""
            self.add("upgrade", "FAIL", f"the handshake was answered HTTP {rejected.status}{why}")

    async def _watch_idle(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        wire: ClientWire,
        announced: object,
    ) -> None:
        if not isinstance(announced, (int, float)) or not 0 < announced < math.inf:
            self.add("heartbeat", "FAIL", f"welcome announces no heartbeat ({announced!r})")
            return
        heartbeat = self.heartbeat = float(announced)
        window = min(2 * heartbeat + 1.0, MAX_WATCH)
        loop = asyncio.get_running_loop()
        start = loop.time()
        last = start
        gaps: list[float] = []
        while (remaining := start + window - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), remaining)
            except asyncio.TimeoutError:
                break
            except OSError:
                data = b""
            now = loop.time()
            for output in wire.receive_data(data or None):
                if isinstance(output, FrameReceived):
                    gaps.append(now - last)
                    last = now
                elif isinstance(output, Closed):
                    self._cut_idle(now - start, now - last, heartbeat, output)
                    return
            writer.write(wire.data_to_send())
        silent = loop.time() - last
        if not gaps or silent > heartbeat * 1.5 + 1.0:
            self.add(
                "heartbeat",
                "FAIL",
                f"no frame for {silent:.1f}s although the heartbeat is {heartbeat:g}s",
                "check that nothing between holds WebSocket frames back",
            )
            return
        note = (
            f"watched {window:.0f}s" if window >= 2 * heartbeat else f"watched {window:.0f}s only"
        )
        self.add(
            "heartbeat",
            "ok",
            f"frames at most {max(gaps):.1f}s apart (heartbeat {heartbeat:g}s); the idle "
            f"connection stayed open ({note})",
        )

    def _cut_idle(self, after: float, silent: float, heartbeat: float, closed: Closed) -> None:
        if silent < heartbeat:
            self.add(
                "heartbeat",
                "FAIL",
                f"the connection was cut after {silent:.1f}s without a frame, before the "
                f"{heartbeat:g}s heartbeat (code {closed.code}): an idle timeout in between "
                "is shorter than the heartbeat",
                f"raise the proxy's idle timeout above {heartbeat:g}s (nginx: proxy_read_timeout) "
                "or lower the endpoint's heartbeat_interval",
            )
        else:
            self.add(
                "heartbeat",
                "FAIL",
                f"the connection was closed after {after:.1f}s (code {closed.code})",
            )

    # ------------------------------------------------------------------ Server-Sent Events

    async def _stream_check(self, *, upgraded: bool) -> None:
        heartbeat = self.heartbeat or 25.0
        window = min(heartbeat + max(1.0, heartbeat / 2), MAX_WATCH)
        writer: asyncio.StreamWriter | None = None
        arrivals: list[tuple[float, str]] = []
        loop = asyncio.get_running_loop()
        try:
            reader, opened = await asyncio.wait_for(open_socket(self.endpoint), self.timeout)
            writer = opened
            headers = [*self.endpoint.headers, ("Accept", "text/event-stream")]
            _write_request(opened, self.endpoint.host_header, self.endpoint.target(()), headers)
            try:
                status, fields = await asyncio.wait_for(_read_head(reader), self.timeout)
            except asyncio.TimeoutError:
                self.add(
                    "stream",
                    "FAIL",
                    f"nothing of the event stream arrived within {self.timeout:g}s (livepanel "
                    "sends its headers and welcome at once): something in between buffers it",
                    _BUFFERING_FIX,
                )
                return
            if status != 200 or not fields.get("content-type", "").startswith("text/event-"):
                self.add("stream", "FAIL", f"no event stream: the server answered {status}")
                self._only_sse(upgraded, False)
                return
            start = loop.time()
            ended = await _collect_messages(reader, fields, arrivals, start + window, loop)
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            self.add("stream", "FAIL", f"the event stream could not be read: {_why(exc)}")
            self._only_sse(upgraded, False)
            return
        finally:
            if writer is not None:
                writer.transport.abort()
        if ended is not None and len(arrivals) < 2:
            silent = ended - (arrivals[-1][0] if arrivals else start)
            self.add(
                "stream",
                "FAIL",
                f"the event stream was cut after {silent:.1f}s without a message, before the "
                f"{heartbeat:g}s heartbeat: an idle timeout in between is shorter",
                f"raise the proxy's idle timeout above {heartbeat:g}s (nginx: proxy_read_timeout)",
            )
        else:
            self._stream_finding(arrivals, start, heartbeat)
        self._only_sse(upgraded, any(kind == "welcome" for _, kind in arrivals))

    def _stream_finding(self, arrivals: list[tuple[float, str]], start: float, hb: float) -> None:
        fix = _BUFFERING_FIX
        if not arrivals:
            self.add(
                "stream",
                "FAIL",
                f"the event stream's headers came but no message within {hb:g}s+ "
                "(welcome is sent at once): something in between buffers the stream",
                fix,
            )
            return
        first = arrivals[0][0] - start
        lump = len(arrivals) > 1 and arrivals[-1][0] - arrivals[0][0] < min(0.2, hb / 4)
        if first > 1.0 or lump:
            self.add(
                "stream",
                "FAIL",
                f"the event stream arrives late or in a lump ({len(arrivals)} messages, the "
                f"first after {first:.1f}s): something in between buffers it",
                fix,
            )
        elif len(arrivals) < 2:
            self.add(
                "stream",
                "FAIL",
                f"welcome came but no heartbeat within {hb:g}s+: something holds the stream back",
                fix,
            )
        else:
            self.add(
                "stream",
                "ok",
                f"each message arrives at once (welcome after {first:.2f}s, then a heartbeat "
                f"after {arrivals[1][0] - arrivals[0][0]:.1f}s)",
            )

    def _only_sse(self, upgraded: bool, streamed: bool) -> None:
        if not upgraded and streamed:
            for i, f in enumerate(self.findings):
                if f.check == "upgrade" and f.level == "FAIL":
                    message = f"{f.message}; only Server-Sent Events work"
                    self.findings[i] = dataclasses.replace(f, message=message)

    # ------------------------------------------------------------------ clock

    def _clock_from_welcome(self, frame: dict[str, Any], sent: float, received: float) -> None:
        try:
            stamp = datetime.fromisoformat(str(frame.get("timestamp")).replace("Z", "+00:00"))
            server = stamp.timestamp()
        except (ValueError, OverflowError):
            return
        self._clock(server, sent, received, "welcome's timestamp")

    def _clock_from_date(self, answer: _Answer) -> None:
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


# ---------------------------------------------------------------------- HTTP/1.1 by hand


def _write_request(
    writer: asyncio.StreamWriter, host: str, target: str, headers: Iterable[tuple[str, str]]
) -> None:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "User-Agent: livepanel-doctor"]
    lines += [f"{k}: {v}" for k, v in headers]
    writer.write(("\r\n".join([*lines, "", ""])).encode("latin-1"))


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and headers of an HTTP/1.x response (bounded in lines)."""
    parts = (await reader.readline()).split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ValueError("the answer is not HTTP")
    fields: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            return int(parts[1]), fields
        if not line:
            raise ValueError("the connection ended inside the response headers")
        name, _, value = line.decode("latin-1").partition(":")
        fields[name.strip().lower()] = value.strip()
    raise ValueError(f"more than {_MAX_HEADERS} response headers")


async def _read_body(reader: asyncio.StreamReader, fields: dict[str, str]) -> bytes:
    length = fields.get("content-length", "")
    if length.isdigit():
        return await reader.read(min(int(length), _MAX_BODY))
    if "chunked" in fields.get("transfer-encoding", "").lower():
        out = bytearray()
        async for piece in _chunks(reader):
            out += piece
            if len(out) >= _MAX_BODY:
                break
        return bytes(out)
    return b""  # no length: the start of the body says nothing we need


async def _chunks(reader: asyncio.StreamReader) -> Any:
    """The pieces of a chunked body as they arrive."""
    while True:
        line = await reader.readline()
        if not line:
            return  # the connection ended (cut, or closed without the last chunk)
        size_line = line.split(b";")[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise ValueError("a malformed chunked body") from None
        if size == 0:
            return
        if size > _MAX_BODY:
            raise ValueError("a chunk larger than expected of an event stream")
        yield await reader.readexactly(size)
        await reader.readline()


async def _collect_messages(
    reader: asyncio.StreamReader,
    fields: dict[str, str],
    arrivals: list[tuple[float, str]],
    until: float,
    loop: asyncio.AbstractEventLoop,
) -> float | None:
    """Note the arrival of each Server-Sent Events message (``welcome``, ``ping``...); the
    time the stream ended, or ``None`` when it was still open at ``until``."""
    chunked = "chunked" in fields.get("transfer-encoding", "").lower()
    pieces = _chunks(reader) if chunked else None
    text = ""
    while (remaining := until - loop.time()) > 0:
        try:
            if pieces is not None:
                piece = await asyncio.wait_for(pieces.__anext__(), remaining)
            else:
                piece = await asyncio.wait_for(reader.read(READ_SIZE), remaining)
        except asyncio.TimeoutError:
            return None
        except (StopAsyncIteration, OSError, asyncio.IncompleteReadError):
            return loop.time()
        if not piece:
            return loop.time()
        text += piece.decode("utf-8", "replace").replace("\r\n", "\n")
        *messages, text = text.split("\n\n")
        for message in messages:
            arrivals.append((loop.time(), _message_kind(message)))
        if len(text) > _MAX_BODY:
            raise ValueError("an event stream message without an end")
    return None


def _message_kind(message: str) -> str:
    for line in message.split("\n"):
        if line.startswith("event:"):
            return line[6:].strip()
        if line.startswith(":"):
            return line[1:].strip() or "comment"
    return "message"


def _same_origin_path(here: str, location: str) -> str | None:
    """The path a redirect leads to when it stays within ``here``'s origin, else ``None``."""
    from urllib.parse import urljoin

    there = urlsplit(urljoin(here, location.strip()))
    base = urlsplit(here)
    if (there.scheme, there.netloc.lower()) != (base.scheme, base.netloc.lower()):
        return None
    return urlunsplit(("", "", there.path or "/", "", "")) or "/"


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
