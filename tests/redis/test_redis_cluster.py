"""Redis Cluster: three primaries made with ``redis-cli --cluster create`` on free loopback
ports. Both keys of a stream hash to one slot, so the Lua scripts and transactions run;
a ``redis://`` URL naming a Cluster node is refused at start with what to use instead."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from livepanel import BackendUnavailable, Broadcaster, ConfigurationError
from livepanel.backends.redis import DEFAULT_STREAM, RedisBackend
from tests.conftest import redis_binary
from tests.redis.redis_helpers import (
    RedisServer,
    Tick,
    create_cluster,
    documented_acl,
    free_port,
    numbers,
    run,
    started,
    take,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def cluster(start_redis: Callable[..., RedisServer]) -> list[RedisServer]:
    """Three cluster-enabled redis-servers, joined into one Cluster of three primaries."""
    cli = redis_binary("redis-cli", "redis-tools")
    args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    args += ["--cluster-node-timeout", "2000"]
    # an explicit bus port: the default (port + 10000) does not exist for ports above 55535
    nodes = [start_redis(args=[*args, "--cluster-port", str(free_port())]) for _ in range(3)]
    create_cluster(cli, nodes)
    return nodes


def cluster_url(nodes: list[RedisServer], query: str = "") -> str:
    hosts = ",".join(f"127.0.0.1:{node.port}" for node in nodes[:2])  # any node will do
    return f"redis+cluster://{hosts}/{query}"


@pytest.mark.parametrize("stream", [DEFAULT_STREAM, "{clawpanel}:events"])
def test_a_cluster_publishes_replays_and_reads_with_both_keys_in_one_slot(
    cluster: list[RedisServer], stream: str
) -> None:
    """Two broadcasters on redis+cluster:// exchange events and replay with since; the
    stream and its epoch record share a hash slot, whether the stream name has a tag or not."""

    async def scenario() -> tuple[str, str]:
        url = cluster_url(cluster, f"?stream={stream}")
        reader, writer = Broadcaster(url), Broadcaster(url)
        async with started(reader), started(writer), reader.subscribe() as live:
            events = [await writer.apublish(Tick(n=n)) for n in range(5)]
            assert numbers(await take(live, 5)) == [0, 1, 2, 3, 4]
            async with writer.subscribe(since=events[0].id) as late:
                assert late.resumed is True
                assert numbers(await take(late, 4)) == [1, 2, 3, 4]
            backend = reader.backend
            assert isinstance(backend, RedisBackend)
            assert backend.cluster
            return backend.stream, backend.epoch_key

    stream_key, epoch_key = run(scenario())
    with redis.Redis(port=cluster[0].port) as node:
        slots = {node.execute_command("CLUSTER", "KEYSLOT", key) for key in (stream_key, epoch_key)}
    assert len(slots) == 1
    expected = "{livepanel:events}:epoch" if stream == DEFAULT_STREAM else f"{stream}:epoch"
    assert epoch_key == expected


def test_the_documented_acl_user_is_enough_on_a_cluster(cluster: list[RedisServer]) -> None:
    """The user of docs/redis-production.md, with its Cluster line, on every node: publishing,
    replay and the reader work, and no node logged a denied command."""
    password = "cluster-acl-s3cret"
    for node in cluster:
        with redis.Redis(port=node.port) as admin:
            for command in documented_acl(password):
                admin.execute_command(*command)

    async def scenario() -> None:
        url = f"redis+cluster://livepanel:{password}@127.0.0.1:{cluster[0].port}/"
        async with started(Broadcaster(url)) as b, b.subscribe() as live:
            events = [await b.apublish(Tick(n=n)) for n in range(3)]
            assert numbers(await take(live, 3)) == [0, 1, 2]
            async with b.subscribe(since=events[0].id) as late:
                assert late.resumed is True
                assert numbers(await take(late, 2)) == [1, 2]

    run(scenario())
    for node in cluster:
        with redis.Redis(port=node.port) as admin:
            assert admin.acl_log() == [], node.port


def test_a_redis_url_naming_a_cluster_node_is_refused_at_start(cluster: list[RedisServer]) -> None:
    """redis://<a cluster node> would reach one node of three: start() says to use
    redis+cluster:// instead."""

    async def scenario() -> None:
        b = Broadcaster(f"redis://127.0.0.1:{cluster[0].port}/0")
        try:
            with pytest.raises(ConfigurationError, match=r"Cluster node; use redis\+cluster://"):
                await b.start()
        finally:
            await b.close()

    run(scenario())


def test_an_unreachable_cluster_is_unavailable_at_start() -> None:
    """No node answers: start() raises BackendUnavailable naming the URL."""

    async def scenario() -> None:
        b = Broadcaster(RedisBackend(f"redis+cluster://127.0.0.1:{free_port()}", timeout=1.0))
        try:
            with pytest.raises(BackendUnavailable, match=r"redis\+cluster://127.0.0.1"):
                await b.start()
        finally:
            await b.close()

    run(scenario())


def test_a_stream_name_whose_keys_cannot_share_a_slot_is_refused() -> None:
    """A stream named with an empty hash tag cannot have its epoch record in its slot."""
    with pytest.raises(ConfigurationError, match="different Cluster hash slots"):
        RedisBackend("redis+cluster://127.0.0.1:7000", stream="live{}panel")
