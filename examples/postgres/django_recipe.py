"""Django (psycopg 3 under the ORM): the event commits with the view's writes.

``transaction.on_commit(lambda: broadcast_event(...))`` runs after the commit, in this
process: a crash, a deploy or an OOM kill between the two loses the event, and so does a
backend that cannot take it at that moment. Written in the transaction, it cannot be lost
once committed, nor seen if rolled back.
"""

from __future__ import annotations

from django.db import connection, transaction

from livepanel import get_broadcaster
from livepanel.events import SessionKilled


def kill_session(key: str) -> None:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("UPDATE sessions SET killed = true WHERE key = %s", [key])
        get_broadcaster().publish(
            SessionKilled(session_key=key, agent_id="a1"),
            transaction=connection.connection,  # the psycopg Connection Django runs on
        )
