"""The typed dicts of livepanel.frames describe exactly the frames the server and client build."""

from __future__ import annotations

import asyncio
import json
import types
import typing
from typing import Any, Literal, Union

import pytest
import typing_extensions

from livepanel import Broadcaster, Event
from livepanel.client.stream import ClientStream
from livepanel.events import SessionCreated
from livepanel.frames import (
    AckMessage,
    ClientMessage,
    ErrorCode,
    ErrorFrame,
    EventFrame,
    PingFrame,
    PongFrame,
    ServerFrame,
    StateFrame,
    SubscribeMessage,
    WelcomeFrame,
)
from livepanel.protocol import (
    Ack,
    ClientProtocol,
    Reply,
    Subscribe,
    TypeFilter,
    control_frame,
    error_frame,
    welcome_frame,
)
from livepanel.state import state_frame


def conforms(value: Any, hint: Any, path: str = "frame") -> None:
    """Assert ``value`` fits ``hint``: a typed dict's keys exactly (required present, nothing
    unknown), recursively through lists, dicts and literals."""
    origin = typing.get_origin(hint)
    if typing_extensions.is_typeddict(hint):
        assert isinstance(value, dict), f"{path}: not an object"
        required, optional = hint.__required_keys__, hint.__optional_keys__
        assert required <= value.keys(), f"{path}: missing {sorted(required - value.keys())}"
        unknown = value.keys() - required - optional
        assert not unknown, f"{path}: keys {sorted(unknown)} are not in {hint.__name__}"
        hints = typing_extensions.get_type_hints(hint)
        for key, item in value.items():
            conforms(item, hints[key], f"{path}.{key}")
    elif origin is Literal:
        assert value in typing.get_args(hint), f"{path}: {value!r} not in {hint}"
    elif origin is Union or origin is types.UnionType:
        errors = []
        for arg in typing.get_args(hint):
            try:
                conforms(value, arg, path)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{path}: fits none of {hint}: {errors}")
    elif origin is list:
        assert isinstance(value, list), f"{path}: not a list"
        (item,) = typing.get_args(hint)
        for n, element in enumerate(value):
            conforms(element, item, f"{path}[{n}]")
    elif origin in (dict, typing.get_origin(typing.Mapping[str, Any])):
        assert isinstance(value, dict), f"{path}: not an object"
        _, item = typing.get_args(hint)
        for key, element in value.items():
            conforms(element, item, f"{path}.{key}")
    elif hint is type(None):
        assert value is None, f"{path}: not null"
    elif hint is float:
        assert isinstance(value, (int, float)), f"{path}: not a number"
        assert not isinstance(value, bool), f"{path}: not a number"
    elif hint is not Any:
        assert isinstance(value, hint), f"{path}: {value!r} is not {hint}"


def test_the_welcome_frame_fits_welcome_frame() -> None:
    """welcome_frame() builds exactly a WelcomeFrame."""
    conforms(json.loads(welcome_frame("c1", 25.0, "e1:0")), WelcomeFrame)


@pytest.mark.parametrize("code", typing.get_args(ErrorCode))
def test_every_error_code_builds_an_error_frame(code: str) -> None:
    """error_frame() builds an ErrorFrame for each of the protocol's codes."""
    conforms(json.loads(error_frame(code, "why")), ErrorFrame)  # type: ignore[arg-type]


def test_ping_and_pong_fit_their_frames() -> None:
    """The heartbeat ping and the pong answering a client's ping fit PingFrame and PongFrame."""
    conforms(json.loads(control_frame("ping", {})), PingFrame)
    (reply,) = ClientProtocol().receive_text('{"type": "ping", "payload": {"n": 1}}')
    assert isinstance(reply, Reply)
    conforms(json.loads(reply.text), PongFrame)


def test_a_broadcast_event_fits_event_frame() -> None:
    """An event's wire object, with and without its id, fits EventFrame."""
    event = Event("session.killed", {"sessionKey": "s1", "agentId": "a1"}, id="e1:3")
    conforms(json.loads(event.to_json()), EventFrame)
    conforms(Event("session.killed", {}).to_dict(), EventFrame)


def test_the_state_frame_fits_state_frame() -> None:
    """A state frame with entries in keyed and keyless collections fits StateFrame."""

    async def snapshot() -> Any:
        broadcaster = Broadcaster()
        try:
            await broadcaster.apublish(SessionCreated("s1", "a1", "direct"))
            await broadcaster.apublish(
                "gateway.status", {"status": "running", "version": "1", "uptime": 5}
            )
            return await broadcaster.backend.state()
        finally:
            await broadcaster.close()

    frame = json.loads(state_frame(asyncio.run(snapshot()), TypeFilter(["*"])))
    conforms(frame, StateFrame)
    assert frame["payload"]["collections"]["sessions"]["entries"][0]["id"]


def test_every_server_frame_fits_the_union() -> None:
    """Each frame the server builds fits ServerFrame."""
    for text in (
        welcome_frame("c1", 25.0, "e1:0"),
        error_frame("rate_limited", "slow down"),
        control_frame("ping", {}),
        Event("session.killed", {}, id="e1:1").to_json(),
    ):
        conforms(json.loads(text), ServerFrame)


def test_the_clients_messages_fit_their_frames_and_the_server_takes_them() -> None:
    """The Python client's ack and subscribe fit AckMessage and SubscribeMessage, and the
    server's protocol accepts them as they are."""
    stream = ClientStream("ws://localhost/ws")
    stream.ack("e1:7")
    ack = stream.take_ack(now=0.0)
    subscribe = stream.subscribe(("session.*",), "e1:7", connected=True)
    conforms(ack, AckMessage)
    conforms(subscribe, SubscribeMessage)
    conforms(ack, ClientMessage)
    conforms({"type": "ping"}, ClientMessage)
    protocol = ClientProtocol()
    assert protocol.receive_text(json.dumps(ack)) == [Ack("e1:7")]
    assert protocol.receive_text(json.dumps(subscribe)) == [Subscribe(("session.*",), "e1:7")]


def test_a_frame_with_an_unknown_key_does_not_fit() -> None:
    """The check itself: an extra key or a missing one is caught."""
    welcome = json.loads(welcome_frame("c1", 25.0, "e1:0"))
    with pytest.raises(AssertionError, match="not in WelcomePayload"):
        conforms({**welcome, "payload": {**welcome["payload"], "extra": 1}}, WelcomeFrame)
    del welcome["payload"]["server"]
    with pytest.raises(AssertionError, match="missing"):
        conforms(welcome, WelcomeFrame)
