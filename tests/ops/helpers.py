"""A loopback TCP proxy in front of Redis that can freeze the connections of a reader.

Also a process of its own, to be stopped with SIGSTOP as a whole:
``python -m tests.ops.helpers LISTEN_PORT TARGET_PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.redis.redis_helpers import free_port


class ReaderFreezer:
    """Forwards 127.0.0.1:``port`` to a Redis on ``target``; :meth:`freeze` stops every
    connection that has sent an ``XREAD`` (a reader's) in both directions, while the others
    (publishing, health checks) go on: a deaf reader on a Redis that answers.

    Runs its own event loop in a thread, so it serves worker processes of any kind.
    """

    def __init__(self, target: int, port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self.readers_frozen = 0  # reader connections that hit the freeze so far
        self._loop = asyncio.new_event_loop()
        self._thawed: asyncio.Event | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def freeze(self) -> None:
        self._loop.call_soon_threadsafe(self._thawed.clear)  # type: ignore[union-attr]

    def thaw(self) -> None:
        self._loop.call_soon_threadsafe(self._thawed.set)  # type: ignore[union-attr]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        state = {"reader": False, "counted": False}
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer, state, upstream=True)),
            asyncio.ensure_future(self._pipe(up_reader, writer, state, upstream=False)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (writer, up_writer):
                w.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        state: dict[str, bool],
        *,
        upstream: bool,
    ) -> None:
        thawed = self._thawed
        assert thawed is not None
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if upstream and b"XREAD" in data.upper():
                    state["reader"] = True
                if state["reader"] and not thawed.is_set():
                    if not state["counted"]:
                        state["counted"] = True
                        self.readers_frozen += 1
                    await thawed.wait()  # held, not lost: like a link that stopped moving
                writer.write(data)
                await writer.drain()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._thawed = asyncio.Event()
            self._thawed.set()
            server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            self._ready.set()
            async with server:
                await asyncio.Event().wait()  # until the loop is stopped

        with contextlib.suppress(RuntimeError):  # "Event loop stopped before Future completed"
            self._loop.run_until_complete(main())

    @contextlib.contextmanager
    def running(self) -> Iterator[ReaderFreezer]:
        thread = threading.Thread(target=self._run, name="reader-freezer", daemon=True)
        thread.start()
        if not self._ready.wait(5):
            raise TimeoutError("the proxy did not start")
        try:
            yield self
        finally:
            self.thaw()
            self._loop.call_soon_threadsafe(self._loop.stop)
            thread.join(5)


if __name__ == "__main__":
    import sys

    listen, target = (int(arg) for arg in sys.argv[1:3])
    ReaderFreezer(target, listen)._run()
