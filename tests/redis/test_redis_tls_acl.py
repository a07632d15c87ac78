"""Redis over TLS with a test CA and client certificates, as an ACL user that has only the
commands docs/redis-production.md lists: publishing, replay and the reader all work, the
certificate is verified, and the password appears in no log line, repr or error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

from livepanel import BackendUnavailable, Broadcaster, ConfigurationError
from livepanel.backends.redis import RedisBackend
from tests.certs import make_test_ca
from tests.conftest import LogCapture
from tests.redis.redis_helpers import (
    RedisServer,
    Tick,
    documented_acl,
    free_port,
    numbers,
    run,
    started,
    take,
)

pytestmark = pytest.mark.redis

USER, PASSWORD = "livepanel", "tls-acl-s3cret"


class TLSRedis:
    """A redis-server with a plain port (for the test's own admin commands) and a TLS port
    that requires a client certificate signed by the test CA."""

    def __init__(self, server: RedisServer, tls_port: int, files: dict[str, Path]) -> None:
        self.server = server
        self.tls_port = tls_port
        self.files = files

    def admin(self) -> redis.Redis:
        return redis.Redis(port=self.server.port, socket_timeout=5)

    def url(self, *, user: bool = True, **query: str) -> str:
        credentials = f"{USER}:{PASSWORD}@" if user else ""
        tls = {
            "ssl_ca_certs": str(self.files["ca"]),
            "ssl_certfile": str(self.files["client_cert"]),
            "ssl_keyfile": str(self.files["client_key"]),
            "ssl_cert_reqs": "required",
        }
        tls.update(query)
        return f"rediss://{credentials}127.0.0.1:{self.tls_port}/0?{urlencode(tls)}"


@pytest.fixture
def tls_redis(start_redis: Callable[..., RedisServer], tmp_path: Path) -> TLSRedis:
    """A private TLS redis-server whose only non-admin user is the documented ACL user."""
    files = make_test_ca(tmp_path)
    tls_port = free_port()
    server = start_redis(
        args=[
            *("--tls-port", str(tls_port), "--tls-ca-cert-file", str(files["ca"])),
            *("--tls-cert-file", str(files["server_cert"])),
            *("--tls-key-file", str(files["server_key"]), "--tls-auth-clients", "yes"),
        ]
    )
    target = TLSRedis(server, tls_port, files)
    with target.admin() as admin:
        admin.execute_command(*documented_acl(PASSWORD)[0])
    return target


def denied_commands(target: TLSRedis) -> list[str]:
    with target.admin() as admin:
        return [
            str(entry.get("object")) for entry in admin.acl_log() if entry.get("username") == USER
        ]


def test_the_documented_acl_user_publishes_replays_and_reads_over_verified_tls(
    tls_redis: TLSRedis, server_logs: LogCapture
) -> None:
    """Credentials in the URL, certificates in the query: two broadcasters (a publisher and a
    reader) exchange events, a late subscriber replays with since, WAIT-confirmed publishing
    works too, and Redis logged no denied command."""

    async def scenario() -> None:
        reader = Broadcaster(tls_redis.url())
        writer = Broadcaster(tls_redis.url(wait_replicas="0"))
        async with started(reader), started(writer), reader.subscribe() as live:
            first = await writer.apublish(Tick(n=0))
            for n in range(1, 5):
                await writer.apublish(Tick(n=n))
            assert numbers(await take(live, 5)) == [0, 1, 2, 3, 4]
            assert first.id is not None
            async with reader.subscribe(since=first.id) as late:
                assert numbers(await take(late, 4)) == [1, 2, 3, 4]
            text = repr(reader.backend) + repr(writer.backend) + str(reader.stats())
            assert PASSWORD not in text

    run(scenario())
    assert denied_commands(tls_redis) == []
    assert PASSWORD not in server_logs.text()
    assert "rediss://livepanel:***@127.0.0.1" in server_logs.text()


def test_credentials_and_certificates_as_arguments(tls_redis: TLSRedis) -> None:
    """RedisBackend(url, username=..., password=..., ssl_*=...) is the same as the URL form,
    and WAIT (which needs SCRIPT EXISTS in a pipeline) is among the documented commands."""
    files = tls_redis.files
    backend = RedisBackend(
        f"rediss://127.0.0.1:{tls_redis.tls_port}/0",
        username=USER,
        password=PASSWORD,
        ssl_ca_certs=str(files["ca"]),
        ssl_certfile=str(files["client_cert"]),
        ssl_keyfile=str(files["client_key"]),
        ssl_cert_reqs="required",
        wait_replicas=1,
        wait_timeout=0.1,
    )
    assert PASSWORD not in repr(backend)

    async def scenario() -> None:
        async with started(Broadcaster(backend)) as b, b.subscribe() as live:
            # no replica confirms it: reported failed, though it is in the stream
            with pytest.raises(BackendUnavailable, match="0 of 1 replica") as failure:
                await b.apublish(Tick(n=1))
            assert PASSWORD not in str(failure.value)
            assert numbers(await take(live, 1)) == [1]

    run(scenario())
    assert denied_commands(tls_redis) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ssl_ca_certs": "self_signed"}, "certificate verify failed"),
        ({"client_certificate": ""}, "(?i)connection|closed|reset|alert|handshake"),
        ({"password": "wrong-password"}, "(?i)invalid username-password"),
    ],
    ids=["unknown-ca", "no-client-certificate", "wrong-password"],
)
def test_what_the_server_refuses_fails_at_start_without_the_password(
    tls_redis: TLSRedis,
    tls_certificate: tuple[str, str],
    server_logs: LogCapture,
    change: dict[str, str],
    message: str,
) -> None:
    """A CA that did not sign the server's certificate, a missing client certificate and a
    wrong password each make start() raise BackendUnavailable naming the cause, never the
    password."""
    query: dict[str, Any] = {}
    password = change.get("password", PASSWORD)
    if "ssl_ca_certs" in change:
        query["ssl_ca_certs"] = tls_certificate[0]  # a self-signed certificate, not our CA
    url = tls_redis.url(**query).replace(f":{PASSWORD}@", f":{password}@")
    if "client_certificate" in change:
        url = url.split("&ssl_certfile")[0] + "&ssl_cert_reqs=required"

    async def scenario() -> None:
        b = Broadcaster(RedisBackend(url, timeout=2.0))
        try:
            with pytest.raises(BackendUnavailable, match=message) as failure:
                await b.start()
            assert password not in str(failure.value)
        finally:
            await b.close()

    run(scenario())
    assert password not in server_logs.text()


def test_a_missing_certificate_file_is_a_configuration_error_at_start(tmp_path: Path) -> None:
    """ssl_ca_certs naming no file: start() raises ConfigurationError before any connection."""
    backend = RedisBackend(f"rediss://127.0.0.1:1/0?ssl_ca_certs={tmp_path / 'nope.pem'}")

    async def scenario() -> None:
        b = Broadcaster(backend)
        try:
            with pytest.raises(ConfigurationError, match="no such file"):
                await b.start()
        finally:
            await b.close()

    run(scenario())
