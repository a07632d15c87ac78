"""`livepanel doctor` against Debian's nginx in front of uvicorn: the recipe of
docs/deployment.md holds; a proxy that buffers the event stream, drops the upgrade headers or
cuts idle connections before the heartbeat is found and named."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from livepanel import BasicAuth, Broadcaster, LivePanelApp, LivePanelMiddleware
from livepanel.cli import main
from livepanel.metrics import instrument
from tests.deployment.test_caddy import caddy_in_front  # noqa: F401 - a fixture
from tests.deployment.test_nginx import adapt, nginx_binary, recipe, run_nginx
from tests.servers import free_port, run_server

PASSWORD_ENV = "DOCTOR_TEST_PASSWORD"


def middleware_app(heartbeat: float) -> Any:
    """The Quickstart's shape: FastAPI with the endpoint at exactly /ws through the middleware,
    TLS required (forwarded by the proxy), state on connect and metrics on."""
    from prometheus_client import CollectorRegistry

    endpoint = LivePanelApp(
        Broadcaster(),
        auth=BasicAuth(lambda u, p: (u, p) == ("admin", "secret")),
        require_tls=True,
        heartbeat_interval=heartbeat,
    )
    instrument(endpoint.broadcaster, app=endpoint, registry=CollectorRegistry())
    app = FastAPI()
    app.add_middleware(LivePanelMiddleware, path="/ws", endpoint=endpoint)
    return app


@contextlib.contextmanager
def behind_nginx(
    tmp_path: Path,
    tls: tuple[str, str],
    *,
    heartbeat: float = 0.5,
    edits: tuple[tuple[str, str], ...] = (),
    app: Any = None,
    proxy_headers: bool = True,
) -> Iterator[str]:
    """The recipe (with ``edits`` applied) in front of the middleware app (or ``app``);
    yields the URL."""
    nginx_binary()
    cert, key = (Path(f) for f in tls)
    listen = free_port()
    app = app or middleware_app(heartbeat)
    with run_server(
        app, "uvicorn-websockets", proxy_headers=proxy_headers, forwarded_allow_ips="127.0.0.1"
    ) as upstream:
        config = adapt(recipe(), listen=listen, upstream=upstream.port, cert=cert, key=key)
        for old, new in edits:
            assert old in config, f"the recipe no longer contains {old!r}"
            config = config.replace(old, new)
        with run_nginx(tmp_path, config, listen):
            yield f"https://127.0.0.1:{listen}/ws"


def doctor(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *extra: str
) -> tuple[int, dict[str, str], float]:
    """Run the command; its exit status, each check's line by name, and how long it took."""
    monkeypatch.setenv(PASSWORD_ENV, "secret")
    started = time.monotonic()
    argv = ["doctor", url, "-u", "admin", "--password-env", PASSWORD_ENV, "--timeout", "4"]
    status = main([*argv, *extra])
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = {
        line.split()[1]: line for line in out.splitlines() if line[:4] in ("ok  ", "warn", "FAIL")
    }
    return status, lines, took


def test_the_nginx_recipe_holds(
    tmp_path: Path,
    tls_certificate: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the documented nginx recipe every check holds and doctor exits 0."""
    with behind_nginx(tmp_path, tls_certificate) as url:
        status, lines, _ = doctor(url, capsys, monkeypatch, "--cafile", tls_certificate[0])
    assert status == 0, "\n".join(lines.values())
    for check in ("endpoint", "slash", "upgrade", "compression", "heartbeat", "stream", "origin"):
        assert lines[check].startswith("ok"), lines[check]
    assert lines["clock"].startswith("ok")
    # the test certificate lives one day: valid, and its coming expiry is a warning only
    assert lines["tls"].startswith("warn")
    assert "certificate valid for 127.0.0.1" in lines["tls"]
    assert "expires in" in lines["tls"]
    assert "a foreign Origin is refused" in lines["origin"]


def test_an_event_stream_buffered_by_the_proxy_is_found(
    tmp_path: Path,
    tls_certificate: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """proxy_buffering on (deaf to X-Accel-Buffering) holds the stream: doctor names it."""
    edits = (
        ("proxy_buffering off;", "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering;"),
    )
    with behind_nginx(tmp_path, tls_certificate, edits=edits) as url:
        status, lines, _ = doctor(url, capsys, monkeypatch, "--cafile", tls_certificate[0])
    assert status == 1
    assert lines["stream"].startswith("FAIL"), lines["stream"]
    assert "buffers" in lines["stream"]
    assert "proxy_buffering off" in lines["stream"]
    assert lines["upgrade"].startswith("ok")
    assert lines["heartbeat"].startswith("ok")


def test_missing_upgrade_headers_are_found_and_sse_named_as_what_works(
    tmp_path: Path,
    tls_certificate: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without Upgrade/Connection the app sees a plain GET: upgrade fails, only SSE works."""
    edits = (
        ("proxy_set_header Upgrade $http_upgrade;", ""),
        ("proxy_set_header Connection $connection_upgrade;", ""),
    )
    with behind_nginx(tmp_path, tls_certificate, edits=edits) as url:
        status, lines, _ = doctor(url, capsys, monkeypatch, "--cafile", tls_certificate[0])
    assert status == 1
    assert lines["upgrade"].startswith("FAIL"), lines["upgrade"]
    assert "drops the Upgrade and Connection headers" in lines["upgrade"]
    assert "only Server-Sent Events work" in lines["upgrade"]
    assert "proxy_set_header Upgrade $http_upgrade" in lines["upgrade"]
    assert lines["stream"].startswith("ok")


def test_an_idle_timeout_shorter_than_the_heartbeat_is_found(
    tmp_path: Path,
    tls_certificate: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """proxy_read_timeout 5s against a 7 s heartbeat: the cut is found, on both transports."""
    edits = (("proxy_read_timeout 2s;", "proxy_read_timeout 5s;"),)
    with behind_nginx(tmp_path, tls_certificate, heartbeat=7.0, edits=edits) as url:
        status, lines, took = doctor(url, capsys, monkeypatch, "--cafile", tls_certificate[0])
    assert status == 1
    assert lines["heartbeat"].startswith("FAIL"), lines["heartbeat"]
    assert "before the 7s heartbeat" in lines["heartbeat"]
    assert "proxy_read_timeout" in lines["heartbeat"]
    assert lines["stream"].startswith("FAIL")
    assert "idle timeout" in lines["stream"]
    assert took < 2 * 7.0 + 10  # bounded by the watch of two heartbeat intervals


def test_an_unverifiable_certificate_is_a_finding(
    tmp_path: Path,
    tls_certificate: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --cafile the test's self-signed certificate is not trusted: named, exit 1."""
    with behind_nginx(tmp_path, tls_certificate) as url:
        status, lines, _ = doctor(url, capsys, monkeypatch)
    assert status == 1
    assert lines["tls"].startswith("FAIL")
    assert "not valid" in lines["tls"]


def test_the_caddy_recipe_holds(
    caddy_in_front: tuple[str, Broadcaster],  # noqa: F811 - the fixture imported above
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the documented Caddyfile (plain HTTP on loopback here) every check holds."""
    base, _ = caddy_in_front
    status, lines, _ = doctor(f"{base}/ws", capsys, monkeypatch)
    assert status == 0, "\n".join(lines.values())
    for check in ("tls", "endpoint", "upgrade", "compression", "heartbeat", "stream", "origin"):
        assert lines[check].startswith("ok"), lines[check]
    assert lines["clock"].startswith("ok")


def mounted_app() -> Any:
    """The endpoint mounted as a sub-app at /ws: Starlette answers /ws with a redirect to /ws/."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    endpoint = LivePanelApp(
        Broadcaster(),
        auth=BasicAuth(lambda u, p: (u, p) == ("admin", "secret")),
        heartbeat_interval=0.5,
    )
    return Starlette(routes=[Mount("/ws", app=endpoint)])


def test_a_redirect_within_the_origin_is_a_warning(
    tmp_path: Path,
    tls_certificate: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mount("/ws") behind the recipe: /ws redirects to https://.../ws/, which clients follow;
    doctor says to use /ws/ and checks the rest there."""
    with behind_nginx(tmp_path, tls_certificate, app=mounted_app()) as url:
        status, lines, _ = doctor(url, capsys, monkeypatch, "--cafile", tls_certificate[0])
    assert status == 0, "\n".join(lines.values())
    assert lines["slash"].startswith("warn")
    assert "/ws redirects to /ws/" in lines["slash"]
    assert lines["upgrade"].startswith("ok")
    assert lines["stream"].startswith("ok")


def test_a_redirect_to_plain_http_behind_tls_is_found(
    tmp_path: Path,
    tls_certificate: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same app run without --proxy-headers: it redirects to http://, which no client
    follows; doctor names it and the fix."""
    with behind_nginx(tmp_path, tls_certificate, app=mounted_app(), proxy_headers=False) as url:
        status, lines, _ = doctor(url, capsys, monkeypatch, "--cafile", tls_certificate[0])
    assert status == 1
    assert lines["slash"].startswith("FAIL")
    assert "'http://" in lines["slash"]
    assert "--proxy-headers" in lines["slash"]
