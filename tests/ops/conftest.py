"""Fixtures of the operations tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.examples.test_examples import PASSWORD, USER


@pytest.fixture
def example_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment examples/metrics/app.py reads (one process, memory backend); the
    collector it registers on import is unregistered afterwards."""
    prometheus_client = pytest.importorskip("prometheus_client")
    from livepanel.metrics import LivePanelCollector

    monkeypatch.setenv("DASHBOARD_USERNAME", USER)
    monkeypatch.setenv("DASHBOARD_PASSWORD", PASSWORD)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("LIVEPANEL_BACKEND_URL", raising=False)
    yield
    registry = prometheus_client.REGISTRY
    for collector in list(registry._collector_to_names):
        if isinstance(collector, LivePanelCollector):
            registry.unregister(collector)
