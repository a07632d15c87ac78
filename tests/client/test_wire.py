"""ClientWire, the sans-I/O core of the client: server bytes in, frames out."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from livepanel.client.wire import (
    Accepted,
    ClientWire,
    Closed,
    FrameReceived,
    InvalidFrame,
    Rejected,
)


def handshake(wire: ClientWire) -> tuple[WSConnection, Request]:
    """A wsproto server that has read the client's request."""
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(wire.data_to_send())
    (request,) = list(server.events())
    assert isinstance(request, Request)
    return server, request


def feed(wire: ClientWire, data: bytes) -> list[Any]:
    return wire.receive_data(data)


def test_handshake_request_carries_host_target_and_headers() -> None:
    """The request names the host and target and carries the extra headers as given."""
    wire = ClientWire(
        "example.test:8080",
        "/ws?since=e1%3A4&batch=1",
        [("Authorization", "Basic YTpi"), ("Origin", "https://panel.example.test")],
    )
    _, request = handshake(wire)
    assert request.host == "example.test:8080"
    assert request.target == "/ws?since=e1%3A4&batch=1"
    headers = {k.decode().lower(): v.decode() for k, v in request.extra_headers}
    assert headers["authorization"] == "Basic YTpi"
    assert headers["origin"] == "https://panel.example.test"
    assert request.subprotocols == []


def test_rejected_handshake_reports_status_and_body() -> None:
    """An HTTP answer instead of 101 comes out whole: status, headers and body."""
    wire = ClientWire("h", "/ws")
    server, _ = handshake(wire)
    body = b'{"error":"unauthorized","message":"authentication required"}'
    data = server.send(
        RejectConnection(
            status_code=401,
            headers=[(b"content-length", str(len(body)).encode())],
            has_body=True,
        )
    )
    data += server.send(RejectData(data=body, body_finished=True))
    (rejected,) = feed(wire, data)
    assert isinstance(rejected, Rejected)
    assert rejected.status == 401
    assert json.loads(rejected.body)["error"] == "unauthorized"


def test_end_of_stream_without_close_frame_is_1006() -> None:
    """A connection that just vanishes is reported as close code 1006."""
    wire = ClientWire("h", "/ws")
    server, _ = handshake(wire)
    assert feed(wire, server.send(AcceptConnection())) == [Accepted()]
    (closed,) = wire.receive_data(None)
    assert isinstance(closed, Closed)
    assert closed.code == 1006


def test_binary_and_non_object_messages_are_invalid_but_do_not_stop_the_stream() -> None:
    """Binary messages and non-object JSON are reported; the frames around them still decode."""
    wire = ClientWire("h", "/ws")
    server, _ = handshake(wire)
    data = server.send(AcceptConnection())
    data += server.send(BytesMessage(data=b"\x00\x01"))
    data += server.send(TextMessage(data='[1,2]\n{"type":"ping","payload":{}}\nnot json'))
    out = feed(wire, data)
    assert out[0] == Accepted()
    assert isinstance(out[1], InvalidFrame)
    assert isinstance(out[2], InvalidFrame)
    assert out[3] == FrameReceived({"type": "ping", "payload": {}})
    assert isinstance(out[4], InvalidFrame)
    assert out[4].text == "not json"


def test_protocol_ping_is_answered_with_a_pong() -> None:
    """A WebSocket Ping queues a Pong with the same payload."""
    wire = ClientWire("h", "/ws")
    server, _ = handshake(wire)
    assert feed(wire, server.send(AcceptConnection()) + server.send(Ping(payload=b"hb"))) == [
        Accepted()
    ]
    server.receive_data(wire.data_to_send())
    assert list(server.events()) == [Pong(payload=b"hb")]


def test_server_close_is_answered_and_reported() -> None:
    """The server's close frame is echoed and reported with its code and reason."""
    wire = ClientWire("h", "/ws")
    server, _ = handshake(wire)
    out = feed(wire, server.send(AcceptConnection()) + server.send(CloseConnection(1001, "bye")))
    assert out == [Accepted(), Closed(1001, "bye")]
    server.receive_data(wire.data_to_send())
    assert [type(e) for e in server.events()] == [CloseConnection]
    assert feed(wire, b"late bytes") == []


def test_client_frames_are_sent_only_while_open() -> None:
    """send_text before the handshake completes is dropped; after it, the server gets it."""
    wire = ClientWire("h", "/ws")
    server, _ = handshake(wire)
    wire.send_text('{"type":"ping"}')
    assert wire.data_to_send() == b""
    feed(wire, server.send(AcceptConnection()))
    wire.send_text('{"type":"ping"}')
    server.receive_data(wire.data_to_send())
    assert list(server.events()) == [TextMessage(data='{"type":"ping"}')]


# --------------------------------------------------------------------------- hypothesis

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
_server_frames = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["welcome", "ping", "session.created", "cron.executed"]),
            "payload": st.dictionaries(
                _text, st.one_of(_text, st.integers(), st.booleans(), st.none()), max_size=4
            ),
        },
        optional={"id": st.from_regex(r"[a-f0-9]{8}:[0-9]{1,6}", fullmatch=True)},
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=_server_frames, data=st.data())
def test_server_bytes_split_at_any_byte_decode_to_the_same_frames(
    frames: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Batched, fragmented frames with pings between them, cut anywhere, decode the same."""
    wire = ClientWire("h", "/ws?batch=1")
    server, _ = handshake(wire)
    stream = bytearray(server.send(AcceptConnection()))
    pings = 0
    rest = list(frames)
    while rest:  # bounded: each pass takes at least one frame
        size = data.draw(st.integers(1, len(rest)), label="frames in this message")
        batch, rest = rest[:size], rest[size:]
        text = "\n".join(json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in batch)
        cut = data.draw(st.integers(0, len(text)), label="fragment at")
        if 0 < cut < len(text):
            stream += server.send(TextMessage(data=text[:cut], message_finished=False))
            if data.draw(st.booleans(), label="ping between fragments"):
                stream += server.send(Ping(payload=b"p"))
                pings += 1
            stream += server.send(TextMessage(data=text[cut:], message_finished=True))
        else:
            stream += server.send(TextMessage(data=text))
        if data.draw(st.booleans(), label="ping after"):
            stream += server.send(Ping(payload=b"q"))
            pings += 1
    stream += server.send(CloseConnection(code=1000))
    cuts = sorted(
        set(data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="chunk cuts"))
    )

    outputs: list[Any] = []
    start = 0
    for end in [*cuts, len(stream)]:
        outputs.extend(wire.receive_data(bytes(stream[start:end])))
        start = end

    assert outputs[0] == Accepted()
    assert outputs[-1] == Closed(1000, "")
    assert [o.data for o in outputs if isinstance(o, FrameReceived)] == frames
    assert not [o for o in outputs if isinstance(o, InvalidFrame)]
    server.receive_data(wire.data_to_send())
    answers = list(server.events())
    assert sum(isinstance(e, Pong) for e in answers) == pings
    assert isinstance(answers[-1], CloseConnection)


def test_client_exceptions_live_in_livepanel_client_only() -> None:
    """The client's exceptions are imported from livepanel.client; the package face has none."""
    import livepanel
    import livepanel.client

    for name in (
        "AuthenticationError",
        "ConnectionFailed",
        "HandshakeRejected",
        "OpenTimeout",
        "PermissionDenied",
        "ResumeUnavailable",
    ):
        assert name in livepanel.client.__all__
        assert name not in livepanel.__all__
        assert not hasattr(livepanel, name), f"livepanel.{name} is still exported"
