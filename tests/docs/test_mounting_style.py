"""One mounting style for every feature in the docs: each page that adds a feature shows
it on the Quickstart's middleware (``app.add_middleware(LivePanelMiddleware, path="/ws",
...)``) with the sub-app mount as the alternative, and its snippets, run together in one
namespace, build one app that a real uvicorn serves with the endpoint at /ws."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from livepanel import LivePanelMiddleware
from tests.docs.markdown import DOCS
from tests.docs.test_snippets import PageRun, _credentials, run_page  # noqa: F401 - a fixture
from tests.servers import run_server

# feature -> the page that adds it
FEATURE_PAGES = {
    "metrics": "operating.md",
    "health": "operating.md",
    "presence": "operating.md",
    "tracing": "operating.md",
    "tickets": "audiences.md",
    "audiences": "audiences.md",
    "sse": "transports.md",
    "redis": "scaling.md",
}
PAGES = sorted(set(FEATURE_PAGES.values()))
# routes a page's app adds beside the endpoint, and what they answer
ROUTES = {"operating.md": {"/healthz": 200}}


def middleware_apps(namespace: dict[str, Any]) -> list[Starlette]:
    """The page's apps that serve livepanel through the Quickstart's middleware at /ws."""
    found = []
    for value in namespace.values():
        if isinstance(value, Starlette) and any(
            m.cls is LivePanelMiddleware and m.kwargs.get("path") == "/ws"
            for m in value.user_middleware
        ):
            found.append(value)
    return found


@pytest.mark.usefixtures("_credentials")
@pytest.mark.parametrize("page", PAGES)
def test_a_feature_page_builds_its_feature_on_the_quickstarts_middleware(page: str) -> None:
    """The page's snippets leave an app with LivePanelMiddleware at /ws; uvicorn serves it,
    /ws answers as livepanel (a probe gets 401 or 426) and the page's own routes answer."""
    path = DOCS / page
    text = path.read_text()
    assert "add_middleware(LivePanelMiddleware" in text or "LivePanelMiddleware, path=" in text
    assert ".mount(" in text, f"{page}: the sub-app mount is not shown as the alternative"
    answers: dict[str, int] = {}

    async def check(run: PageRun) -> None:
        apps = middleware_apps(run.namespace)
        assert apps, f"{page}: no app with LivePanelMiddleware at /ws among its snippets"
        with run_server(apps[-1], "uvicorn-websockets-sansio") as server:
            async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
                probe = await client.get(
                    f"{server.http_url}/ws", headers={"Accept": "application/json"}
                )
                answers["/ws"] = probe.status_code
                assert probe.json()["error"]  # livepanel's refusal, not the framework's 404
                for route in ROUTES.get(page, {}):
                    answers[route] = (await client.get(f"{server.http_url}{route}")).status_code

    run_page(path, check=check)
    assert answers["/ws"] in (401, 426), answers
    for route, status in ROUTES.get(page, {}).items():
        assert answers[route] == status, answers


def test_every_feature_names_a_page_that_exists() -> None:
    """The table above stays true to the docs: each page exists and names its feature."""
    words = {"sse": "Server-Sent Events", "redis": "Redis"}
    for feature, page in FEATURE_PAGES.items():
        text = (DOCS / page).read_text()
        assert words.get(feature, feature).lower() in text.lower(), (feature, page)
    assert Path(DOCS / "quickstart.md").read_text().count("LivePanelMiddleware") >= 1
