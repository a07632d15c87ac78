"""Typed from Python to the browser: the event types as JSON Schema, AsyncAPI and TypeScript.

One source, the registry of :func:`~livepanel.event_type`, read by one
module per output: :mod:`~livepanel.schema.jsonschema` (each payload's JSON
Schema 2020-12, as dashboards receive it), :mod:`~livepanel.schema.asyncapi`
(the endpoint as an AsyncAPI 3.0 document), :mod:`~livepanel.schema.typescript`
(a TypeScript module for ``livepanel.js`` and the React hooks),
:mod:`~livepanel.schema.fingerprint` (``welcome.schema``) and
:mod:`~livepanel.schema.diff` (which changes break a dashboard). The
``livepanel schema``, ``asyncapi`` and ``typescript`` commands print them;
see ``docs/typed-events.md``.

Example::

    >>> from livepanel.events.builtin import SessionCreated
    >>> document = schema_document({"session.created": SessionCreated})
    >>> document["events"]["session.created"]["required"]
    ['sessionKey', 'agentId', 'kind']
"""

from __future__ import annotations

from livepanel.schema.asyncapi import SECURITY_SCHEMES, asyncapi_document
from livepanel.schema.diff import SchemaChange, diff_schemas, is_breaking
from livepanel.schema.fingerprint import current_fingerprint, fingerprint
from livepanel.schema.jsonschema import (
    DIALECT,
    UnsupportedAnnotation,
    event_schemas,
    payload_schema,
    schema_document,
)
from livepanel.schema.typescript import typescript_module

__all__ = [
    "DIALECT",
    "SECURITY_SCHEMES",
    "SchemaChange",
    "UnsupportedAnnotation",
    "asyncapi_document",
    "current_fingerprint",
    "diff_schemas",
    "event_schemas",
    "fingerprint",
    "is_breaking",
    "payload_schema",
    "schema_document",
    "typescript_module",
]
