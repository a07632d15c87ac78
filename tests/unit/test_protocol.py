"""The sans-I/O protocol: client frames in, actions out; ids, connect queries and filters."""

from __future__ import annotations

import fnmatch
import json
import sys
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livepanel import __version__
from livepanel.protocol import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    MAX_GLOB_LENGTH,
    MAX_GLOBS,
    MAX_PONG_SIZE,
    Ack,
    ClientProtocol,
    Close,
    ConnectOptions,
    Reply,
    Subscribe,
    TypeFilter,
    control_frame,
    error_frame,
    make_id,
    parse_connect_query,
    parse_id,
    welcome_frame,
)

ERROR_CODES = {"invalid_json", "invalid_message", "unknown_type", "rate_limited"}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def strict_json(text: str) -> Any:
    """Parse as a strict client would: no NaN, no Infinity."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def frame(action: Any) -> dict[str, Any]:
    """The JSON object of a Reply action."""
    assert isinstance(action, Reply), action
    data: dict[str, Any] = strict_json(action.text)
    return data


def error_code(actions: list[Any]) -> str:
    """The code of the single error frame in ``actions``."""
    assert len(actions) == 1, actions
    data = frame(actions[0])
    assert data["type"] == "error"
    code: str = data["payload"]["code"]
    return code


def send(message: Any, protocol: ClientProtocol | None = None) -> list[Any]:
    """Feed one JSON message to a fresh (or the given) protocol."""
    return (protocol or ClientProtocol()).receive_text(json.dumps(message))


# --------------------------------------------------------------------------- ping


def test_ping_is_answered_with_pong_at_once() -> None:
    """ping → a pong frame, and nothing else."""
    [reply] = send({"type": "ping"})
    data = frame(reply)
    assert data["type"] == "pong"
    assert data["payload"] == {}


def test_pong_echoes_the_ping_payload() -> None:
    """The pong carries the client ping's payload back unchanged."""
    payload = {"n": 7, "sentAt": "2026-02-21T10:00:00.000Z", "nested": [1, {"é": None}]}
    [reply] = send({"type": "ping", "timestamp": "2026-02-21T10:00:00.000Z", "payload": payload})
    assert frame(reply)["payload"] == payload


def test_ping_with_null_payload_gets_an_empty_pong() -> None:
    """A null payload counts as an empty one."""
    [reply] = send({"type": "ping", "payload": None})
    assert frame(reply)["payload"] == {}


def test_pong_echoing_a_lone_surrogate_is_still_valid_utf8() -> None:
    """A JSON escape of a lone surrogate is echoed as an escape, so the frame encodes as UTF-8."""
    [reply] = ClientProtocol().receive_text('{"type": "ping", "payload": {"s": "\\ud800"}}')
    reply.text.encode("utf-8")
    assert frame(reply)["payload"] == {"s": "\ud800"}


def test_ping_nested_too_deeply_to_echo_is_refused() -> None:
    """A ping payload too deep to echo gets an error frame, never an exception."""
    protocol = ClientProtocol(client_rate=None)
    limit = sys.getrecursionlimit()
    for depth in range(limit - 300, limit + 50):
        text = '{"type": "ping", "payload": {"a": ' + "[" * depth + "]" * depth + "}}"
        [reply] = protocol.receive_text(text)
        assert frame(reply)["type"] in ("pong", "error")


# --------------------------------------------------------------------------- ack


def test_ack_is_recorded_per_connection() -> None:
    """ack with payload.id → an Ack action, and the id is kept as last_ack."""
    protocol = ClientProtocol()
    assert send({"type": "ack", "payload": {"id": "a1b2:17"}}, protocol) == [Ack("a1b2:17")]
    assert protocol.last_ack == "a1b2:17"
    send({"type": "ack", "payload": {"id": "a1b2:1700000000000-3"}}, protocol)
    assert protocol.last_ack == "a1b2:1700000000000-3"


@pytest.mark.parametrize("payload", [{}, {"id": None}, {"id": 17}, {"id": "17"}, {"id": "a:b"}])
def test_ack_without_a_valid_id_is_an_invalid_message(payload: dict[str, Any]) -> None:
    """ack needs payload.id holding an event id; anything else is invalid_message."""
    protocol = ClientProtocol()
    assert error_code(send({"type": "ack", "payload": payload}, protocol)) == "invalid_message"
    assert protocol.last_ack is None


# --------------------------------------------------------------------------- subscribe


def test_subscribe_replaces_the_filter() -> None:
    """subscribe with payload.types → a Subscribe action with those globs and no since."""
    actions = send({"type": "subscribe", "payload": {"types": ["session.*", "agent.status"]}})
    assert actions == [Subscribe(("session.*", "agent.status"), None)]


def test_subscribe_with_since_asks_for_a_replay() -> None:
    """subscribe with payload.since → a Subscribe action carrying since."""
    actions = send({"type": "subscribe", "payload": {"types": ["*"], "since": "ab12:41"}})
    assert actions == [Subscribe(("*",), "ab12:41")]


def test_subscribe_without_types_means_everything() -> None:
    """A subscribe that names no types subscribes to all of them."""
    assert send({"type": "subscribe"}) == [Subscribe(("*",), None)]


def test_subscribe_to_no_types_is_allowed() -> None:
    """An empty list of globs is a valid filter that matches nothing."""
    assert send({"type": "subscribe", "payload": {"types": []}}) == [Subscribe((), None)]


@pytest.mark.parametrize(
    "payload",
    [
        {"types": "session.*"},
        {"types": None},
        {"types": [1]},
        {"types": [""]},
        {"types": ["session created"]},
        {"types": ["session/*"]},
        {"types": ["session.*\n"]},
        {"types": ["x" * (MAX_GLOB_LENGTH + 1)]},
        {"types": ["a"] * (MAX_GLOBS + 1)},
        {"since": 41},
        {"since": "41"},
        {"since": "ab12:"},
        {"since": "not an id"},
    ],
)
def test_subscribe_of_the_wrong_shape_is_an_invalid_message(payload: dict[str, Any]) -> None:
    """Malformed types or a malformed since → invalid_message, and no Subscribe."""
    assert error_code(send({"type": "subscribe", "payload": payload})) == "invalid_message"


def test_subscribe_accepts_the_longest_and_most_globs() -> None:
    """MAX_GLOBS globs of MAX_GLOB_LENGTH characters are accepted."""
    globs = ["x" * MAX_GLOB_LENGTH] * MAX_GLOBS
    assert send({"type": "subscribe", "payload": {"types": globs}}) == [Subscribe(tuple(globs))]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("text", ["", "ping", "{", '{"type": "ping"', "{'type': 'ping'}", "NaN"])
def test_invalid_json_is_answered_and_the_connection_stays_open(text: str) -> None:
    """Text that is not JSON → error invalid_json, and no Close."""
    assert error_code(ClientProtocol().receive_text(text)) == "invalid_json"


def test_json_nested_too_deeply_is_invalid_json() -> None:
    """JSON nested beyond the parser's depth → invalid_json, not an exception."""
    assert error_code(ClientProtocol().receive_text("[" * 50_000)) == "invalid_json"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_invalid_json(constant: str) -> None:
    """NaN and Infinity are not JSON, so they are never echoed back in a pong."""
    text = '{"type": "ping", "payload": {"x": ' + constant + "}}"
    assert error_code(ClientProtocol().receive_text(text)) == "invalid_json"


@pytest.mark.parametrize("message", [[], "ping", 42, None, True, [{"type": "ping"}]])
def test_json_that_is_not_an_object_is_an_invalid_message(message: Any) -> None:
    """A well-formed JSON value that is not an object → invalid_message."""
    assert error_code(send(message)) == "invalid_message"


@pytest.mark.parametrize("message", [{}, {"type": None}, {"type": 1}, {"type": ["ping"]}])
def test_message_without_a_string_type_is_an_invalid_message(message: dict[str, Any]) -> None:
    """An object without a string type → invalid_message."""
    assert error_code(send(message)) == "invalid_message"


@pytest.mark.parametrize("payload", [[], "x", 1, True])
def test_payload_that_is_not_an_object_is_an_invalid_message(payload: Any) -> None:
    """payload, when present, is an object."""
    assert error_code(send({"type": "ping", "payload": payload})) == "invalid_message"


@pytest.mark.parametrize("timestamp", [None, [], {}])
def test_timestamp_of_the_wrong_type_is_an_invalid_message(timestamp: Any) -> None:
    """timestamp, when present, is an ISO 8601 string."""
    assert error_code(send({"type": "ping", "timestamp": timestamp})) == "invalid_message"


@pytest.mark.parametrize("kind", ["pong", "PING", "", "event", "session.created"])
def test_message_of_unknown_type_is_answered_with_unknown_type(kind: str) -> None:
    """A well-formed message of a type the server does not know → unknown_type."""
    assert error_code(send({"type": kind})) == "unknown_type"


def test_unknown_type_error_quotes_a_long_type_shortened() -> None:
    """The unknown_type message names the type, cut to 64 characters."""
    [reply] = send({"type": "t" * 1000})
    message = frame(reply)["payload"]["message"]
    assert "t" * 64 + "..." in message
    assert "t" * 65 not in message


def test_binary_frame_is_an_invalid_message() -> None:
    """livepanel speaks JSON text frames; a binary frame → invalid_message."""
    assert error_code(ClientProtocol().receive_bytes(b'{"type": "ping"}')) == "invalid_message"


def test_binary_frame_over_the_limit_closes_with_1009() -> None:
    """A binary frame over max_message_size closes the connection with 1009."""
    actions = ClientProtocol(max_message_size=16).receive_bytes(b"x" * 17)
    assert actions == [Close(CLOSE_MESSAGE_TOO_BIG, "message too big")]


def test_frame_over_the_limit_closes_with_1009() -> None:
    """A text frame over max_message_size bytes closes the connection with 1009."""
    text = json.dumps({"type": "ping", "payload": {"pad": "x" * 100}})
    [action] = ClientProtocol(max_message_size=len(text) - 1).receive_text(text)
    assert action == Close(CLOSE_MESSAGE_TOO_BIG, "message too big")


def test_frame_at_the_limit_is_accepted() -> None:
    """A text frame of exactly max_message_size bytes is processed."""
    text = json.dumps({"type": "ping", "payload": {"pad": "x" * 100}})
    [reply] = ClientProtocol(max_message_size=len(text)).receive_text(text)
    assert frame(reply)["type"] == "pong"


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_multibyte_frame_is_measured_in_utf8_bytes(char: str) -> None:
    """The limit counts UTF-8 bytes, not characters: one byte over closes, at the limit the
    frame is answered (its echo is over MAX_PONG_SIZE once escaped: invalid_message)."""
    head, tail = '{"type": "ping", "payload": {"pad": "', '"}}'
    limit = 4096
    room = limit - len(head) - len(tail)
    width = len(char.encode("utf-8"))
    fits = head + char * (room // width) + "x" * (room % width) + tail
    assert len(fits.encode("utf-8")) == limit
    [reply] = ClientProtocol(max_message_size=limit).receive_text(fits)
    assert isinstance(reply, Reply)
    assert frame(reply)["payload"]["code"] == "invalid_message"
    over = head + char * (room // width) + "x" * (room % width + 1) + tail
    assert len(over) <= limit < len(over.encode("utf-8"))
    assert ClientProtocol(max_message_size=limit).receive_text(over) == [
        Close(CLOSE_MESSAGE_TOO_BIG, "message too big")
    ]


def test_a_ping_whose_echo_would_exceed_max_pong_size_is_invalid() -> None:
    """A pong is at most MAX_PONG_SIZE bytes: a larger echo (pongs are ASCII-escaped, up to
    six bytes a character) is refused as invalid_message, never queued."""
    small = json.dumps({"type": "ping", "payload": {"pad": "x" * 100}})
    [reply] = ClientProtocol().receive_text(small)
    assert frame(reply)["type"] == "pong"
    big = json.dumps({"type": "ping", "payload": {"pad": "\u00e9" * 1000}})
    [reply] = ClientProtocol().receive_text(big)
    answer = frame(reply)
    assert (answer["type"], answer["payload"]["code"]) == ("error", "invalid_message")
    assert str(MAX_PONG_SIZE) in answer["payload"]["message"]


# --------------------------------------------------------------------------- rate limit


def test_burst_of_messages_is_allowed() -> None:
    """client_burst messages may arrive at once."""
    clock = FakeClock()
    protocol = ClientProtocol(client_rate=1.0, client_burst=5, clock=clock)
    for _ in range(5):
        assert frame(send({"type": "ping"}, protocol)[0])["type"] == "pong"


def test_message_beyond_the_burst_is_answered_with_rate_limited() -> None:
    """The first message over the bucket gets error rate_limited, not a close."""
    clock = FakeClock()
    protocol = ClientProtocol(client_rate=1.0, client_burst=2, clock=clock)
    send({"type": "ping"}, protocol)
    send({"type": "ping"}, protocol)
    assert error_code(send({"type": "ping"}, protocol)) == "rate_limited"


def test_client_that_keeps_sending_after_rate_limited_is_closed_with_1008() -> None:
    """Another message while still over the limit closes with 1008."""
    clock = FakeClock()
    protocol = ClientProtocol(client_rate=1.0, client_burst=1, clock=clock)
    send({"type": "ping"}, protocol)
    assert error_code(send({"type": "ping"}, protocol)) == "rate_limited"
    clock.now += 0.5  # half a token: still over the limit
    assert send({"type": "ping"}, protocol) == [
        Close(CLOSE_POLICY_VIOLATION, "rate limit exceeded")
    ]


def test_binary_frames_count_towards_the_rate_limit() -> None:
    """Binary frames take tokens like text frames."""
    protocol = ClientProtocol(client_rate=1.0, client_burst=1, clock=FakeClock())
    protocol.receive_bytes(b"x")
    assert error_code(protocol.receive_bytes(b"x")) == "rate_limited"
    assert protocol.receive_bytes(b"x") == [Close(CLOSE_POLICY_VIOLATION, "rate limit exceeded")]


def test_tokens_refill_at_client_rate() -> None:
    """After 1/client_rate seconds one more message is allowed."""
    clock = FakeClock()
    protocol = ClientProtocol(client_rate=4.0, client_burst=1, clock=clock)
    send({"type": "ping"}, protocol)
    clock.now += 0.25
    assert frame(send({"type": "ping"}, protocol)[0])["type"] == "pong"


def test_client_that_slows_down_after_rate_limited_is_forgiven() -> None:
    """Once a token is available again, the warning is reset and messages flow."""
    clock = FakeClock()
    protocol = ClientProtocol(client_rate=1.0, client_burst=1, clock=clock)
    send({"type": "ping"}, protocol)
    assert error_code(send({"type": "ping"}, protocol)) == "rate_limited"
    clock.now += 1.0
    assert frame(send({"type": "ping"}, protocol)[0])["type"] == "pong"
    assert error_code(send({"type": "ping"}, protocol)) == "rate_limited"


def test_refill_never_exceeds_the_burst() -> None:
    """A long silence allows client_burst messages, not more."""
    clock = FakeClock()
    protocol = ClientProtocol(client_rate=10.0, client_burst=3, clock=clock)
    clock.now += 3600
    for _ in range(3):
        assert frame(send({"type": "ping"}, protocol)[0])["type"] == "pong"
    assert error_code(send({"type": "ping"}, protocol)) == "rate_limited"


def test_clock_going_backwards_does_not_add_tokens() -> None:
    """A clock step back is treated as no time passing."""
    clock = FakeClock()
    protocol = ClientProtocol(client_rate=1.0, client_burst=1, clock=clock)
    send({"type": "ping"}, protocol)
    clock.now -= 100
    assert error_code(send({"type": "ping"}, protocol)) == "rate_limited"


@pytest.mark.parametrize("rate", [None, 0])
def test_no_client_rate_means_no_limit(rate: float | None) -> None:
    """client_rate=None (or 0) turns the limit off."""
    protocol = ClientProtocol(client_rate=rate, client_burst=1, clock=FakeClock())
    for _ in range(200):
        assert frame(send({"type": "ping"}, protocol)[0])["type"] == "pong"


def test_oversized_frames_close_before_the_rate_limit_is_consulted() -> None:
    """An oversized frame closes with 1009 even when the client is rate limited."""
    protocol = ClientProtocol(max_message_size=8, client_rate=1.0, client_burst=1)
    protocol.receive_text("{}")
    assert protocol.receive_text("x" * 9) == [Close(CLOSE_MESSAGE_TOO_BIG, "message too big")]


# --------------------------------------------------------------------------- frames


def test_control_frames_have_type_timestamp_and_payload() -> None:
    """Server control frames follow the wire envelope with a millisecond Z timestamp."""
    data = strict_json(control_frame("ping", {}))
    assert set(data) == {"type", "timestamp", "payload"}
    assert data["type"] == "ping"
    assert data["timestamp"].endswith("Z")
    assert len(data["timestamp"]) == len("2026-02-21T10:00:00.123Z")


def test_error_frame_carries_code_and_message() -> None:
    """error frames carry payload.code and payload.message."""
    data = strict_json(error_frame("resume_unavailable", "refetch"))
    assert data["type"] == "error"
    assert data["payload"] == {"code": "resume_unavailable", "message": "refetch"}


def test_welcome_frame_names_connection_heartbeat_last_event_and_server() -> None:
    """welcome carries connectionId, heartbeatInterval, lastEventId and livepanel/<version>."""
    data = strict_json(welcome_frame("c1", 25.0, "ab12:0"))
    assert data["type"] == "welcome"
    assert data["payload"] == {
        "connectionId": "c1",
        "heartbeatInterval": 25.0,
        "lastEventId": "ab12:0",
        "server": f"livepanel/{__version__}",
    }


# --------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    ("position", "parsed"),
    [("0", (0,)), ("17", (17,)), ("1700000000000-3", (1700000000000, 3))],
)
def test_ids_round_trip_through_make_id_and_parse_id(
    position: str, parsed: tuple[int, ...]
) -> None:
    """make_id joins epoch and position; parse_id splits them back into a sortable position."""
    event_id = make_id("a1b2c3d4", position)
    assert event_id == f"a1b2c3d4:{position}"
    assert parse_id(event_id) == ("a1b2c3d4", parsed)


def test_parsed_positions_sort_numerically() -> None:
    """Positions compare as numbers, not as text."""
    assert parse_id("e:9")[1] < parse_id("e:10")[1]
    assert parse_id("e:1700000000000-9")[1] < parse_id("e:1700000000000-10")[1]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "17",
        "ab12:",
        ":17",
        "ab12:x",
        "ab12:-1",
        "ab12:1-2-3",
        "ab 12:1",
        "ab12:1 ",
        "ab12:1\n",
        "a" * 33 + ":1",
        "ab12:" + "1" * 21,
        17,
        None,
        ["ab12:1"],
    ],
)
def test_parse_id_refuses_what_livepanel_did_not_issue(value: Any) -> None:
    """Anything but <epoch>:<n> or <epoch>:<ms>-<seq> raises ValueError."""
    with pytest.raises(ValueError, match="malformed event id"):
        parse_id(value)


# --------------------------------------------------------------------------- connect query


def test_connect_query_without_types_or_since_subscribes_to_nothing_new() -> None:
    """No types and no since: no initial subscribe, no batching."""
    assert parse_connect_query(b"") == ConnectOptions()
    assert parse_connect_query("other=1") == ConnectOptions()


def test_connect_query_types_and_since_act_as_a_first_subscribe() -> None:
    """?types=a,b&since=<id> gives the same Subscribe as a first subscribe message."""
    options = parse_connect_query(b"types=session.*,agent.status&since=ab12%3A41")
    assert options.subscribe == Subscribe(("session.*", "agent.status"), "ab12:41")
    assert options.error is None


def test_connect_query_since_alone_subscribes_to_everything() -> None:
    """?since=<id> without types resumes every type."""
    assert parse_connect_query("since=ab12:41").subscribe == Subscribe(("*",), "ab12:41")


def test_connect_query_ignores_blank_globs() -> None:
    """Empty and blank entries in types are dropped; an empty types means everything."""
    assert parse_connect_query("types=a.b,, ,c.*").subscribe == Subscribe(("a.b", "c.*"))
    assert parse_connect_query("types=").subscribe == Subscribe(("*",))


def test_connect_query_empty_since_is_no_since() -> None:
    """?since= (empty) asks for no replay."""
    assert parse_connect_query("types=a.b&since=").subscribe == Subscribe(("a.b",), None)


@pytest.mark.parametrize(
    ("query", "batch"),
    [("batch=1", True), ("batch=true", True), ("batch=YES", True), ("batch=0", False), ("", False)],
)
def test_connect_query_batch_opts_in_to_batching(query: str, batch: bool) -> None:
    """?batch=1 (or true, yes) lets the server pack several frames into one."""
    assert parse_connect_query(query).batch is batch


@pytest.mark.parametrize("query", ["since=oops", "since=ab12:x", "types=a%20b", "types=a/b"])
def test_connect_query_malformed_value_is_reported_not_refused(query: str) -> None:
    """A malformed types or since becomes an error to send after welcome, not a refusal."""
    options = parse_connect_query(query + "&batch=1")
    assert options.subscribe is None
    assert options.error is not None
    assert options.error.startswith("connect URL:")
    assert options.batch is True


def test_connect_query_reads_raw_bytes() -> None:
    """The ASGI query_string (bytes, possibly not UTF-8) never raises."""
    options = parse_connect_query(b"types=\xff\xfe&since=ab12:1")
    assert options.subscribe is None
    assert options.error is not None


# --------------------------------------------------------------------------- type filter


def test_star_filter_matches_every_type() -> None:
    """The default filter, "*", matches every event type."""
    for kind in ["session.created", "x", "deploy.finished.late"]:
        assert TypeFilter().matches(kind)


@pytest.mark.parametrize(
    ("glob", "kind", "hit"),
    [
        ("session.*", "session.created", True),
        ("session.*", "session.killed", True),
        ("session.*", "agent.status", False),
        ("session.*", "sessions.created", False),
        ("session.*", "session", False),
        ("session.created", "session.created", True),
        ("session.created", "session.created.late", False),
        ("session.created", "xsession.created", False),
        ("*.status", "agent.status", True),
        ("*.status", "gateway.status", True),
        ("*.status", "agent.statuses", False),
        ("agent.?tatus", "agent.status", True),
        ("agent.?tatus", "agent.sstatus", False),
        ("session.*", "sessionXcreated", False),
    ],
)
def test_type_filter_globs(glob: str, kind: str, hit: bool) -> None:
    """Globs: * any run of characters, ? one character, everything else literal."""
    assert TypeFilter([glob]).matches(kind) is hit


def test_type_filter_matches_any_of_several_globs() -> None:
    """A type matches when any glob matches it."""
    flt = TypeFilter(["session.*", "cron.executed"])
    assert flt.matches("session.killed")
    assert flt.matches("cron.executed")
    assert not flt.matches("agent.status")


def test_empty_type_filter_matches_nothing() -> None:
    """A filter with no globs matches no type."""
    assert not TypeFilter([]).matches("session.created")


def test_type_filter_answers_the_same_when_cached() -> None:
    """Repeated questions get the same answers (answers are cached)."""
    flt = TypeFilter(["a.*"])
    for _ in range(3):
        assert flt.matches("a.b")
        assert not flt.matches("b.a")


def test_type_filter_cache_stays_bounded() -> None:
    """Matching thousands of distinct types neither fails nor grows the cache past 1024."""
    flt = TypeFilter(["t.1*"])
    hits = sum(flt.matches(f"t.{n}") for n in range(5000))
    assert hits == 1 + 10 + 100 + 1000
    assert len(flt._cache) <= 1024


def test_type_filter_repr_shows_its_globs() -> None:
    """repr names the globs."""
    assert repr(TypeFilter(["a.*"])) == "TypeFilter(['a.*'])"


# --------------------------------------------------------------------------- property


def assert_allowed(actions: list[Any]) -> None:
    """The actions are one of the table's answers: a valid reply, an Ack, a Subscribe or a Close."""
    assert isinstance(actions, list)
    assert len(actions) == 1
    [action] = actions
    if isinstance(action, Reply):
        action.text.encode("utf-8")  # sendable as a text frame
        data = frame(action)
        assert set(data) == {"type", "timestamp", "payload"}
        assert data["type"] in ("pong", "error")
        if data["type"] == "error":
            assert data["payload"]["code"] in ERROR_CODES
    elif isinstance(action, Ack):
        parse_id(action.id)
    elif isinstance(action, Subscribe):
        assert isinstance(action.types, tuple)
        if action.since is not None:
            parse_id(action.since)
    else:
        assert isinstance(action, Close)
        assert action.code in (CLOSE_MESSAGE_TOO_BIG, CLOSE_POLICY_VIOLATION)


def any_text(max_size: int) -> st.SearchStrategy[str]:
    """Text including lone surrogates, which JSON escapes like "\\ud800" can produce."""
    odd = st.sampled_from(["\ud800", "a\udfff", "é", "😀"])
    return st.text(st.characters(exclude_categories=()), max_size=max_size) | odd


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(any_text(max_size=8), inner),
    max_leaves=30,
)
id_like = st.sampled_from(["ab12:1", "ab12:1700000000000-0", "ab12:", "17", ""]) | st.text(
    max_size=12
)
glob_like = st.sampled_from(["*", "session.*", "a?b", "", "a b", "x" * 200]) | st.text(max_size=12)
payloads = (
    st.fixed_dictionaries(
        {},
        optional={
            "id": id_like | json_values,
            "types": st.lists(glob_like, max_size=40) | json_values,
            "since": st.none() | id_like | json_values,
        },
    )
    | json_values
)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["ping", "ack", "subscribe", "other"]) | json_values},
    optional={"payload": payloads, "timestamp": st.text(max_size=30) | json_values},
)


@given(text=st.text(max_size=300))
def test_any_text_frame_gets_an_answer_from_the_table(text: str) -> None:
    """Property: arbitrary text gets a list of actions from the table, never an exception."""
    assert_allowed(ClientProtocol(max_message_size=256).receive_text(text))


@given(data=st.binary(max_size=300))
def test_any_binary_frame_gets_an_answer_from_the_table(data: bytes) -> None:
    """Property: arbitrary bytes get an error or a Close, never an exception."""
    assert_allowed(ClientProtocol(max_message_size=256).receive_bytes(data))


@given(value=json_values)
def test_any_json_value_gets_an_answer_from_the_table(value: Any) -> None:
    """Property: arbitrary JSON values get a list of actions from the table."""
    assert_allowed(ClientProtocol().receive_text(json.dumps(value)))


@given(message=messages, ensure_ascii=st.booleans())
def test_any_message_gets_an_answer_from_the_table(message: Any, ensure_ascii: bool) -> None:
    """Property: ping/ack/subscribe/other with arbitrary payloads never raise."""
    text = json.dumps(message, ensure_ascii=ensure_ascii)
    assert_allowed(ClientProtocol().receive_text(text))


@settings(max_examples=50)  # each example is a whole conversation
@given(messages=st.lists(messages, min_size=1, max_size=30), steps=st.lists(st.floats(0, 1)))
def test_any_sequence_of_messages_keeps_to_the_table(
    messages: list[Any], steps: list[float]
) -> None:
    """Property: a stream of messages under a fake clock only ever gets table answers."""
    clock = FakeClock()
    protocol = ClientProtocol(client_rate=5.0, client_burst=3, clock=clock)
    for n, message in enumerate(messages):
        clock.now += steps[n] if n < len(steps) else 0.0
        actions = protocol.receive_text(json.dumps(message))
        assert_allowed(actions)
        if isinstance(actions[0], Close):
            break


GLOB_ALPHABET = "ab.-_*?"


@given(
    globs=st.lists(st.text(GLOB_ALPHABET, min_size=1, max_size=12), max_size=4),
    kind=st.text("ab.-_", max_size=16),
)
@settings(max_examples=500, deadline=None)
def test_type_filter_agrees_with_fnmatch(globs: list[str], kind: str) -> None:
    """The linear matcher answers as fnmatch's case-sensitive globs do, on the allowed alphabet."""
    expected = any(fnmatch.fnmatchcase(kind, glob) for glob in globs)
    assert TypeFilter(globs).matches(kind) is expected


ALLOWED = "".join(chr(c) for c in range(128) if chr(c).isalnum()) + "_.-"


@st.composite
def glob_and_kind(draw: st.DrawFn) -> tuple[str, str]:
    """A type over the whole allowed alphabet, and a glob made from it by turning some
    characters into ? and some runs into * (a hit), or any glob (mostly a miss)."""
    kind = draw(st.text(ALLOWED, max_size=20))
    if draw(st.booleans()):
        return draw(st.text(ALLOWED + "*?", min_size=1, max_size=20)), kind
    glob, i = "", 0
    while i < len(kind):
        step = draw(st.integers(0, 3))
        glob += "*" if step == 0 else "?" if step == 1 else kind[i]
        i += draw(st.integers(0, 3)) if step == 0 else 1
    return (glob or "*") + draw(st.sampled_from(["", "*", "?"])), kind


@given(glob_and_kind())
@settings(max_examples=500, deadline=None)
def test_type_filter_agrees_with_fnmatch_on_the_whole_alphabet(case: tuple[str, str]) -> None:
    """Letters, digits, '.', '_', '-' and both wildcards, as subscribe allows them."""
    glob, kind = case
    assert TypeFilter([glob]).matches(kind) is fnmatch.fnmatchcase(kind, glob)


def test_a_pathological_glob_is_matched_in_linear_time() -> None:
    """The glob that froze the backtracking regex ("*?" * 11 + "Z") costs microseconds per type,
    even 32 of the longest such globs against a 128-character type."""
    evil = TypeFilter(["*?" * 63 + "Z"] * MAX_GLOBS)
    started = time.perf_counter()
    for n in range(100):  # distinct types, so the cache does not answer
        assert not evil.matches("a" * 125 + f"{n:03d}")
    per_type = (time.perf_counter() - started) / 100
    assert per_type < 0.005, f"{per_type * 1e6:.0f} µs per type"
    assert TypeFilter(["*?" * 11 + "Z"]).matches("a" * 30 + "Z")


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E400", "[1e999]"])
def test_a_number_that_overflows_is_an_invalid_message_never_a_pong(number: str) -> None:
    """1e999 is well-formed JSON but no finite number: invalid_message, never a pong carrying
    Infinity (which a strict JSON parser cannot read)."""
    text = '{"type": "ping", "payload": {"x": ' + number + "}}"
    assert error_code(ClientProtocol().receive_text(text)) == "invalid_message"
