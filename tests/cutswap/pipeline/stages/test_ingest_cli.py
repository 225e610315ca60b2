"""The command line on a dataset that fights back: exit code 2, the files named, nothing published."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]

pytestmark = pytest.mark.slow  # starts Prefect's temporary API in a fresh process


def test_bad_pixels_exit_2_naming_the_files_with_nothing_published(tmp_path, kit):
    root = kit.make_mvtec(tmp_path / "data")
    truncated = kit.truncate(kit.write_image(root / "bottle/train/good/009.png", 64, 64))
    empty = root / "bottle/test/good/009.png"
    empty.write_bytes(b"")
    storage = tmp_path / "storage"
    preset = kit.write_preset(tmp_path / "bad.yaml", "mvtec", root, storage)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect")}
    done = subprocess.run(
        [sys.executable, "-m", "flows.benchmark", "--preset", str(preset)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    error = done.stderr[done.stderr.index("error: ingest of category 'bottle'") :]
    assert f"{truncated}: image data is truncated or corrupt" in error
    assert f"{empty}: file is empty" in error
    assert "Traceback" not in error  # (Prefect's own log of the failed task run, above it, has one)
    # Nothing under the storage root but the (empty) stage folder: no store, no temporary leftover.
    assert sorted(str(p.relative_to(storage)) for p in storage.rglob("*")) == ["ingest"]
