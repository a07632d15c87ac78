from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from livepanel import set_broadcaster

WATCHED_LOGGERS = ("livepanel", "uvicorn", "uvicorn.error", "hypercorn.error", "asyncio")


class LogCapture(logging.Handler):
    """Collects records of the server and livepanel loggers, from every thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        """Every ERROR record or traceback, formatted for an assertion message."""
        return [
            f"{r.name}: {r.getMessage()}"
            for r in self.records
            if r.levelno >= logging.ERROR or r.exc_info
        ]

    def text(self) -> str:
        return "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in self.records)


@pytest.fixture
def server_logs() -> Iterator[LogCapture]:
    """Capture livepanel's and the servers' logs; tests assert they hold no ERROR."""
    handler = LogCapture()
    loggers = [logging.getLogger(name) for name in WATCHED_LOGGERS]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        for lg, level, propagate in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate


@pytest.fixture(autouse=True)
def _fresh_default_broadcaster() -> Iterator[None]:
    """Every test starts without a default broadcaster, so none leaks between tests."""
    set_broadcaster(None)
    yield
    set_broadcaster(None)
