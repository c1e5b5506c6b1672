"""The console's committed assets are what ``console/`` builds (``make console``)."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "console"
BUILT = ROOT / "services" / "reporter" / "static" / "console"


def test_the_committed_assets_match_a_fresh_build(tmp_path: Path) -> None:
    if shutil.which("node") is None or not (SOURCE / "node_modules" / "esbuild").is_dir():
        pytest.skip("needs node and console/node_modules (cd console && npm ci)")
    subprocess.run(
        ["node", "build.mjs"],
        cwd=SOURCE,
        env={**os.environ, "CONSOLE_OUT": str(tmp_path)},
        check=True,
        capture_output=True,
        timeout=120,
    )
    for name in ("index.html", "assets/app.js", "assets/app.css"):
        assert filecmp.cmp(tmp_path / name, BUILT / name, shallow=False), (
            f"{name} is stale: run `make console` and commit services/reporter/static/console"
        )
