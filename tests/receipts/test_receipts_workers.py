"""Receipts through real servers: two uvicorn workers on one Redis stream, dashboards
that are real Python clients acking after their handler ran, and ``apublish(confirm=...)``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from livepanel.client import connect
from tests.redis.redis_helpers import RedisServer, free_port, run

pytestmark = pytest.mark.redis

ROOT = Path(__file__).parents[2]
APP = "tests.receipts.receipts_worker_app:create_app"


@contextlib.contextmanager
def workers(redis_url: str, directory: Path, count: int = 2) -> Iterator[list[int]]:
    """``count`` uvicorn processes on one stream; their ports. Stopped at the end."""
    env = {**os.environ, "LIVEPANEL_BACKEND_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    started: list[tuple[int, subprocess.Popen[bytes], Path]] = []
    try:
        for i in range(count):
            port, log = free_port(), directory / f"worker-{i}.log"
            command = [
                *(sys.executable, "-m", "uvicorn", APP, "--factory", "--app-dir", str(ROOT)),
                *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            ]
            with log.open("wb") as out:
                process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            started.append((port, process, log))
        deadline = time.monotonic() + 20
        for port, process, log in started:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).is_success:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"worker on {port} did not start:\n{log.read_text()}")
                time.sleep(0.05)
        yield [port for port, _, _ in started]
    finally:
        for _, process, _ in started:
            process.terminate()
        for _, process, _ in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
    for _, _, log in started:
        assert "Traceback" not in log.read_text(), log.read_text()


async def dashboard(port: int, user: str, handled: list[str], stuck: asyncio.Event | None) -> None:
    """A real client whose handler records the event and acks it; ``stuck``: a handler that
    never completes (it waits for an event nobody sets), so it never acks."""
    url = f"ws://127.0.0.1:{port}/ws/"
    async with connect(url, username=user, password="any") as client:
        async for event in client:
            if stuck is not None:
                await stuck.wait()
            assert event.id is not None
            handled.append(event.id)
            await client.ack(event.id)


async def publish(port: int, n: int, confirm: int, within: float) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/publish",
            params={"n": n, "confirm": confirm, "within": within},
        )
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_confirm_counts_dashboards_on_every_worker_and_waits_out_a_stuck_one(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """3 dashboards on two workers, one whose handler never completes: ``confirm=2`` returns
    within a second with the two users; ``confirm=3`` returns after ``within`` with two."""

    async def scenario() -> None:
        with workers(redis_server.url, tmp_path) as (first, second):
            alice: list[str] = []
            bob: list[str] = []
            never = asyncio.Event()  # never set: carol's handler never completes
            tasks = [
                asyncio.create_task(dashboard(first, "alice", alice, None)),
                asyncio.create_task(dashboard(second, "bob", bob, None)),
                asyncio.create_task(dashboard(second, "carol", [], never)),
            ]
            try:
                # every dashboard is connected once a warm-up event reached the two that ack
                warm = await publish(first, 0, confirm=0, within=0)
                await until(lambda: warm["id"] in alice and warm["id"] in bob)

                answer = await publish(first, 1, confirm=2, within=5.0)
                assert answer["elapsed"] < 1.0, answer
                assert answer["users"] == ["alice", "bob"], answer
                assert answer["connections"] == 2, answer

                answer = await publish(second, 2, confirm=3, within=1.5)
                assert 1.5 <= answer["elapsed"] < 3.0, answer
                assert answer["users"] == ["alice", "bob"], answer  # carol never acked
                assert answer["connections"] == 2, answer
                assert answer["id"] in alice
                assert answer["id"] in bob
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    run(scenario(), timeout=60)
