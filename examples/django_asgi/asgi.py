"""Django's ASGI application with livepanel at /ws, authenticated by Django's session.

Run:  DASHBOARD_USERNAME=admin DASHBOARD_PASSWORD=secret \
      DJANGO_SETTINGS_MODULE=examples.django_asgi.settings \
      uvicorn examples.django_asgi.asgi:application
"""

import os
from http.cookies import SimpleCookie
from typing import Any

from django.core.asgi import get_asgi_application

from livepanel import LivePanelMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_asgi.settings")
django_app = get_asgi_application()  # sets Django up before the session imports below

from django.conf import settings  # noqa: E402
from django.contrib.sessions.backends.signed_cookies import SessionStore  # noqa: E402


class DjangoSessionAuth:
    """An Authenticator: the user stored in Django's session by the login view."""

    async def __call__(self, scope: Any) -> str | None:
        cookie = SimpleCookie()
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookie.load(value.decode("latin-1"))
        morsel = cookie.get(settings.SESSION_COOKIE_NAME)
        if morsel is None:
            return None
        session = SessionStore(session_key=morsel.value)
        user: str | None = await session.aget("livepanel_user")
        return user


application = LivePanelMiddleware(django_app, path="/ws", auth=DjangoSessionAuth())
