"""The ``schema``, ``schema diff``, ``asyncapi`` and ``typescript`` commands of ``livepanel``.

Each prints on stdout what the registry holds once ``--import MODULE``
(repeatable) has imported the modules that declare an application's event
types; without it, the seed's five built-in types. An annotation that cannot
be described is an error naming the field (exit 2).

Example::

    $ livepanel schema --import myapp.events > schema.json
    $ livepanel schema diff deployed-schema.json schema.json
    breaking  deploy.finished: payload.service: required field renamed to 'serviceName'
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from livepanel.schema.asyncapi import asyncapi_document
from livepanel.schema.diff import diff_schemas, is_breaking
from livepanel.schema.jsonschema import UnsupportedAnnotation, schema_document
from livepanel.schema.typescript import typescript_module

__all__ = ["add_commands"]

EXIT_OK, EXIT_BREAKING, EXIT_USAGE = 0, 1, 2


def add_commands(commands: Any) -> None:
    """Add the typed-events commands to ``livepanel``'s subcommand parsers.

    Args:
        commands: what ``ArgumentParser.add_subparsers()`` returned.

    Example::

        add_commands(parser.add_subparsers(dest="command"))
    """
    imports = argparse.ArgumentParser(add_help=False)
    imports.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="import this module first, for the event types it declares (repeatable); "
        "default: the built-in types (livepanel.events.builtin)",
    )
    schema = commands.add_parser(
        "schema",
        parents=[imports],
        help="print the JSON Schema of every event type's payload",
        description='Print {"events": {type: JSON Schema 2020-12 of its payload}}, in the '
        "wire's camelCase. `livepanel schema diff OLD NEW` compares two such outputs.",
    )
    schema.set_defaults(run=_run_schema)
    actions = schema.add_subparsers(dest="schema_command", metavar="diff")
    diff = actions.add_parser(
        "diff",
        help="exit 1 when NEW breaks a dashboard built on OLD",
        description="Compare two outputs of `livepanel schema`: one line per change, "
        "breaking ones first. Exit status: 1 when a change breaks a dashboard built on OLD "
        "(a type removed; a required field added, removed or renamed; a field's type "
        "changed; a literal narrowed), 0 when every change is additive, 2 on unreadable input.",
    )
    diff.add_argument(
        "old", metavar="OLD", help="the schema a dashboard was built on (- for stdin)"
    )
    diff.add_argument("new", metavar="NEW", help="the schema about to be deployed")
    diff.set_defaults(run=_run_diff)

    asyncapi = commands.add_parser(
        "asyncapi",
        parents=[imports],
        help="print the endpoint as an AsyncAPI 3.0 document",
        description="Print the AsyncAPI 3.0 document (JSON) of a livepanel endpoint: its "
        "frames, every event type, the client's messages, the SSE variant and the "
        "security schemes. An app serves its own with LivePanelApp.asyncapi().",
    )
    asyncapi.add_argument(
        "--url",
        default="ws://localhost:8000/ws",
        help="where clients reach the endpoint (ws://localhost:8000/ws)",
    )
    asyncapi.add_argument(
        "--security",
        nargs="*",
        choices=["basic", "ticket"],
        default=["basic", "ticket"],
        help="the security schemes the endpoint accepts (basic ticket)",
    )
    asyncapi.set_defaults(run=_run_asyncapi)

    typescript = commands.add_parser(
        "typescript",
        parents=[imports],
        help="print a TypeScript module of the event types",
        description="Print a TypeScript module: one interface per payload, EventPayloads, "
        "the LivePanelEvents union keyed by type, the state collections and "
        "SCHEMA_FINGERPRINT. livepanel.js's client and the React hooks are generic over it.",
    )
    typescript.set_defaults(run=_run_typescript)


def _fail(command: str, message: str) -> int:
    print(f"livepanel {command}: {message}", file=sys.stderr)
    return EXIT_USAGE


def _load(args: argparse.Namespace, command: str) -> str | None:
    """Import the modules named by ``--import``; an error message, or ``None``."""
    modules = args.imports or ["livepanel.events.builtin"]
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `--import myapp.events` from the project's folder
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"cannot import {module}: {exc}"
        except ValueError as exc:  # two types of one name
            return f"importing {module}: {exc}"
    return None


def _emit(text: str) -> int:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()
    return EXIT_OK


def _run_schema(args: argparse.Namespace) -> int:
    error = _load(args, "schema")
    if error is not None:
        return _fail("schema", error)
    try:
        document = schema_document()
    except UnsupportedAnnotation as exc:
        return _fail("schema", str(exc))
    return _emit(json.dumps(document, indent=2))


def _run_asyncapi(args: argparse.Namespace) -> int:
    error = _load(args, "asyncapi")
    if error is not None:
        return _fail("asyncapi", error)
    try:
        document = asyncapi_document(url=args.url, security=args.security)
    except (UnsupportedAnnotation, ValueError) as exc:
        return _fail("asyncapi", str(exc))
    return _emit(json.dumps(document, indent=2))


def _run_typescript(args: argparse.Namespace) -> int:
    error = _load(args, "typescript")
    if error is not None:
        return _fail("typescript", error)
    try:
        module = typescript_module()
    except UnsupportedAnnotation as exc:
        return _fail("typescript", str(exc))
    return _emit(module)


def _read(path: str) -> Any:
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    return json.loads(text)


def _run_diff(args: argparse.Namespace) -> int:
    try:
        old, new = _read(args.old), _read(args.new)
    except (OSError, ValueError) as exc:
        return _fail("schema diff", f"cannot read a schema: {exc}")
    try:
        changes = diff_schemas(old, new)
    except ValueError as exc:
        return _fail("schema diff", str(exc))
    for change in changes:
        print(change)
    if not changes:
        print("no change")
    return EXIT_BREAKING if is_breaking(changes) else EXIT_OK
