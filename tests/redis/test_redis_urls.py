"""Reading Redis URLs and arguments: Sentinel and Cluster addresses, TLS options, where a
stream's keys live, and every mistake refused before any connection."""

from __future__ import annotations

from typing import Any

import pytest

from livepanel import ConfigurationError
from livepanel.backends import backend_from_url
from livepanel.backends.redis import RedisBackend
from livepanel.backends.redis.connect import companion_key, parse_target

pytestmark = pytest.mark.redis


@pytest.mark.parametrize(
    ("url", "nodes", "service", "options"),
    [
        (
            "redis+sentinel://a:26379,b:26380/mymaster/2",
            (("a", 26379), ("b", 26380)),
            "mymaster",
            {"db": 2},
        ),
        ("redis+sentinel://a,[::1]:26380/m", (("a", 26379), ("::1", 26380)), "m", {}),
        (
            "rediss+sentinel://u:p%40ss@a:1/m?ssl_cert_reqs=none&sentinel_password=sp",
            (("a", 1),),
            "m",
            {"username": "u", "password": "p@ss", "ssl": True, "ssl_cert_reqs": "none"},
        ),
        ("redis+cluster://a:7000,b:7001/", (("a", 7000), ("b", 7001)), None, {}),
        ("rediss+cluster://:pw@a:7000", (("a", 7000),), None, {"password": "pw", "ssl": True}),
    ],
)
def test_sentinel_and_cluster_urls_are_read(
    url: str, nodes: tuple[tuple[str, int], ...], service: str | None, options: dict[str, Any]
) -> None:
    """Hosts (IPv6 in brackets, default ports), the service, the database, credentials
    (percent-decoded) and TLS come out of the URL."""
    target = parse_target(url)
    assert target.nodes == nodes
    assert target.service == service
    assert {k: target.options[k] for k in options} == options
    if "sentinel_password" in url:
        assert target.sentinel_options["password"] == "sp"
        assert target.sentinel_options["ssl_cert_reqs"] == "none"  # sentinels over TLS too


def test_backend_from_url_knows_every_redis_scheme() -> None:
    """LIVEPANEL_BACKEND_URL may name a Sentinel or a Cluster."""
    sentinel = backend_from_url("redis+sentinel://a:26379/mymaster/0?wait_replicas=0")
    cluster = backend_from_url("redis+cluster://a:7000?stream={app}:events")
    assert isinstance(sentinel, RedisBackend)
    assert isinstance(cluster, RedisBackend)
    assert (sentinel.topology, sentinel.wait_replicas) == ("sentinel", 0)
    assert (cluster.topology, cluster.epoch_key) == ("cluster", "{app}:events:epoch")


def test_key_names_outside_a_cluster_are_unchanged() -> None:
    """A single server or Sentinel keeps the epoch record at <stream>:epoch, as before."""
    assert RedisBackend("redis://a/0").epoch_key == "livepanel:events:epoch"
    assert companion_key("app:events", "epoch", cluster=False) == "app:events:epoch"
    assert companion_key("app:events", "epoch", cluster=True) == "{app:events}:epoch"


@pytest.mark.parametrize(
    ("url", "kwargs", "message"),
    [
        ("rediss://h:6380/0?ssl_cert_reqs=always", {}, "ssl_cert_reqs='always'"),
        ("redis://h:6379/0", {"ssl_ca_certs": "/ca.pem"}, "need TLS; use rediss://"),
        ("redis://h:6379/0?ssl_certfile=/c.pem", {}, "need TLS"),
        ("redis+sentinel://h:26379", {}, "<service>"),
        ("redis+sentinel://h:26379/mymaster/x", {}, "<service>"),
        ("redis+cluster://h:7000/1", {}, "only database 0"),
        ("redis+cluster://h:7000", {"wait_replicas": 1}, "not supported on Redis Cluster"),
        ("redis+cluster://", {}, "no hosts"),
        ("redis+sentinel://h:port/mymaster", {}, "not a host:port"),
        ("redis://h/0?wait_replicas=one", {}, "not a number"),
    ],
)
def test_impossible_connection_settings_are_configuration_errors(
    url: str, kwargs: dict[str, Any], message: str
) -> None:
    """Mistakes that need no server are refused at construction, saying what was expected."""
    with pytest.raises(ConfigurationError, match=message):
        RedisBackend.from_url(url, **kwargs)


def test_passwords_are_redacted_in_every_location() -> None:
    """User-info, password= and sentinel_password= are hidden in location and repr."""
    backend = RedisBackend.from_url(
        "redis+sentinel://app:pw-1@127.0.0.1:26379,127.0.0.1:26380/mymaster/2"
        "?sentinel_password=pw-2"
    )
    text = repr(backend) + backend.location
    assert "pw-1" not in text
    assert "pw-2" not in text
    assert (backend.topology, backend.wait_replicas) == ("sentinel", 1)
