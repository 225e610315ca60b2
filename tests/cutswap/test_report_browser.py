"""The report pages as a person sees them: rendered by headless Chromium (Debian's `chromium`)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest

from cutswap.report import run_page, write_index

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (make test installs it as root)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium(tmp_path, *args: str) -> str:
    profile = tmp_path / "chromium-profile"
    out = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture
def reports(tmp_path):
    results = pd.DataFrame(
        [
            {"dataset": "mvtec", "category": "bottle", "method": m, "seed": s, "image_AUROC": v, "pretrained": False,
             "head_dims": "512-128", "steps": 10, "batch_size": 4, "image_size": 64, "lr": 0.03, "levels": "level1",
             "cluster_method": "fcm", "cluster_k": 3, "draws": 8, "pair_fallback_rate": 0.0,
             "momentum": 0.9, "weight_decay": 3e-5, "trunk": "resnet18"}
            for m, s, v in (("cutswap", 0, 0.97), ("cutswap", 1, 0.99), ("cutpaste", 0, 0.91), ("cutpaste", 1, 0.93))
        ]
    )  # fmt: skip
    run = tmp_path / "reports" / "r1"
    (run / "figures").mkdir(parents=True)
    results.to_csv(run / "results.csv", index=False)
    prov = {"run": "r1", "created": "2026-01-01T00:00:00", "settings": {}, "backbone": {"name": "resnet18"}}
    (run / "provenance.json").write_text(json.dumps(prov))
    (run / "index.html").write_text(run_page(results, prov, []))
    write_index(tmp_path / "reports")
    return tmp_path / "reports"


def test_run_page_renders_its_tables(reports, tmp_path):
    dom = _chromium(tmp_path, "--dump-dom", (reports / "r1" / "index.html").as_uri())
    assert '<table id="table-image_AUROC">' in dom
    assert "<td>98.0 ± 1.4</td>" in dom  # cutswap on bottle: mean and std over the two seeds
    assert '<table id="reference">' in dom and "<td>99.2</td>" in dom  # the published CutPaste figure


def test_index_links_every_run_and_screenshots(reports, tmp_path):
    dom = _chromium(tmp_path, "--dump-dom", (reports / "index.html").as_uri())
    assert '<a href="r1/index.html">r1</a>' in dom
    shot = tmp_path / "index.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,600", (reports / "index.html").as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
