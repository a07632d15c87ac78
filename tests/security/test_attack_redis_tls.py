"""Redis over TLS, tried as an attacker on the network path would: a Redis server holding a
certificate from the trusted CA but for another host (what anyone with one certificate from
that CA can present) must be refused whatever redis-py's own default is; and a reader of
reprs, error reports and logs (an error tracker recording a frame's locals, a shared log)
must never see the TLS key's ``ssl_password`` or any other secret of the URL."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from redis.asyncio.connection import SSLConnection

from livepanel import BackendUnavailable, Broadcaster
from livepanel.backends.redis import RedisBackend
from livepanel.backends.redis.connect import describe_error, parse_target
from tests.certs import make_test_ca
from tests.conftest import LogCapture
from tests.redis.redis_helpers import RedisServer, free_port, run, started

pytestmark = pytest.mark.redis

KEY_PASSWORD = "k3y-pa#ss"  # a "#" too: it is part of the secret, not a fragment
"""The passphrase of the client's TLS key: ``ssl_password``."""


class TLSOnly:
    """A private redis-server with a TLS port presenting ``files["server_cert"]``."""

    def __init__(self, port: int, files: dict[str, Path]) -> None:
        self.port = port
        self.files = files

    def url(self, **query: str) -> str:
        tls = {
            "ssl_ca_certs": str(self.files["ca"]),
            "ssl_certfile": str(self.files["client_cert"]),
            "ssl_keyfile": str(self.files["client_key"]),
        }
        tls.update(query)
        return f"rediss://127.0.0.1:{self.port}/0?{urlencode(tls)}"


def tls_server(
    start_redis: Callable[..., RedisServer], directory: Path, server_names: str
) -> TLSOnly:
    files = make_test_ca(directory, server_names=server_names)
    port = free_port()
    start_redis(
        args=[
            *("--tls-port", str(port), "--tls-ca-cert-file", str(files["ca"])),
            *("--tls-cert-file", str(files["server_cert"])),
            *("--tls-key-file", str(files["server_key"]), "--tls-auth-clients", "yes"),
        ]
    )
    return TLSOnly(port, files)


@pytest.fixture
def impostor(start_redis: Callable[..., RedisServer], tmp_path: Path) -> TLSOnly:
    """Reached at 127.0.0.1, its certificate (signed by the trusted CA) names another host."""
    return tls_server(start_redis, tmp_path, "DNS:cache.other.example")


@pytest.fixture
def genuine(start_redis: Callable[..., RedisServer], tmp_path: Path) -> TLSOnly:
    """Reached at 127.0.0.1, with a certificate for 127.0.0.1, and an encrypted client key."""
    server = tls_server(start_redis, tmp_path, "IP:127.0.0.1,DNS:localhost")
    encrypted = tmp_path / "client_key_encrypted.pem"
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command makes the test certificates"
    subprocess.run(
        [
            *(openssl, "pkcs8", "-topk8", "-v2", "aes-256-cbc"),
            *("-in", str(server.files["client_key"]), "-out", str(encrypted)),
            *("-passout", f"pass:{KEY_PASSWORD}"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    server.files["client_key"] = encrypted
    return server


@pytest.fixture(params=["redis-py 5 defaults", "installed redis-py"])
def redis_py_default(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways redis-py may ship: 5.x (the floor of livepanel's range) checked no host
    name unless told; later versions do."""
    if request.param == "redis-py 5 defaults":
        original = SSLConnection.__init__

        def as_in_redis_py_5(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("ssl_check_hostname", False)
            original(self, *args, **kwargs)

        monkeypatch.setattr(SSLConnection, "__init__", as_in_redis_py_5)
    return str(request.param)


async def start_and_close(url: str) -> None:
    async with started(Broadcaster(RedisBackend(url, timeout=2.0))):
        pass


def test_attack_a_certificate_for_another_host_is_refused(
    impostor: TLSOnly, redis_py_default: str
) -> None:
    """The impostor's certificate is signed by the CA the URL trusts but names
    cache.other.example: start() fails on the host name, with either redis-py default."""
    with pytest.raises(BackendUnavailable, match=r"(?i)hostname|IP address mismatch"):
        run(start_and_close(impostor.url()))


def test_turning_the_check_off_is_the_users_choice(
    impostor: TLSOnly, redis_py_default: str
) -> None:
    """ssl_check_hostname=false in the URL (or ssl_cert_reqs=none) is obeyed: livepanel
    sets the check only when the user said nothing."""
    run(start_and_close(impostor.url(ssl_check_hostname="false")))
    run(start_and_close(impostor.url(ssl_cert_reqs="none")))


def test_every_tls_topology_asks_for_the_host_name_check() -> None:
    """Sentinel (sentinels and master) and Cluster pass ssl_check_hostname=True too, unless
    the user set it or turned verification off."""
    sentinel = parse_target("rediss+sentinel://10.0.0.5:26379/mymaster/0")
    assert sentinel.options["ssl_check_hostname"] is True
    assert sentinel.sentinel_options["ssl_check_hostname"] is True
    cluster = parse_target("rediss+cluster://10.0.0.5:7000")
    assert cluster.options["ssl_check_hostname"] is True
    by_argument = parse_target(sentinels=["10.0.0.5"], service="m", options={"ssl": True})
    assert by_argument.options["ssl_check_hostname"] is True
    assert parse_target("rediss://cache/0?ssl_cert_reqs=none").options == {
        "ssl_check_hostname": False
    }
    assert "ssl_check_hostname" not in parse_target("redis://cache/0").options


# ---------------------------------------------------------------------- ssl_password


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    handler = LogCapture()
    log = logging.getLogger("livepanel")
    saved = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(saved)


def logged(handler: LogCapture) -> str:
    return "\n".join(
        record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        for record in handler.records
    )


def test_attack_ssl_password_never_shows_while_it_works(genuine: TLSOnly, logs: LogCapture) -> None:
    """The client key is encrypted; its passphrase is in the URL. The backend connects and
    carries events, and neither the backend's repr, its target's (what an error tracker
    records from a frame's locals), stats nor a log line holds the passphrase or a piece
    of it."""
    url = genuine.url(ssl_password=KEY_PASSWORD)
    backend = RedisBackend(url, timeout=2.0)
    target = parse_target(url)

    async def scenario() -> str:
        async with started(Broadcaster(backend)) as broadcaster:
            event = await broadcaster.apublish("presence.changed", {"users": [], "connections": 0})
            assert event.id is not None
            return repr(backend) + repr(target) + str(broadcaster.stats())

    import livepanel.presence  # noqa: F401 - registers presence.changed

    shown = run(scenario()) + logged(logs)
    for piece in (KEY_PASSWORD, quote(KEY_PASSWORD), "pa#ss", "#ss"):
        assert piece not in shown, shown
    assert "ssl_password=***" in repr(backend)


@pytest.mark.parametrize("encoded", [True, False], ids=["encoded", "written-as-is"])
@pytest.mark.parametrize(
    "scheme", ["rediss://127.0.0.1:{port}/0", "rediss+sentinel://127.0.0.1:{port}/mymaster/0"]
)
def test_attack_ssl_password_never_shows_when_start_fails(
    genuine: TLSOnly, logs: LogCapture, scheme: str, encoded: bool
) -> None:
    """The same URL against a port where nothing answers, the passphrase percent-encoded or
    written as is: BackendUnavailable (which the application logs) and every log line name
    the place, never the passphrase nor the part after its "#"."""
    port = free_port()
    query = genuine.url().partition("?")[2]
    secret = quote(KEY_PASSWORD) if encoded else KEY_PASSWORD
    url = scheme.format(port=port) + "?" + query + "&ssl_password=" + secret

    async def scenario() -> None:
        broadcaster = Broadcaster(RedisBackend(url, timeout=1.0))
        try:
            with pytest.raises(BackendUnavailable) as failure:
                await broadcaster.start()
            message = str(failure.value)
            assert "ssl_password=***" in message
            for piece in (KEY_PASSWORD, quote(KEY_PASSWORD), "pa#ss", "#ss"):
                assert piece not in message
        finally:
            await broadcaster.close()

    run(scenario())
    assert KEY_PASSWORD not in logged(logs)
    assert "#ss" not in logged(logs)


def test_an_error_quoting_a_url_is_shown_redacted() -> None:
    """What redis-py (or anything below it) says is passed through the URL redactor before
    it reaches a BackendUnavailable or a log line."""
    error = ValueError(f"cannot use rediss://u:hunter2@cache/0?ssl_password={KEY_PASSWORD}")
    shown = describe_error(error)
    assert "hunter2" not in shown
    assert "pa#ss" not in shown
    assert shown == "ValueError: cannot use rediss://u:***@cache/0?ssl_password=***"
