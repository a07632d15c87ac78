"""The ``livepanel`` command: ``tail`` an endpoint's events, ``top`` its health, ``doctor`` its
deployment, run the ``demo``;
print the event types as ``schema``, ``asyncapi`` or ``typescript``; ``schema diff`` two schemas.

Example::

    $ livepanel tail wss://panel.example.com/ws -u admin --types 'session.*'
    Password for admin:
    2026-02-21T10:00:00.123Z  session.created  sessionKey=s1 agentId=a1 kind=direct
    $ livepanel top http://127.0.0.1:8000/healthz http://127.0.0.1:8000/metrics
    $ livepanel doctor https://panel.example.com/ws -u admin --password-env PANEL_PASSWORD
    $ livepanel typescript --import myapp.events > dashboard/src/events.ts
    $ livepanel schema diff deployed.json new.json || echo "breaks open dashboards"
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import json
import logging
import os
import ssl
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from livepanel.__about__ import __version__
from livepanel.events import Event, format_timestamp
from livepanel.terminal import printable

__all__ = ["main", "printable", "summarize"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad arguments, and refused credentials: retrying the same command won't help
EXIT_INTERRUPTED = 130

_VALUE_WIDTH = 40
_SUMMARY_WIDTH = 160


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``livepanel`` command line; return the exit status.

    Args:
        argv: the arguments after the program name (``sys.argv[1:]`` when ``None``).

    Example::

        raise SystemExit(main(["tail", "ws://localhost:8000/ws", "--json"]))
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livepanel",
        description="Real-time events from an ASGI backend to authenticated dashboards.",
    )
    parser.add_argument("--version", action="version", version=f"livepanel {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    tail = commands.add_parser(
        "tail",
        help="print the events of a livepanel endpoint as they arrive",
        description=(
            "Connect to a livepanel WebSocket endpoint and print one line per event. "
            "Reconnects (resuming without gaps) are reported on stderr. Exit status: "
            "0 when the server closes the stream, 1 when the connection fails, "
            "2 when the credentials are refused, 130 on Ctrl-C."
        ),
    )
    tail.add_argument(
        "url",
        metavar="URL",
        help="the endpoint, ws://host:port/ws or wss://... (http:// and https:// mean the same)",
    )
    tail.add_argument(
        "-u",
        "--user",
        metavar="USER",
        help="Basic Auth user name; the password is asked for unless --password-env is given",
    )
    tail.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from this environment variable (never pass it on the command line)",
    )
    tail.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts and CI)",
    )
    tail.add_argument(
        "--types",
        nargs="+",
        metavar="GLOB",
        help="only these event types, as globs: --types 'session.*' agent.status",
    )
    tail.add_argument("--since", metavar="ID", help="first replay the events after this event id")
    tail.add_argument(
        "--json",
        action="store_true",
        help="print each event as its wire JSON object, one per line (for jq)",
    )
    tail.add_argument(
        "--state",
        action="store_true",
        help="print the dashboard's state first (?state=1), then the events",
    )
    tail.add_argument("--origin", metavar="ORIGIN", help="send this Origin header")
    tail.add_argument(
        "--insecure",
        action="store_true",
        help="wss:// without verifying the server's certificate (testing only)",
    )
    tail.set_defaults(run=_run_tail)

    demo = commands.add_parser(
        "demo",
        help="run the demo dashboard (needs livepanel[demo])",
        description=(
            "Start a small ClawPanel-like dashboard fed by livepanel events, behind Basic "
            "Auth (DASHBOARD_USERNAME / DASHBOARD_PASSWORD, else generated and printed). "
            "python -m livepanel.demo takes the same options."
        ),
    )
    demo.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    demo.add_argument(
        "--backend-url",
        "--redis",
        dest="backend_url",
        metavar="URL",
        help="the broadcaster's backend, e.g. redis://localhost:6379/0 "
        "(default: LIVEPANEL_BACKEND_URL, else memory)",
    )
    demo.add_argument(
        "--interval",
        type=float,
        default=1.5,
        metavar="SECONDS",
        help="seconds between simulated gateway events; 0 turns the simulation off (1.5)",
    )
    demo.add_argument(
        "--heartbeat",
        type=float,
        default=25.0,
        metavar="SECONDS",
        help="the endpoint's heartbeat: a page notices a silent server within two (25)",
    )
    demo.set_defaults(run=_run_demo)

    top = commands.add_parser(
        "top",
        help="watch a running endpoint's health and rates, refreshed in place",
        description=(
            "Read a livepanel health check (livepanel.health_app) and/or a Prometheus "
            "/metrics page (livepanel.metrics) every few seconds and show health, totals "
            "and rates. Exit status: 0, or 1 with --once when a URL could not be read "
            "as a health report or a metrics page."
        ),
    )
    top.add_argument(
        "urls",
        nargs="+",
        metavar="URL",
        help="http(s) URLs of one process: its health check, its /metrics, or both",
    )
    top.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="seconds between reads (2)"
    )
    top.add_argument("--once", action="store_true", help="print one screen and exit")
    top.set_defaults(run=_run_top)
    _doctor_command(commands)
    _typed_commands(commands)
    return parser


def _doctor_command(commands: Any) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check a deployment from the outside: proxy, heartbeat, TLS, origin, clock",
        description=(
            "Probe a livepanel endpoint as a dashboard would, through whatever proxy is in "
            "front of it, and print one line per finding with its fix. Watches an idle "
            "connection for two heartbeat intervals. Exit status: 0 when every check holds, "
            "1 when one fails, 2 for bad options."
        ),
    )
    doctor.add_argument("url", metavar="URL", help="the endpoint, https://host/ws or wss://...")
    doctor.add_argument("-u", "--user", metavar="USER", help="Basic Auth user name")
    doctor.add_argument(
        "--password-env", metavar="VAR", help="read the password from this environment variable"
    )
    doctor.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    doctor.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="the longest any one network step may take (10)",
    )
    doctor.add_argument(
        "--cafile", metavar="PEM", help="trust the certificate authorities in this file too"
    )
    doctor.set_defaults(run=_run_doctor, password_stdin=False)


def _typed_commands(commands: Any) -> None:
    """``schema`` (and ``schema diff``), ``asyncapi`` and ``typescript``."""
    from livepanel.schema.cli import add_commands  # its generators load on use only

    add_commands(commands)


# --------------------------------------------------------------------------- tail


def _run_tail(args: argparse.Namespace) -> int:
    from livepanel.client import connect

    def fail(message: str) -> int:
        print(f"livepanel tail: {printable(message)}", file=sys.stderr)
        return EXIT_USAGE

    password, problem = _credentials(args)
    if problem:
        return fail(problem)
    args.url = _websocket_url(args.url)
    context: ssl.SSLContext | None = None
    if args.insecure and args.url.lower().startswith("wss:"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        print("livepanel tail: --insecure: the certificate is not verified", file=sys.stderr)
    types = [g for value in args.types or () for g in value.split(",") if g.strip()] or None
    try:
        client = connect(
            args.url,
            username=args.user,
            password=password,
            origin=args.origin,
            types=types,
            since=args.since,
            ssl=context,
            state=args.state,
            on_status=_status_news(),
        )
    except ValueError as exc:
        return fail(str(exc))
    handler = _stderr_logging()
    try:
        return asyncio.run(_tail(client, as_json=args.json, out=sys.stdout))
    except BrokenPipeError:  # `livepanel tail ... | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return EXIT_OK
    finally:
        logging.getLogger("livepanel").removeHandler(handler)


def _credentials(args: argparse.Namespace) -> tuple[str | None, str]:
    """The password for ``-u USER`` (from --password-env, --password-stdin or a prompt),
    or the problem with the options."""
    if urlsplit(args.url).password is not None:
        return None, "do not put a password in the URL; use -u USER and --password-env VAR"
    if (args.password_env or args.password_stdin) and not args.user:
        return None, "--password-env and --password-stdin need -u USER"
    if args.password_env and args.password_stdin:
        return None, "give --password-env or --password-stdin, not both"
    if not args.user:
        return None, ""
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            return None, f"the environment variable {args.password_env} is not set"
        return password, ""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n"), ""
    if not sys.stdin.isatty():
        return None, (
            f"no terminal to ask the password for {args.user} on; "
            "use --password-env VAR or --password-stdin"
        )
    return getpass.getpass(f"Password for {args.user}: "), ""


def _status_news() -> Any:
    """Say on stderr when a replay or the state is in flight, and when it is done (the
    connector already reports connecting, reconnecting and closing)."""
    shown = {"catching_up": False}

    def news(status: str) -> None:
        if status == "catching_up":
            shown["catching_up"] = True
            print("livepanel tail: catching up (a replay or the state in flight)", file=sys.stderr)
        elif status == "open" and shown["catching_up"]:
            shown["catching_up"] = False
            print("livepanel tail: caught up; live", file=sys.stderr)

    return news


def _websocket_url(url: str) -> str:
    """``http(s)://`` as ``ws(s)://``, as livepanel.js takes them; anything else unchanged."""
    scheme, sep, rest = url.partition("://")
    mapped = {"http": "ws", "https": "wss"}.get(scheme.lower())
    return f"{mapped}{sep}{rest}" if mapped and sep else url


async def _tail(client: Any, *, as_json: bool, out: TextIO) -> int:
    from livepanel.client import (
        AuthenticationError,
        ConnectionFailed,
        HandshakeRejected,
        PermissionDenied,
        ResumeUnavailable,
    )

    try:
        async with client:
            while True:
                try:
                    async for event in client:
                        if event.type == "state" and event.id is None:  # tail --state
                            lines = [event.to_json()] if as_json else _state_lines(event)
                            out.write("".join(printable(line) + "\n" for line in lines))
                            out.flush()
                            continue
                        text = event.to_json() if as_json else _line(event)
                        out.write(printable(text) + "\n")
                        out.flush()
                    return EXIT_OK
                except ResumeUnavailable as exc:
                    print(
                        f"livepanel tail: events were missed ({printable(str(exc))}); "
                        "continuing live",
                        file=sys.stderr,
                    )
    except (AuthenticationError, PermissionDenied) as exc:
        print(f"livepanel tail: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (HandshakeRejected, ConnectionFailed) as exc:
        print(f"livepanel tail: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE


def _stderr_logging() -> logging.Handler:
    """Show the client's connection news (reconnects) on stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.INFO)
    log = logging.getLogger("livepanel")
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return handler


def _state_lines(frame: Event) -> list[str]:
    """A ``state`` frame for people: a header per collection, then one line per entry."""
    lines = [f"state at {frame.payload.get('lastEventId')}"]
    for name, collection in (frame.payload.get("collections") or {}).items():
        entries = collection.get("entries") or []
        lines.append(f"  {name} ({len(entries)})")
        for data in entries:
            try:
                lines.append("    " + _line(Event.from_dict(data)))
            except ValueError:
                continue
    return lines


def _line(event: Event) -> str:
    return f"{format_timestamp(event.timestamp)}  {event.type}  {summarize(event.payload)}"


def summarize(payload: Mapping[str, Any], width: int = _SUMMARY_WIDTH) -> str:
    """A one-line ``key=value`` summary of a payload, long values shortened.

    Args:
        payload: the event's payload.
        width: the most characters returned.

    Example::

        >>> summarize({"sessionKey": "s1", "label": "nightly build"})
        'sessionKey=s1 label="nightly build"'
    """
    parts = []
    for key, value in payload.items():
        if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
            text = value
        else:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if len(text) > _VALUE_WIDTH:
            text = text[: _VALUE_WIDTH - 1] + "…"
        parts.append(f"{key}={text}")
    line = " ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


# --------------------------------------------------------------------------- doctor


def _run_doctor(args: argparse.Namespace) -> int:
    from livepanel.doctor import diagnose, report

    def fail(message: str) -> int:
        print(f"livepanel doctor: {printable(message)}", file=sys.stderr)
        return EXIT_USAGE

    password, problem = _credentials(args)
    if problem:
        return fail(problem)
    if not args.timeout > 0 or args.timeout > 3600:
        return fail("--timeout must be between 0 and 3600 seconds")
    context = None
    if urlsplit(args.url).scheme.lower() in ("https", "wss"):
        try:
            context = ssl.create_default_context(cafile=args.cafile)
        except OSError as exc:
            return fail(f"--cafile: {exc}")
    try:
        findings = asyncio.run(
            diagnose(
                args.url, username=args.user, password=password, timeout=args.timeout, ssl=context
            )
        )
    except ValueError as exc:
        return fail(str(exc))
    lines, status = report(findings)
    print("\n".join(printable(line) for line in lines))
    return status


# --------------------------------------------------------------------------- top


def _run_top(args: argparse.Namespace) -> int:
    from livepanel.top import top

    if args.interval <= 0:
        print("livepanel top: --interval must be > 0 seconds", file=sys.stderr)
        return EXIT_USAGE
    return top(args.urls, interval=args.interval, once=args.once)


# --------------------------------------------------------------------------- demo


def _run_demo(args: argparse.Namespace) -> int:
    try:
        # imported late: the demo pulls in an ASGI server, which `tail` does not need
        serve = importlib.import_module("livepanel.demo").serve
    except ImportError as exc:
        if exc.name in ("livepanel.demo", "livepanel"):
            why = "this installation has no livepanel.demo module"
        else:
            why = f"{exc}; install the demo extra: pip install 'livepanel[demo]'"
        print(f"livepanel demo: cannot start the demo: {why}", file=sys.stderr)
        return EXIT_FAILURE
    serve(
        host=args.host,
        port=args.port,
        backend_url=args.backend_url,
        interval=args.interval,
        heartbeat_interval=args.heartbeat,
    )
    return EXIT_OK
