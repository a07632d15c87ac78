"""The doctor's WebSocket and event stream checks: the upgrade, compression, heartbeats,
buffering."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from typing import Any

from livepanel.client.endpoint import refusal_reason
from livepanel.client.link import READ_SIZE, open_socket
from livepanel.client.wire import Accepted, ClientWire, Closed, FrameReceived, Rejected
from livepanel.doctor._http import (
    collect_messages,
    read_head,
    why,
    write_request,
)
from livepanel.doctor._probe import (
    BUFFERING_FIX,
    MAX_WATCH,
    NGINX_UPGRADE_FIX,
    Probe,
)


class SocketChecks(Probe):
    """Checks made over a WebSocket and a Server-Sent Events stream."""

    # ------------------------------------------------------------------ WebSocket

    async def _websocket_checks(self) -> bool:
        """The upgrade, compression, welcome, and the idle watch; whether the upgrade passed."""
        writer: asyncio.StreamWriter | None = None
        try:
            reader, opened = await asyncio.wait_for(open_socket(self.endpoint), self.timeout)
            writer = opened
            return await self._upgrade(reader, opened)
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            self.add("upgrade", "FAIL", f"the WebSocket handshake failed: {why(exc)}")
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
                NGINX_UPGRADE_FIX,
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
        self.welcomed.set()  # the event stream's watch can start alongside
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

    async def _stream_check(self) -> bool:
        """The event stream's checks; whether its welcome arrived."""
        heartbeat = self.heartbeat or 25.0
        window = min(heartbeat + max(1.0, heartbeat / 2), MAX_WATCH)
        writer: asyncio.StreamWriter | None = None
        arrivals: list[tuple[float, str]] = []
        loop = asyncio.get_running_loop()
        try:
            reader, opened = await asyncio.wait_for(open_socket(self.endpoint), self.timeout)
            writer = opened
            headers = [*self.endpoint.headers, ("Accept", "text/event-stream")]
            write_request(opened, self.endpoint.host_header, self.endpoint.target(()), headers)
            try:
                status, fields = await asyncio.wait_for(read_head(reader), self.timeout)
            except asyncio.TimeoutError:
                self.add(
                    "stream",
                    "FAIL",
                    f"nothing of the event stream arrived within {self.timeout:g}s (livepanel "
                    "sends its headers and welcome at once): something in between buffers it",
                    BUFFERING_FIX,
                )
                return False
            if status != 200 or not fields.get("content-type", "").startswith("text/event-"):
                self.add("stream", "FAIL", f"no event stream: the server answered {status}")
                return False
            start = loop.time()
            until = start + (window if self.heartbeat else self.timeout)

            def rewatch(message: str) -> float | None:
                nonlocal heartbeat
                if self.heartbeat is not None:
                    return None  # the WebSocket's welcome told it already
                heartbeat = stream_heartbeat(message) or heartbeat
                return min(heartbeat + max(1.0, heartbeat / 2), MAX_WATCH)

            ended = await collect_messages(reader, fields, arrivals, until, loop, rewatch)
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            self.add("stream", "FAIL", f"the event stream could not be read: {why(exc)}")
            return False
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
        return any(kind == "welcome" for _, kind in arrivals)

    def _stream_finding(self, arrivals: list[tuple[float, str]], start: float, hb: float) -> None:
        fix = BUFFERING_FIX
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

    def only_sse(self, upgraded: bool, streamed: bool) -> None:
        """When the upgrade failed and the event stream works, say so on the upgrade's line."""
        if not upgraded and streamed:
            for i, f in enumerate(self.findings):
                if f.check == "upgrade" and f.level == "FAIL":
                    message = f"{f.message}; only Server-Sent Events work"
                    self.findings[i] = dataclasses.replace(f, message=message)


def stream_heartbeat(message: str) -> float | None:
    """The ``heartbeatInterval`` of an event stream's ``welcome`` message, if usable."""
    for line in message.split("\n"):
        if line.startswith("data:"):
            try:
                frame = json.loads(line[5:])
                seconds = frame["payload"]["heartbeatInterval"]
            except (ValueError, TypeError, KeyError):
                return None
            ok = isinstance(seconds, (int, float)) and 0 < seconds < math.inf
            return float(seconds) if ok else None
    return None
