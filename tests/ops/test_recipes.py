"""The operating recipes of docs/operating.md: alert rules, Kubernetes probes, HAProxy checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry

from livepanel import Broadcaster, LivePanelApp
from livepanel.metrics import instrument
from tests.examples.test_examples import load
from tests.integration.helpers import expect_welcome, open_ws, wait_until
from tests.ops.test_metrics import instrumented_server
from tests.requirements import unavailable
from tests.servers import RunningServer, free_port, run_server

EXAMPLES = Path(__file__).parents[2] / "examples" / "metrics"


def exported_names() -> set[str]:
    """Every sample name instrument() can export."""
    registry = CollectorRegistry()
    instrument(Broadcaster(), LivePanelApp(Broadcaster(), auth=None), registry=registry)
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "count", "sum"))
    return names


def test_alert_rules_name_only_metrics_livepanel_exports() -> None:
    """alerts.yml: well-formed rules over metric names instrument() really exports."""
    rules = yaml.safe_load((EXAMPLES / "alerts.yml").read_text())["groups"][0]["rules"]
    exported = exported_names()
    assert {r["alert"] for r in rules} >= {
        "LivePanelReaderLagging",
        "LivePanelSlowDisconnects",
        "LivePanelResumeUnavailable",
    }
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "labels", "annotations"}, rule
        used = set(re.findall(r"livepanel_[a-z_]+", rule["expr"]))
        assert used, rule["alert"]
        assert used <= exported, f"{rule['alert']}: {used - exported} not exported"
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


@pytest.mark.usefixtures("example_env")
def test_kubernetes_probes_reach_the_example_health_checks() -> None:
    """kubernetes.yaml: its probes' paths answer 200 on its port from the app it runs."""
    manifest = yaml.safe_load((EXAMPLES / "kubernetes.yaml").read_text())
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["uvicorn", "examples.metrics.app:app"]
    port = int(command[command.index("--port") + 1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {kind: container[kind] for kind in ("readinessProbe", "livenessProbe")}
    for probe in probes.values():
        assert ports[probe["httpGet"]["port"]] == port
        assert probe["timeoutSeconds"] > 2.0 + 1.0  # health_app's Redis timeout, and a margin
    app = load("examples.metrics.app").app
    with (
        run_server(app, "uvicorn-websockets", lifespan=True) as server,
        httpx.Client(base_url=server.http_url, timeout=5, follow_redirects=False) as http,
    ):
        for probe in probes.values():
            answer = http.get(probe["httpGet"]["path"])
            assert answer.status_code == 200, (probe, answer.text)
            assert answer.json()["ok"] is True


# ---------------------------------------------------------------------- HAProxy


def haproxy_binary() -> str:
    found = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin")
    if found is None:
        unavailable("haproxy", "haproxy is not installed; `make test` installs it")
    return found


def adapt(config: str, listen: int, first: int, second: int) -> str:
    """Point the recipe at this test's ports and check every 100 ms."""
    replacements = [
        ("bind 127.0.0.1:8080", f"bind 127.0.0.1:{listen}"),
        ("server w1 127.0.0.1:8001 check", f"server w1 127.0.0.1:{first} check"),
        ("server w2 127.0.0.1:8002 check", f"server w2 127.0.0.1:{second} check"),
        ("inter 2s", "inter 100ms"),
    ]
    for old, new in replacements:
        assert old in config, f"the recipe no longer contains {old!r}"
        config = config.replace(old, new)
    return config


@contextlib.contextmanager
def haproxy(config: str, directory: Path) -> Iterator[subprocess.Popen[str]]:
    path = directory / "haproxy.cfg"
    path.write_text(config)
    binary = haproxy_binary()
    subprocess.run([binary, "-c", "-q", "-f", str(path)], check=True)
    process = subprocess.Popen(
        [binary, "-db", "-f", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wait_for_line(process: subprocess.Popen[str], pattern: str, timeout: float = 10.0) -> str:
    """Read HAProxy's output until a line matches ``pattern`` (bounded in lines and time)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    for _ in range(1000):
        assert time.monotonic() < deadline, "\n".join(seen)
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip())
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matched {pattern!r}:\n" + "\n".join(seen))


def accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def drain(endpoint: LivePanelApp, broadcaster: Broadcaster) -> None:
    """``endpoint.shutdown()`` on the server's loop, as SIGTERM would run it."""
    loop: Any = broadcaster.backend_loop
    asyncio.run_coroutine_threadsafe(endpoint.shutdown(), loop).result(5)


def test_haproxy_sends_new_dashboards_away_from_a_draining_worker(tmp_path: Path) -> None:
    """haproxy.cfg in a real HAProxy: once a worker drains, its check fails and every new
    dashboard goes to the other worker."""
    recipe = (EXAMPLES / "haproxy.cfg").read_text()
    with instrumented_server() as first, instrumented_server() as second:
        (one, one_broadcaster, one_endpoint), (two, two_broadcaster, _) = first, second
        listen = free_port()
        with haproxy(adapt(recipe, listen, one.port, two.port), tmp_path) as process:
            front = RunningServer("haproxy", "127.0.0.1", listen)
            # HAProxy's checks start both broadcasters (a health check starts its broadcaster)
            wait_until(
                lambda: (
                    None not in (one_broadcaster.backend_loop, two_broadcaster.backend_loop)
                    and accepts(listen)
                ),
                what="HAProxy and both workers",
            )
            with open_ws(front) as a, open_ws(front) as b:  # leastconn: one each
                expect_welcome(a)
                expect_welcome(b)
                assert (one_broadcaster.connection_count, two_broadcaster.connection_count) == (
                    1,
                    1,
                )
            wait_until(
                lambda: one_broadcaster.connection_count + two_broadcaster.connection_count == 0,
                what="both closes",
            )
            drain(one_endpoint, one_broadcaster)
            wait_for_line(process, r"Server workers/w1 is DOWN")
            with contextlib.ExitStack() as stack:
                for _ in range(2):  # the most one user may hold on one worker
                    expect_welcome(stack.enter_context(open_ws(front)))
                assert (one_broadcaster.connection_count, two_broadcaster.connection_count) == (
                    0,
                    2,
                )
