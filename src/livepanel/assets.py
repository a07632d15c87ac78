"""The browser client shipped with the package, and a tiny ASGI app that serves it.

``livepanel.js`` is a dependency-free ES module in the package's ``static/``
folder. Serve it from your own app (it needs no build step)::

    from livepanel.assets import ScriptApp

    app.add_route("/livepanel.js", ScriptApp())     # Starlette / FastAPI
    # then, in the page: import { connect } from "/livepanel.js";

or copy it into your front-end build from :func:`static_path`.
"""

from __future__ import annotations

import hashlib
import pathlib
from functools import lru_cache

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

__all__ = ["Asset", "ScriptApp", "livepanel_js", "static_path"]

_STATIC = pathlib.Path(__file__).resolve().parent / "static"


def static_path() -> pathlib.Path:
    """The folder holding ``livepanel.js`` and its TypeScript declarations ``livepanel.d.ts``.

    Example, copying the client into a front-end build::

        shutil.copy(static_path() / "livepanel.js", "frontend/vendor/")
    """
    return _STATIC


@lru_cache(maxsize=1)
def livepanel_js() -> str:
    """The source of ``livepanel.js``.

    Example::

        >>> "export function connect" in livepanel_js()
        True
    """
    return (_STATIC / "livepanel.js").read_text(encoding="utf-8")


class Asset:
    """An ASGI app answering ``GET``/``HEAD`` with one in-memory file, whatever the path.

    It sends a strong ``ETag`` and answers ``If-None-Match`` with 304, so with
    the default ``Cache-Control: no-cache`` browsers revalidate cheaply and
    never run a stale copy.

    Args:
        body: the file's bytes.
        content_type: its media type, e.g. ``"text/css; charset=utf-8"``.
        cache_control: the ``Cache-Control`` header sent with it.

    Example::

        css = (Path(__file__).parent / "dashboard.css").read_bytes()
        app.add_route("/dashboard.css", Asset(css, "text/css; charset=utf-8"))
    """

    def __init__(self, body: bytes, content_type: str, *, cache_control: str = "no-cache") -> None:
        self.body = body
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        self.headers = [
            (b"content-type", content_type.encode("latin-1")),
            (b"etag", self.etag.encode("latin-1")),
            (b"cache-control", cache_control.encode("latin-1")),
            (b"x-content-type-options", b"nosniff"),
        ]

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000, "reason": ""})
            return
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            status, headers, body = 405, [(b"allow", b"GET, HEAD")], b""
        elif self._not_modified(scope):
            status, headers, body = 304, self.headers[1:], b""
        else:
            status, headers, body = 200, list(self.headers), self.body
        if status != 304:
            headers.append((b"content-length", str(len(body)).encode()))
        await send(
            {"type": "http.response.start", "status": status, "headers": headers, "trailers": False}
        )
        await send(
            {
                "type": "http.response.body",
                "body": b"" if method == "HEAD" else body,
                "more_body": False,
            }
        )

    def _not_modified(self, scope: HTTPScope) -> bool:
        for name, value in scope["headers"]:
            if name.lower() == b"if-none-match":
                tags = {
                    tag.strip().removeprefix("W/") for tag in value.decode("latin-1").split(",")
                }
                return self.etag in tags or "*" in tags
        return False


class ScriptApp(Asset):
    """Serves ``livepanel.js`` as ``text/javascript`` wherever it is mounted.

    Mount it at one exact path: in Starlette and FastAPI that is a route (a
    ``Mount`` would redirect ``/livepanel.js`` to ``/livepanel.js/``).

    Example::

        app.add_route("/livepanel.js", ScriptApp())
    """

    def __init__(self, *, cache_control: str = "no-cache") -> None:
        super().__init__(
            livepanel_js().encode("utf-8"),
            "text/javascript; charset=utf-8",
            cache_control=cache_control,
        )
