"""Connect tickets, attacked: reused, expired, forged and tampered tickets are refused with 401
on real servers, and one endpoint takes Basic credentials or a ticket (SPEC section 8)."""

from __future__ import annotations

import base64
import json
import logging
import string
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from livepanel import AnyOf, Broadcaster, LivePanelApp, TicketAuth, Tickets
from livepanel.errors import ConfigurationError
from livepanel.tickets import TicketPrincipal
from tests.conftest import LogCapture
from tests.integration.helpers import (
    AUTH,
    Serve,
    admin_only,
    assert_refused,
    basic,
    expect_welcome,
    open_ws,
    refusal,
    wait_until,
)

SECRET = "s" * 32
OTHER_SECRET = "o" * 32


def ticket_app(tickets: Tickets, **options: Any) -> LivePanelApp:
    """An endpoint taking tickets only, on the broadcaster the tickets remember nonces in."""
    return LivePanelApp(tickets.broadcaster, auth=TicketAuth(tickets), **options)


def with_ticket(text: str) -> str:
    return f"ticket={quote(text, safe='')}"


def connects(server: Any, query: str, headers: dict[str, str] | None = None) -> bool:
    """True when the handshake is accepted and the server says welcome."""
    with open_ws(server, query, headers=headers) as ws:
        expect_welcome(ws)
    return True


def tampered(text: str, **changes: Any) -> str:
    """The ticket with its payload changed and its signature kept."""
    payload, _, signature = text.partition(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    encoded = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode())
    return f"{encoded.rstrip(b'=').decode()}.{signature}"


@pytest.fixture
def tickets() -> Tickets:
    return Tickets(SECRET, broadcaster=Broadcaster())


# ---------------------------------------------------------------------- on real servers


def test_a_ticket_is_accepted_once(serve: Serve, tickets: Tickets) -> None:
    """A fresh ticket opens a connection; the same ticket again is refused with 401."""
    server = serve(ticket_app(tickets))
    text = tickets.issue("alice")
    assert connects(server, with_ticket(text))
    assert_refused(refusal(server, with_ticket(text), headers=None), 401, "unauthorized")
    assert connects(server, with_ticket(tickets.issue("alice")))


def test_an_expired_ticket_is_refused(serve: Serve, tickets: Tickets) -> None:
    """A ticket past its ttl is a 401, although it was never used."""
    server = serve(ticket_app(tickets))
    short = Tickets(SECRET, ttl=0.05, broadcaster=tickets.broadcaster)
    text = short.issue("alice")
    wait_until(lambda: tickets.verify(text) is None, what="the ticket to expire")
    assert_refused(refusal(server, with_ticket(text), headers=None), 401, "unauthorized")


def test_a_ticket_signed_with_another_secret_is_refused(serve: Serve, tickets: Tickets) -> None:
    """A forged ticket (well-formed, signed with a key the server does not hold) is a 401."""
    server = serve(ticket_app(tickets))
    forged = Tickets(OTHER_SECRET).issue("alice")
    assert_refused(refusal(server, with_ticket(forged), headers=None), 401, "unauthorized")


@pytest.mark.parametrize(
    "changes",
    [{"a": ["team:ops", "team:billing"]}, {"a": None}, {"u": "admin"}, {"e": 4102444800}],
    ids=["audiences-widened", "audiences-removed", "user-changed", "expiry-extended"],
)
def test_a_tampered_ticket_is_refused(
    serve: Serve, tickets: Tickets, changes: dict[str, Any]
) -> None:
    """A ticket whose payload was changed after signing is a 401, and still never consumed."""
    server = serve(ticket_app(tickets))
    text = tickets.issue("alice", audiences=["team:ops"])
    assert_refused(
        refusal(server, with_ticket(tampered(text, **changes)), headers=None), 401, "unauthorized"
    )
    assert connects(server, with_ticket(text))


@pytest.mark.parametrize(
    "query",
    ["ticket=", "ticket=garbage", "ticket=a.b", "ticket=%00%ff.%ff", "ticket=" + "A" * 5000],
    ids=["empty", "no-dot", "short", "binary", "huge"],
)
def test_garbage_tickets_are_refused(serve: Serve, tickets: Tickets, query: str) -> None:
    """Whatever is in ``ticket=``, only a ticket we issued opens a connection."""
    server = serve(ticket_app(tickets))
    assert_refused(refusal(server, query, headers=None), 401, "unauthorized")


def test_two_tickets_in_one_url_are_refused(serve: Serve, tickets: Tickets) -> None:
    """``?ticket=a&ticket=b`` is refused even when both are valid: which one counts is unclear."""
    server = serve(ticket_app(tickets))
    query = f"{with_ticket(tickets.issue('alice'))}&{with_ticket(tickets.issue('bob'))}"
    assert_refused(refusal(server, query, headers=None), 401, "unauthorized")


def test_the_principal_carries_the_tickets_user_and_audiences(
    serve: Serve, tickets: Tickets
) -> None:
    """``authorize`` sees a TicketPrincipal with the ticket's user and audiences."""
    seen: list[Any] = []

    def authorize(principal: Any, scope: Any) -> bool:
        seen.append(principal)
        return True

    server = serve(ticket_app(tickets, authorize=authorize))
    assert connects(server, with_ticket(tickets.issue("alice", ["user:alice", "team:ops"])))
    assert connects(server, with_ticket(tickets.issue("bob")))
    assert seen == [
        TicketPrincipal("alice", frozenset({"user:alice", "team:ops"})),
        TicketPrincipal("bob", None),
    ]


def test_refused_tickets_count_toward_the_throttle_and_missing_ones_do_not(
    serve: Serve, tickets: Tickets
) -> None:
    """Bad tickets lock the address out (429); handshakes without a ticket never do."""
    server = serve(ticket_app(tickets, auth_failure_limit=3))
    for _ in range(5):
        assert_refused(refusal(server, headers=None), 401, "unauthorized")
    assert connects(server, with_ticket(tickets.issue("alice")))
    for _ in range(3):
        assert_refused(refusal(server, "ticket=guess", headers=None), 401, "unauthorized")
    locked = refusal(server, with_ticket(tickets.issue("alice")), headers=None)
    assert_refused(locked, 429, "too_many_failures")


def test_tickets_never_appear_in_the_logs(
    serve: Serve, tickets: Tickets, server_logs: LogCapture
) -> None:
    """Neither an accepted nor a refused ticket is in any server or livepanel log line."""
    server = serve(ticket_app(tickets, allowed_origins=["https://panel.test"]))
    accepted = tickets.issue("alice")
    assert connects(server, with_ticket(accepted))
    reused = refusal(server, with_ticket(accepted), headers=None)
    assert reused.response.status_code == 401
    unused = tickets.issue("alice")  # refused for its origin: still valid, must not leak
    wrong_origin = refusal(server, with_ticket(unused), headers={"Origin": "https://evil.test"})
    assert wrong_origin.response.status_code == 403
    text = server_logs.text()
    for secret in (accepted, unused, accepted.partition(".")[2], unused.partition(".")[2]):
        assert secret not in text


# ---------------------------------------------------------------------- Basic or ticket


def any_of_app(tickets: Tickets) -> LivePanelApp:
    auth = AnyOf(admin_only(), TicketAuth(tickets))
    return LivePanelApp(tickets.broadcaster, auth=auth)


def test_any_of_accepts_basic_credentials_and_tickets(serve: Serve, tickets: Tickets) -> None:
    """One endpoint serves a script with Basic credentials and a dashboard with a ticket."""
    server = serve(any_of_app(tickets))
    assert connects(server, "", headers=AUTH)
    assert connects(server, with_ticket(tickets.issue("alice")), headers=None)


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", None),
        ("", {"Authorization": basic("admin", "wrong")}),
        ("", {"Authorization": "Basic !!!"}),
        ("", {"Authorization": "Bearer abc"}),
        ("ticket=garbage", None),
        ("ticket=" + quote(Tickets(OTHER_SECRET).issue("admin"), safe=""), None),
    ],
    ids=["nothing", "wrong-password", "bad-base64", "other-scheme", "bad-ticket", "forged-ticket"],
)
def test_any_of_refuses_garbage_with_the_basic_challenge(
    serve: Serve, tickets: Tickets, query: str, headers: dict[str, str] | None
) -> None:
    """Anything but good credentials of either kind is a 401 that asks for Basic."""
    server = serve(any_of_app(tickets))
    refused = refusal(server, query, headers=headers)
    assert_refused(refused, 401, "unauthorized")
    assert refused.response.headers["WWW-Authenticate"].startswith('Basic realm="livepanel"')


def test_any_of_lets_the_first_authenticator_with_credentials_decide(
    serve: Serve, tickets: Tickets
) -> None:
    """Wrong Basic credentials are not rescued by a good ticket in the same handshake."""
    server = serve(any_of_app(tickets))
    text = tickets.issue("alice")
    wrong = {"Authorization": basic("admin", "wrong")}
    assert_refused(refusal(server, with_ticket(text), headers=wrong), 401, "unauthorized")
    assert connects(server, with_ticket(text), headers=None)  # the ticket was not consumed


# ---------------------------------------------------------------------- configuration


def test_a_short_secret_is_a_configuration_error() -> None:
    """A secret under 32 bytes stops the app at start."""
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        Tickets("x" * 31)


@pytest.mark.parametrize("value", [None, "", "short"], ids=["unset", "empty", "short"])
def test_from_env_fails_closed(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    """Tickets.from_env refuses an unset, empty or short secret and names the variable."""
    if value is None:
        monkeypatch.delenv("LIVEPANEL_TICKET_SECRET", raising=False)
    else:
        monkeypatch.setenv("LIVEPANEL_TICKET_SECRET", value)
    with pytest.raises(ConfigurationError, match="LIVEPANEL_TICKET_SECRET"):
        Tickets.from_env()


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
def test_a_ttl_must_be_a_positive_number_of_seconds(ttl: float) -> None:
    """A ttl of zero, below or not finite is refused."""
    with pytest.raises(ConfigurationError, match="ttl"):
        Tickets(SECRET, ttl=ttl)


# ---------------------------------------------------------------------- the parser


@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_verify_refuses_any_text_it_did_not_sign(text: str) -> None:
    """Arbitrary input never raises and never verifies."""
    assert Tickets(SECRET).verify(text) is None


ONE_HOUR = Tickets(SECRET, ttl=3600)
ONE_HOUR_TICKET = ONE_HOUR.issue("alice", audiences=["team:ops"])


@settings(max_examples=200)
@given(st.data())
def test_changing_any_character_of_a_ticket_breaks_it(data: st.DataObject) -> None:
    """A ticket with one character replaced, added or removed is refused."""
    tickets, text = ONE_HOUR, ONE_HOUR_TICKET  # the same ticket in every example
    at = data.draw(st.integers(0, len(text) - 1))
    alphabet = string.ascii_letters + string.digits + "-_.!=+/ "
    how = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    if how == "replace":
        new = data.draw(st.sampled_from(alphabet).filter(lambda c: c != text[at]))
        changed = text[:at] + new + text[at + 1 :]
    elif how == "insert":
        changed = text[:at] + data.draw(st.sampled_from(alphabet)) + text[at:]
    else:
        changed = text[:at] + text[at + 1 :]
    assume(changed != text)
    assert tickets.verify(changed) is None


def test_the_log_filter_redacts_tuple_and_mapping_arguments() -> None:
    """uvicorn's positional arguments and hypercorn's access-log atoms lose their tickets."""
    from livepanel.tickets import TicketRedactionFilter

    positional = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        "",
        0,
        '%s - "WebSocket %s" %d',
        ("a", "/ws?x=1&ticket=abc.def", 401),
        None,
    )
    TicketRedactionFilter().filter(positional)
    assert positional.getMessage() == 'a - "WebSocket /ws?x=1&ticket=[redacted]" 401'
    mapping = logging.LogRecord("hypercorn.access", logging.INFO, "", 0, "%(r)s", None, None)
    mapping.args = {"r": "GET /ws?ticket=abc.def HTTP/1.1"}
    TicketRedactionFilter().filter(mapping)
    assert mapping.getMessage() == "GET /ws?ticket=[redacted] HTTP/1.1"
