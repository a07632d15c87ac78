"""The release as a team installs it: the wheel built from this tree, in a clean virtualenv,
running the README's Quickstart verbatim under a real uvicorn.

The virtualenv has no access to this checkout (no ``PYTHONPATH``, its own
``site-packages``), so a module missing from the wheel, a file the package
reads at run time but does not ship, or a Quickstart that drifted from the API
fails here. The clean install needs the package index (``pip install`` of
fastapi and uvicorn, at the versions ``constraints/dev.txt`` pins).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from livepanel.__about__ import __version__
from tests.docs.markdown import ROOT, blocks
from tests.requirements import unavailable
from tests.servers import free_port

README = ROOT / "README.md"
CONSTRAINTS = ROOT / "constraints" / "dev.txt"
USER, PASSWORD = "admin", "wheel-test-secret"
_LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)")


def quickstart() -> str:
    """The README's Quickstart: the first Python block after the ``## Quickstart`` heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Quickstart")
    heading_line = text[:start].count("\n") + 2
    found = [b for b in blocks(README) if b.lang == "python" and b.line > heading_line]
    assert found, "README.md has no Python block under ## Quickstart"
    return found[0].code


def clean_env() -> dict[str, str]:
    """This process's environment without anything that points Python at the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.environ.get("PATH", "")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree, built as ``make dist`` builds it."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(out), ROOT],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (found,) = out.glob("livepanel-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtualenv with the wheel, fastapi and uvicorn installed from the package index."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS)]
    done = subprocess.run(
        [*install, str(wheel), "fastapi", "uvicorn"],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(),
    )
    if done.returncode != 0 and "No matching distribution" in done.stderr:
        unavailable("registry", f"the package index cannot be reached: {done.stderr[-500:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return where


@contextlib.contextmanager
def uvicorn_in(venv: Path, folder: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    """``uvicorn app:app`` with the venv's interpreter, in ``folder``, until it listens."""
    env = clean_env() | {"DASHBOARD_USERNAME": USER, "DASHBOARD_PASSWORD": PASSWORD}
    process = subprocess.Popen(
        [str(venv / "bin" / "python"), "-m", "uvicorn", "app:app", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
                break
            time.sleep(0.1)
        assert process.poll() is None, process.communicate(timeout=5)[0][-3000:]
        yield process
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        if process.poll() is None:
            process.kill()


def test_the_readme_has_no_link_that_breaks_off_the_repository() -> None:
    """A package index shows the README alone: every link and image in it is absolute."""
    text = README.read_text(encoding="utf-8")
    relative = [
        m["target"]
        for m in _LINK.finditer(text)
        if not m["target"].startswith(("https://", "http://", "#", "mailto:"))
    ]
    assert relative == []
    assert f"livepanel-{__version__}-py3-none-any.whl" in text, "the Installation section's wheel"


def test_the_version_is_a_release() -> None:
    """0.1.0, not a development version; the CHANGELOG has its section."""
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__), __version__
    assert f"## [{__version__}]" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def test_the_wheel_passes_the_package_index_checks(wheel: Path) -> None:
    """``twine check --strict``: the metadata and the README render as a package page."""
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "PASSED" in checked.stdout


def test_the_readme_quickstart_runs_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    """The Quickstart, extracted from README.md, served by uvicorn from the clean venv: an
    unauthenticated publish is refused, an authenticated one reaches a WebSocket client."""
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import livepanel; print(livepanel.__file__)"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).is_relative_to(venv), "livepanel came from the checkout"
    (tmp_path / "app.py").write_text(quickstart(), encoding="utf-8")
    port = free_port()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with uvicorn_in(venv, tmp_path, port):
        spawn = f"http://127.0.0.1:{port}/api/sessions/spawn"
        assert httpx.post(spawn, params={"agent": "atlas"}, timeout=5).status_code == 401
        url = f"ws://127.0.0.1:{port}/ws"
        with connect(url, additional_headers={"Authorization": f"Basic {token}"}) as ws:
            welcome = json.loads(ws.recv(timeout=10))
            assert welcome["type"] == "welcome"
            assert welcome["payload"]["server"] == f"livepanel/{__version__}"
            answer = httpx.post(spawn, params={"agent": "atlas"}, auth=(USER, PASSWORD), timeout=5)
            assert answer.json() == {"sessionKey": "session-atlas"}
            event = json.loads(ws.recv(timeout=10))
    assert event["type"] == "session.created"
    assert event["payload"] == {"sessionKey": "session-atlas", "agentId": "atlas", "kind": "direct"}
