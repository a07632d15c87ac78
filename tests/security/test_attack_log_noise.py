"""Refused handshakes paging whoever alerts on ERROR, on a real uvicorn ``websockets-sansio``
server (uvicorn's default): an attacker's stream of bad logins would otherwise write
``ERROR: ASGI callable returned without completing handshake.`` once per attempt."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from livepanel import Broadcaster, LivePanelApp
from livepanel.logging_filters import (
    REFUSED_HANDSHAKE_MESSAGE,
    RefusedHandshakeFilter,
    quiet_refused_handshakes,
    uvicorn_logs_refused_handshakes,
)
from tests.conftest import LogCapture
from tests.integration.helpers import (
    AUTH,
    admin_only,
    basic,
    expect_welcome,
    open_ws,
    refusal,
    wait_until,
)
from tests.servers import RunningServer, run_server

SANSIO = "uvicorn-websockets-sansio"


@pytest.fixture
def quiet() -> Iterator[None]:
    """The one-line mitigation (attached whatever the uvicorn), removed again after the test."""
    installed = quiet_refused_handshakes(force=True)
    assert installed is not None
    yield
    logging.getLogger("uvicorn.error").removeFilter(installed)


@pytest.fixture
def unfiltered() -> Iterator[None]:
    """No RefusedHandshakeFilter on uvicorn.error (the docs' examples install one), restored."""
    logger = logging.getLogger("uvicorn.error")
    removed = [f for f in logger.filters if isinstance(f, RefusedHandshakeFilter)]
    for installed in removed:
        logger.removeFilter(installed)
    yield
    for installed in removed:
        logger.addFilter(installed)


@pytest.fixture
def sansio() -> Iterator[RunningServer]:
    app = LivePanelApp(Broadcaster(), auth=admin_only(), auth_failure_limit=None)
    with run_server(app, SANSIO) as server:
        yield server


def refuse_many(server: RunningServer, count: int) -> None:
    for n in range(count):
        refusal(server, headers={"Authorization": basic("admin", f"guess-{n}")})
        refusal(server, headers=AUTH, origin="https://evil.example")


def incomplete_handshake_lines(logs: LogCapture) -> list[str]:
    # the capture sits on "uvicorn" and "uvicorn.error": a propagated record comes twice
    records = {id(r): r for r in logs.records if r.msg == REFUSED_HANDSHAKE_MESSAGE}
    return [r.getMessage() for r in records.values()]


def test_attack_refused_handshakes_log_no_error_with_the_mitigation(
    quiet: None, sansio: RunningServer, server_logs: LogCapture
) -> None:
    """With quiet_refused_handshakes(), 40 refused handshakes (401 and 403) write no ERROR;
    the refusals still reach the client, and a good login still works."""
    refuse_many(sansio, 20)
    with open_ws(sansio) as ws:
        expect_welcome(ws)
    assert incomplete_handshake_lines(server_logs) == []
    assert server_logs.errors() == []


async def leaves_the_handshake_unanswered(scope: Any, receive: Any, send: Any) -> None:
    await receive()


@pytest.fixture
def broken() -> Iterator[RunningServer]:
    # started before server_logs: uvicorn's logging configuration replaces handlers
    with run_server(leaves_the_handshake_unanswered, SANSIO) as server:
        yield server


def test_the_mitigation_still_logs_an_app_that_really_leaves_a_handshake_unanswered(
    quiet: None, broken: RunningServer, server_logs: LogCapture
) -> None:
    """The filter is precise: an app that returns without accepting or refusing is logged."""
    assert refusal(broken).response.status_code == 500
    wait_until(lambda: incomplete_handshake_lines(server_logs) != [], what="the ERROR")


@pytest.mark.skipif(
    not uvicorn_logs_refused_handshakes(), reason="this uvicorn has the fix (0.55 or later)"
)
def test_uvicorn_sansio_before_0_55_logs_an_error_per_refused_handshake(
    unfiltered: None, sansio: RunningServer, server_logs: LogCapture
) -> None:
    """Without the mitigation a uvicorn before 0.55 logs the spurious ERROR (uvicorn PR #3138)."""
    refuse_many(sansio, 2)
    wait_until(
        lambda: len(incomplete_handshake_lines(server_logs)) == 4,
        what="uvicorn's ERROR for each refusal",
    )


@pytest.mark.skipif(
    uvicorn_logs_refused_handshakes(), reason="this uvicorn predates the fix (before 0.55)"
)
def test_uvicorn_sansio_from_0_55_logs_no_error_per_refused_handshake(
    unfiltered: None, sansio: RunningServer, server_logs: LogCapture
) -> None:
    """uvicorn 0.55 and later write no ERROR for a refusal, so the mitigation attaches nothing."""
    refuse_many(sansio, 5)
    with open_ws(sansio) as ws:
        expect_welcome(ws)  # the server has handled (and would have logged) every refusal
    assert incomplete_handshake_lines(server_logs) == []
    assert quiet_refused_handshakes() is None
    assert not any(
        isinstance(f, RefusedHandshakeFilter) for f in logging.getLogger("uvicorn.error").filters
    )


@pytest.mark.parametrize(
    ("version", "logs"),
    [("0.54.0", True), ("0.30.6", True), ("0.55.0", False), ("0.56.1", False), ("1.0", False)],
)
def test_the_filter_is_needed_only_before_uvicorn_0_55(version: str, logs: bool) -> None:
    """The version rule behind quiet_refused_handshakes(): releases before 0.55 need it."""
    assert uvicorn_logs_refused_handshakes(version) is logs


@pytest.mark.parametrize("kind", ["uvicorn-websockets", "uvicorn-wsproto", SANSIO])
def test_which_uvicorn_implementations_log_an_error_per_refused_handshake(
    kind: str, unfiltered: None, server_logs: LogCapture
) -> None:
    """What docs/deployment.md says of the installed uvicorn: websockets-sansio logs the ERROR
    before 0.55 only; the legacy websockets and the wsproto implementations never do."""
    app = LivePanelApp(Broadcaster(), auth=admin_only(), auth_failure_limit=None)
    with run_server(app, kind) as server:
        refuse_many(server, 3)
        with open_ws(server) as ws:
            expect_welcome(ws)  # every refusal before it was handled, and would have been logged
    expected = 6 if kind == SANSIO and uvicorn_logs_refused_handshakes() else 0
    if expected:
        wait_until(lambda: len(incomplete_handshake_lines(server_logs)) == expected, what="ERRORs")
    assert len(incomplete_handshake_lines(server_logs)) == expected
