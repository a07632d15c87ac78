"""REST views that broadcast, from a sync and an async view, and a login view."""

import hmac
import json
import os
import uuid

from django.http import HttpRequest, JsonResponse

from livepanel import broadcast_event
from livepanel.events import SessionCreated, SessionKilled


def login(request: HttpRequest) -> JsonResponse:
    """POST {"username", "password"}: stores the user in Django's session."""
    data = json.loads(request.body or b"{}")
    user_ok = hmac.compare_digest(str(data.get("username")), os.environ["DASHBOARD_USERNAME"])
    password_ok = hmac.compare_digest(str(data.get("password")), os.environ["DASHBOARD_PASSWORD"])
    if not (user_ok & password_ok):
        return JsonResponse({"error": "unauthorized"}, status=401)
    request.session["livepanel_user"] = data["username"]
    return JsonResponse({"user": data["username"]})


def spawn_session(request: HttpRequest) -> JsonResponse:
    """A sync view: Django runs it in a thread under ASGI."""
    key = f"session-{uuid.uuid4().hex[:8]}"
    broadcast_event(SessionCreated(session_key=key, agent_id="main", kind="direct"))
    return JsonResponse({"sessionKey": key})


async def kill_session(request: HttpRequest, key: str) -> JsonResponse:
    broadcast_event(SessionKilled(session_key=key, agent_id="main"))
    return JsonResponse({"sessionKey": key})
