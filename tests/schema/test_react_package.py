"""The livepanel-react package as npm packs it: what a team installs, not the source folder.

Needs the package's dev dependencies (``make reactpkg`` runs ``npm ci`` there); without them
the test skips, unless ``LIVEPANEL_REQUIRE_NPM=1`` (CI).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

from tests.requirements import unavailable

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "packages" / "livepanel-react"
CLIENT = ROOT / "src" / "livepanel" / "static"


def test_npm_pack_ships_the_built_hooks_the_client_and_their_types(tmp_path: Path) -> None:
    """npm pack builds the package; the tarball holds what its exports name, the client
    byte for byte as the Python package ships it, and no source or dependency."""
    npm = shutil.which("npm")
    if npm is None or not (PACKAGE / "node_modules" / "typescript").is_dir():
        unavailable("npm", "packages/livepanel-react has no node_modules: make reactpkg")
    result = subprocess.run(
        [npm, "pack", "--json", "--pack-destination", str(tmp_path)],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout[result.stdout.index("[") :])[0]
    files = {entry["path"] for entry in report["files"]}
    manifest = json.loads((PACKAGE / "package.json").read_text(encoding="utf-8"))

    exported = {
        target.removeprefix("./")
        for entry in manifest["exports"].values()
        if isinstance(entry, dict)
        for target in entry.values()
    }
    assert exported <= files, exported - files
    assert {"package.json", "dist/ConnectionStatus.js", "dist/useLivePanelState.d.ts"} <= files
    assert not any(p.startswith(("src/", "node_modules/", "scripts/")) for p in files), files
    assert manifest["peerDependencies"] == {"react": ">=18"}
    assert "dependencies" not in manifest  # React comes from the app, the client is inside

    with tarfile.open(tmp_path / report["filename"]) as tarball:
        for name in ("livepanel.js", "livepanel.d.ts"):
            member = tarball.extractfile(f"package/dist/{name}")
            assert member is not None
            assert member.read() == (CLIENT / name).read_bytes(), f"dist/{name} drifted"
        index = tarball.extractfile("package/dist/index.d.ts")
        assert index is not None
        declarations = index.read().decode()
    for name in ("useLivePanel", "useLivePanelState", "ConnectionStatus", "SchemaChange"):
        assert name in declarations
