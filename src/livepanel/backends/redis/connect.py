"""How the Redis backend reaches Redis: URLs, TLS, ACL users, Sentinel and Cluster.

One function turns what the user gave (a URL, or ``sentinels=`` and ``service=``)
into a :class:`RedisTarget`; another makes the redis-py client for it. Every
mistake that can be seen without a network round trip is a
``ConfigurationError`` at construction; what needs the server (a Cluster node
behind a ``redis://`` URL, a read-only replica) is checked by
:func:`check_deployment` when the backend starts.

URLs::

    redis://[user:password@]host:6379/0
    rediss://[user:password@]host:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required
    unix:///run/redis.sock?db=0
    redis+sentinel://[user:password@]host:26379,host:26380/mymaster/0
    redis+cluster://[user:password@]host:7000,host:7001/

``rediss+sentinel://`` and ``rediss+cluster://`` use TLS for every connection.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.crc import key_slot
from redis.exceptions import NoPermissionError, ResponseError

from livepanel.errors import ConfigurationError
from livepanel.events.redaction import redact_url

__all__ = [
    "SCHEMES",
    "RedisTarget",
    "check_deployment",
    "companion_key",
    "describe_client",
    "describe_error",
    "make_client",
    "parse_target",
    "pop_query",
    "redact_url",
]

SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)
"""The URL schemes the Redis backend accepts."""

Topology = Literal["standalone", "sentinel", "cluster"]
RedisClient = aioredis.Redis | RedisCluster  # what every module of the backend talks to

_CERT_REQS = ("none", "optional", "required")
_SSL_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")
_SENTINEL_QUERY = ("sentinel_username", "sentinel_password")
_DEFAULT_PORTS = {"sentinel": 26379, "cluster": 6379}


@dataclasses.dataclass(frozen=True)
class RedisTarget:
    """Where and how to connect, credentials included (so its repr hides them).

    Example::

        >>> target = parse_target("redis+sentinel://:s3cret@10.0.0.5:26379/mymaster/0")
        >>> target.topology, target.service, target.location
        ('sentinel', 'mymaster', 'redis+sentinel://:***@10.0.0.5:26379/mymaster/0')
    """

    topology: Topology
    location: str
    """The URL with every password replaced by ``***``: safe for logs and reprs."""
    url: str | None = dataclasses.field(default=None, repr=False)
    """Standalone only: the URL given to redis-py, credentials included (never shown)."""
    nodes: tuple[tuple[str, int], ...] = ()
    """Sentinel: the sentinels; Cluster: the startup nodes."""
    service: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    sentinel_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)


def parse_target(
    url: str | None = None,
    *,
    sentinels: Iterable[str | tuple[str, int]] | None = None,
    service: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> RedisTarget:
    """Read a Redis URL, or explicit sentinels and a service name, into a :class:`RedisTarget`.

    Args:
        url: see the module's docstring; ``None`` with ``sentinels``.
        sentinels: ``["host:26379", ("host", 26380)]``, instead of a URL.
        service: the Sentinel service (master) name, with ``sentinels``.
        options: redis-py connection options (``username``, ``password``,
            ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``,
            ``sentinel_username``, ``sentinel_password``, ...); the URL's query
            holds the same names and wins.

    Raises:
        ConfigurationError: a malformed URL, an unknown ``ssl_cert_reqs``, TLS
            options without TLS.

    Example::

        >>> parse_target(sentinels=["10.0.0.5:26379"], service="mymaster").nodes
        (('10.0.0.5', 26379),)
    """
    given = dict(options or {})
    if sentinels is not None:
        if url is not None:
            raise ConfigurationError("RedisBackend: give a URL or sentinels=, not both")
        if not service:
            raise ConfigurationError(
                "RedisBackend: sentinels= needs service= (the master's name in Sentinel)"
            )
        nodes = tuple(_node(item, "sentinel") for item in sentinels)
        if not nodes:
            raise ConfigurationError("RedisBackend: sentinels= is empty")
        hosts = ",".join(f"{h}:{p}" for h, p in nodes)
        scheme = "rediss+sentinel" if given.get("ssl") else "redis+sentinel"
        return _sentinel_target(
            f"{scheme}://{hosts}/{service}/{given.pop('db', 0)}", nodes, service, given
        )
    if service is not None:
        raise ConfigurationError("RedisBackend: service= goes with sentinels=")
    if url is None:
        url = "redis://localhost:6379/0"
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in SCHEMES:
        raise ConfigurationError(
            f"RedisBackend: cannot use {redact_url(url)!r}; expected one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if "+" not in scheme:
        _check_tls(scheme == "rediss", given, redact_url(url))
        return RedisTarget("standalone", redact_url(url), url=url, options=given)
    tls = scheme.startswith("rediss")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        hosts = netloc
    else:
        user, _, password = userinfo.partition(":")
        if user:
            given["username"] = unquote(user)
        if password:
            given["password"] = unquote(password)
    given.update(_query_options(query, redact_url(url)))
    if tls:
        given["ssl"] = True
    kind = scheme.partition("+")[2]
    nodes = tuple(_node(h, kind) for h in hosts.split(",") if h)
    if not nodes:
        raise ConfigurationError(f"RedisBackend: no hosts in {redact_url(url)!r}")
    if kind == "cluster":
        if path.strip("/") not in ("", "0") or given.get("db", 0) not in (0, "0"):
            raise ConfigurationError("RedisBackend: Redis Cluster has only database 0")
        given.pop("db", None)
        _check_tls(tls, given, redact_url(url))
        return RedisTarget("cluster", redact_url(url), nodes=nodes, options=given)
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ConfigurationError(
            f"RedisBackend: cannot use {redact_url(url)!r}; expected "
            "redis+sentinel://host:26379[,host:26380...]/<service>[/<db>]"
        )
    if len(parts) == 2:
        given["db"] = int(parts[1])
    return _sentinel_target(url, nodes, parts[0], given)


def make_client(target: RedisTarget, defaults: Mapping[str, Any]) -> RedisClient:
    """The redis-py client for ``target``; ``defaults`` (timeouts, retry) yield to the user's.

    Example::

        client = make_client(parse_target("redis://localhost:6379/0"), {"socket_timeout": 5})
    """
    options = {**defaults, **target.options}
    try:
        if target.topology == "standalone":
            assert target.url is not None
            return aioredis.Redis.from_url(target.url, **options)
        if target.topology == "cluster":
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
                **options,
            )
        assert target.service is not None
        sentinel_options = {
            key: value for key, value in options.items() if key.startswith("socket_")
        }
        sentinel_options.update(target.sentinel_options)
        sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_options, **options)
        master: aioredis.Redis = sentinel.master_for(target.service)
        return master
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"RedisBackend: cannot use {target.location!r}: {redact_url(str(exc))}; expected "
            "redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path, "
            "redis+sentinel://host:26379[,...]/<service>[/<db>] or redis+cluster://host:port[,...]"
        ) from None


def companion_key(stream: str, suffix: str, *, cluster: bool) -> str:
    """The key of a record kept beside ``stream``, in the same Cluster hash slot.

    Outside a Cluster (and for a stream whose name has a hash tag) it is
    ``<stream>:<suffix>``, as it always was; in a Cluster an untagged stream's
    whole name becomes the tag, which hashes like the stream itself.

    Example::

        >>> companion_key("livepanel:events", "epoch", cluster=False)
        'livepanel:events:epoch'
        >>> companion_key("livepanel:events", "epoch", cluster=True)
        '{livepanel:events}:epoch'
        >>> companion_key("{livepanel}:events", "epoch", cluster=True)
        '{livepanel}:events:epoch'
    """
    if cluster and not _has_hash_tag(stream):
        key = f"{{{stream}}}:{suffix}"
    else:
        key = f"{stream}:{suffix}"
    if cluster and key_slot(key.encode()) != key_slot(stream.encode()):
        raise ConfigurationError(
            f"RedisBackend: the stream key {stream!r} and {key!r} fall in different Cluster "
            "hash slots; name the stream with one hash tag, e.g. '{livepanel}:events'"
        )
    return key


async def check_deployment(client: RedisClient, target: RedisTarget) -> None:
    """At start: refuse a deployment livepanel cannot work with, saying what to do instead.

    Raises:
        ConfigurationError: a certificate file that does not exist, a
            ``redis://`` URL that names a Cluster node, or a read-only replica.

    Example::

        await check_deployment(client, parse_target("redis://cache:6379/0"))
    """
    _check_files(target)
    if target.topology == "cluster":
        return  # the cluster client checks its slots map itself when it connects
    assert isinstance(client, aioredis.Redis)
    try:
        reply = await client.execute_command("HELLO")  # type: ignore[no-untyped-call]
    except (NoPermissionError, ResponseError):
        return  # an ACL without HELLO, or an old server: nothing to learn here
    info = _hello_info(reply)
    if info.get("mode") == "cluster":
        raise ConfigurationError(
            f"livepanel: {target.location} is a Redis Cluster node; use "
            "redis+cluster://host:port[,host:port...] so every node is reached"
        )
    if info.get("role") not in (None, "master"):
        raise ConfigurationError(
            f"livepanel: {target.location} is a read-only replica; point the URL at the "
            "primary, or use redis+sentinel://sentinel:26379/<service> to follow failovers"
        )


def pop_query(url: str, name: str) -> tuple[str, str | None]:
    """Take the query parameter ``name`` out of ``url``: (the rest of the URL, its value).

    Example::

        >>> pop_query("redis://cache:6379/0?stream=app:events&db=1", "stream")
        ('redis://cache:6379/0?db=1', 'app:events')
    """
    base, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    values = [value for key, value in pairs if key == name]
    if not values:
        return url, None
    kept = urlencode([(key, value) for key, value in pairs if key != name])
    return (f"{base}?{kept}" if kept else base), values[-1]


def describe_client(client: Any) -> str:
    """Where a client the application made connects, for logs (it has no URL of ours).

    Example::

        >>> describe_client(aioredis.Redis(host="cache", port=6380, db=2))
        'cache:6380/2'
    """
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}) or {}
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def describe_error(exc: BaseException) -> str:
    """An error as its type and message, for a log line or a ``BackendUnavailable``; a URL
    the message quotes is shown as :func:`redact_url` shows it.

    Example::

        >>> describe_error(TimeoutError()), describe_error(OSError("refused"))
        ('TimeoutError', 'OSError: refused')
        >>> describe_error(ValueError("bad rediss://u:pw@cache/0?ssl_password=x"))
        'ValueError: bad rediss://u:***@cache/0?ssl_password=***'
    """
    message = redact_url(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# ---------------------------------------------------------------------- helpers


def _sentinel_target(
    url: str, nodes: tuple[tuple[str, int], ...], service: str, options: dict[str, Any]
) -> RedisTarget:
    sentinel_options = {
        k[len("sentinel_") :]: options.pop(k) for k in _SENTINEL_QUERY if k in options
    }
    tls = bool(options.get("ssl"))
    _check_tls(tls, options, redact_url(url))
    if tls:  # the sentinels are reached the same way as the servers they watch
        sentinel_options.update({k: v for k, v in options.items() if k.startswith("ssl")})
    return RedisTarget(
        "sentinel",
        redact_url(url),
        nodes=nodes,
        service=service,
        options=options,
        sentinel_options=sentinel_options,
    )


def _node(item: str | tuple[str, int] | Sequence[Any], kind: str) -> tuple[str, int]:
    if isinstance(item, str):
        host, port = _split_host_port(item, _DEFAULT_PORTS[kind])
    else:
        host, port = str(item[0]), item[1]
    try:
        number = int(port)
    except (TypeError, ValueError):
        number = -1
    if not host or not 0 < number < 65536:
        raise ConfigurationError(f"RedisBackend: {item!r} is not a host:port")
    return host, number


def _split_host_port(text: str, default: int) -> tuple[str, str | int]:
    text = text.strip()
    if text.startswith("["):  # [::1]:26379
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else default
    host, colon, port = text.rpartition(":")
    return (host, port) if colon else (text, default)


def _query_options(query: str, location: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=False):
        parser: Callable[[str], Any] | None = URL_QUERY_ARGUMENT_PARSERS.get(name)  # type: ignore[assignment]
        try:
            options[name] = parser(value) if parser else value
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"RedisBackend: invalid value for {name!r} in {location!r}"
            ) from None
    return options


def _check_tls(tls: bool, options: dict[str, Any], location: str) -> None:
    """TLS options make sense only with TLS; their values are checked here, not at connect.

    With TLS, the server's certificate must name the host connected to unless the user
    set ``ssl_check_hostname`` or turned verification off (``ssl_cert_reqs=none``)."""
    query = dict(parse_qsl(location.partition("?")[2]))
    merged = {**options, **{k: v for k, v in query.items() if k.startswith("ssl_")}}
    ssl_given = sorted(k for k in merged if k.startswith("ssl_"))
    if ssl_given and not tls:
        raise ConfigurationError(
            f"RedisBackend: {', '.join(ssl_given)} need TLS; use rediss:// "
            f"(or rediss+sentinel://, rediss+cluster://), not {location.partition(':')[0]}://"
        )
    reqs = merged.get("ssl_cert_reqs", "required")
    if isinstance(reqs, str) and reqs.lower() not in _CERT_REQS:
        raise ConfigurationError(
            f"RedisBackend: ssl_cert_reqs={reqs!r}; expected one of {', '.join(_CERT_REQS)}"
        )
    if tls and "ssl_check_hostname" not in merged:
        # redis-py before 6 checked no name by default, and it refuses the check without a
        # verified certificate: say what we mean, whatever its version
        unverified = reqs is None or reqs == ssl.CERT_NONE or str(reqs).lower() == "none"
        options["ssl_check_hostname"] = not unverified


def _check_files(target: RedisTarget) -> None:
    """Certificate files are read at connect time: say which one is missing before that."""
    query = dict(parse_qsl((target.url or "").partition("?")[2]))
    for name in _SSL_FILES:
        path = target.options.get(name) or query.get(name)
        if path and not os.path.exists(path):
            raise ConfigurationError(f"livepanel: {name}={path!r}: no such file")


def _has_hash_tag(key: str) -> bool:
    start = key.find("{")
    return start >= 0 and key.find("}", start + 1) > start + 1


def _hello_info(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        items: Iterable[tuple[Any, Any]] = reply.items()
    elif isinstance(reply, (list, tuple)):
        items = zip(reply[::2], reply[1::2], strict=False)
    else:
        return {}
    return {_text(k): _text(v) for k, v in items if isinstance(v, (str, bytes))}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
