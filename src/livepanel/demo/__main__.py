"""``python -m livepanel.demo [--host H] [--port P] [--backend-url URL]``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from livepanel.demo import serve

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m livepanel.demo",
        description="Serve the livepanel demo dashboard behind Basic Auth "
        "(DASHBOARD_USERNAME / DASHBOARD_PASSWORD, else generated and printed).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument(
        "--backend-url",
        default=None,
        help="broadcaster backend, e.g. redis://localhost:6379/0 (default: "
        "LIVEPANEL_BACKEND_URL, else memory)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.5,
        help="mean seconds between simulated gateway events; 0 for none (default 1.5)",
    )
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.backend_url, interval=args.interval)


if __name__ == "__main__":
    main()
