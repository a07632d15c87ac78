"""The process-wide default broadcaster: get_broadcaster, set_broadcaster, broadcast_event."""

from __future__ import annotations

import asyncio
import threading

import pytest

from livepanel import (
    Broadcaster,
    ConfigurationError,
    MemoryBackend,
    broadcast_event,
    get_broadcaster,
    set_broadcaster,
)
from livepanel.events import SessionKilled


def test_default_broadcaster_is_created_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_broadcaster() builds a memory broadcaster when LIVEPANEL_BACKEND_URL is unset."""
    monkeypatch.delenv("LIVEPANEL_BACKEND_URL", raising=False)
    broadcaster = get_broadcaster()
    assert isinstance(broadcaster, Broadcaster)
    assert isinstance(broadcaster.backend, MemoryBackend)


def test_default_broadcaster_is_the_same_on_every_call() -> None:
    """Every get_broadcaster() returns the one default instance."""
    assert get_broadcaster() is get_broadcaster()


def test_default_broadcaster_is_created_once_across_threads() -> None:
    """Threads racing for the first get_broadcaster() all get the same instance."""
    seen: list[Broadcaster] = []
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait()
        seen.append(get_broadcaster())

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert all(b is seen[0] for b in seen)


def test_memory_url_in_the_environment_gives_a_memory_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LIVEPANEL_BACKEND_URL=memory:// selects the in-process backend."""
    monkeypatch.setenv("LIVEPANEL_BACKEND_URL", "memory://")
    assert isinstance(get_broadcaster().backend, MemoryBackend)


def test_empty_backend_url_means_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty LIVEPANEL_BACKEND_URL is the same as unset."""
    monkeypatch.setenv("LIVEPANEL_BACKEND_URL", "")
    assert isinstance(get_broadcaster().backend, MemoryBackend)


@pytest.mark.parametrize(
    "url", ["ftp://example.com", "kafka://broker:9092", "nonsense", "memory", "redis"]
)
def test_unknown_backend_url_in_the_environment_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """An unknown scheme in LIVEPANEL_BACKEND_URL raises ConfigurationError naming the URL."""
    monkeypatch.setenv("LIVEPANEL_BACKEND_URL", url)
    with pytest.raises(ConfigurationError, match="unknown backend URL") as info:
        get_broadcaster()
    assert url in str(info.value)
    assert "memory://" in str(info.value)


def test_set_broadcaster_replaces_the_default() -> None:
    """set_broadcaster(b) makes b the default."""
    mine = Broadcaster(history=5)
    set_broadcaster(mine)
    assert get_broadcaster() is mine


def test_set_broadcaster_none_creates_a_fresh_default_on_next_use() -> None:
    """set_broadcaster(None) forgets the default; the next use builds a new one."""
    first = get_broadcaster()
    set_broadcaster(None)
    second = get_broadcaster()
    assert second is not first


def test_set_broadcaster_refuses_anything_else() -> None:
    """set_broadcaster takes a Broadcaster or None only."""
    with pytest.raises(TypeError, match="Broadcaster or None"):
        set_broadcaster("memory://")  # type: ignore[arg-type]


def test_broadcast_event_publishes_on_the_default_broadcaster() -> None:
    """broadcast_event(...) is get_broadcaster().publish(...)."""
    mine = Broadcaster()
    set_broadcaster(mine)
    event = broadcast_event(SessionKilled(session_key="s1", agent_id="a1"))
    assert event.id is not None
    assert mine.stats()["published"] == 1


def test_broadcast_event_takes_a_type_and_payload() -> None:
    """broadcast_event("type", {camelCase payload}) validates and publishes."""
    event = broadcast_event("session.killed", {"sessionKey": "s1", "agentId": "a1"})
    assert event.payload == {"sessionKey": "s1", "agentId": "a1"}
    assert get_broadcaster().stats()["published"] == 1


def test_broadcast_event_refuses_an_invalid_event() -> None:
    """An invalid event raises ValueError in the caller and is not counted."""
    with pytest.raises(ValueError, match="unregistered event type"):
        broadcast_event("deploy.unknown", {})
    assert get_broadcaster().stats()["published"] == 0


def test_broadcast_event_from_sync_code_reaches_a_later_subscriber() -> None:
    """Sync business code can broadcast before the app's loop runs; subscribers resume it."""
    event = broadcast_event(SessionKilled(session_key="s1", agent_id="a1"))
    later = broadcast_event(SessionKilled(session_key="s2", agent_id="a1"))
    assert event.id is not None

    async def main() -> None:
        async with get_broadcaster().subscribe(since=event.id) as events:
            assert await anext(events) == later

    asyncio.run(asyncio.wait_for(main(), timeout=10))
