from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from livepanel.events import _REGISTRY, _STATE_RULES

settings.register_profile("livepanel-schema", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("livepanel-schema")


@pytest.fixture
def registry() -> Iterator[None]:
    """Leave the event registry as the test found it."""
    types, rules = dict(_REGISTRY), dict(_STATE_RULES)
    try:
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(types)
        _STATE_RULES.clear()
        _STATE_RULES.update(rules)
