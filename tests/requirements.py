"""What a test needs beyond pip: skip without it on a developer's machine, fail in CI.

CI (``.ci/run``) sets ``LIVEPANEL_REQUIRE_<WHAT>=1`` for every program and
package the Makefile installs, so a missing one fails the run instead of
silently skipping the tests that need it.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(what: str, message: str) -> NoReturn:
    """Skip the test, saying ``message``; fail it instead under
    ``LIVEPANEL_REQUIRE_<WHAT>=1``."""
    variable = f"LIVEPANEL_REQUIRE_{what.upper()}"
    if os.environ.get(variable) == "1":
        pytest.fail(f"{message}; {variable}=1 says this test must run")
    pytest.skip(message)
