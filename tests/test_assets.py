"""The browser client ships inside the package and is served with a proper type and ETag."""

from __future__ import annotations

import httpx
import pytest

from livepanel.assets import Asset, ScriptApp, livepanel_js, static_path
from tests.servers import run_server


def test_static_path_holds_the_client_and_its_types() -> None:
    """static_path() is the package folder with livepanel.js and livepanel.d.ts."""
    assert (static_path() / "livepanel.js").is_file()
    assert (static_path() / "livepanel.d.ts").is_file()
    assert "export class LivePanelClient" in livepanel_js()


def test_the_client_has_no_dependencies() -> None:
    """livepanel.js imports nothing: it loads as-is in any browser."""
    assert "import " not in "\n".join(
        line for line in livepanel_js().splitlines() if not line.lstrip().startswith(("*", "//"))
    )


@pytest.fixture(scope="module")
def script_url() -> object:
    with run_server(ScriptApp(), "uvicorn-wsproto", lifespan=True) as server:
        yield f"{server.http_url}/livepanel.js"


def test_serves_javascript_with_an_etag(script_url: str) -> None:
    """GET answers the module as text/javascript, with a strong ETag and no-cache."""
    response = httpx.get(script_url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["etag"].startswith('"')
    assert response.text == livepanel_js()


def test_a_matching_if_none_match_gets_304(script_url: str) -> None:
    """Revalidation with the ETag costs no body."""
    etag = httpx.get(script_url).headers["etag"]
    for value in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = httpx.get(script_url, headers={"If-None-Match": value})
        assert response.status_code == 304, value
        assert response.content == b""
    assert httpx.get(script_url, headers={"If-None-Match": '"stale"'}).status_code == 200


def test_head_sends_headers_only(script_url: str) -> None:
    """HEAD gets the length of the body it does not get."""
    response = httpx.head(script_url)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(livepanel_js().encode())
    assert response.content == b""


def test_other_methods_get_405(script_url: str) -> None:
    """Only GET and HEAD are served."""
    response = httpx.post(script_url)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_an_asset_refuses_websockets() -> None:
    """A WebSocket to a file is closed, not left hanging."""
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    import asyncio

    asyncio.run(Asset(b"x", "text/plain")({"type": "websocket"}, receive, send))  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.close", "code": 1000, "reason": ""}]
