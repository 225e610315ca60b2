from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cutswap.cli import main as cli
from cutswap.report import (
    comparison,
    list_runs,
    pivot,
    reference_table,
    run_page,
    summary_markdown,
    write_index,
)


def _results(dataset: str = "textures") -> pd.DataFrame:
    rows = []
    for category, base in (("bottle", 0.9), ("screw", 0.6)):
        for method, delta in (("cutswap", 0.05), ("cutpaste", 0.0)):
            for seed, noise in ((0, -0.01), (1, 0.01)):
                rows.append(
                    {
                        "dataset": dataset, "category": category, "method": method, "seed": seed,
                        "image_AUROC": base + delta + noise, "pretrained": False, "head_dims": "512-128",
                        "steps": 10, "batch_size": 4, "image_size": 64, "lr": 0.03, "levels": "level1",
                        "cluster_method": "fcm", "cluster_k": 3, "draws": 8, "pair_fallback_rate": 0.01,
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


PROV = {
    "run": "r1",
    "backbone": {"name": "efficientnet_lite0", "sha256": "ab" * 32, "fallback_reason": "offline"},
}


def test_pivot_mean_std_over_seeds_and_mean_row():
    table = pivot(_results())
    assert table.loc["bottle", "cutswap"] == "95.0 ± 1.4"  # 94, 96: std (ddof=1) = 1.414
    assert table.loc["screw", "cutpaste"] == "60.0 ± 1.4"
    # mean row: per seed, the mean over categories (seed 0: (94+64)/2 = 79, seed 1: 81)
    assert table.loc["mean", "cutswap"] == "80.0 ± 1.4"


def test_summary_and_page_say_how_numbers_were_obtained():
    results = _results()
    md = summary_markdown(results, PROV)
    assert "| bottle | 95.0 ± 1.4 | 90.0 ± 1.4 |" in md
    assert "**Deviation**" in md and "offline" in md and "synthetic defects" in md
    page = run_page(results, {**PROV, "settings": {}}, ["figures/bottle.png"])
    assert 'id="table-image_AUROC"' in page and '<img src="figures/bottle.png"' in page


def test_mvtec_runs_are_compared_with_the_published_table():
    assert comparison(_results("textures")) is None
    table = comparison(_results("mvtec"))
    published = reference_table()
    assert table.loc["bottle", "CutPaste (paper)"] == f"{published.loc['bottle', 'cutpaste_binary']:.1f}"
    assert table.loc["screw", "3-way (paper)"] == f"{published.loc['screw', 'cutpaste_3way']:.1f}"
    assert published.loc["mean", "cutpaste_3way"] == pytest.approx(95.2)


def test_index_and_cli_list_and_show_runs(tmp_path, capsys):
    run = tmp_path / "r1"
    run.mkdir()
    _results().to_csv(run / "results.csv", index=False)
    (run / "provenance.json").write_text(
        json.dumps({**PROV, "created": "2026-01-01T00:00:00", "preset": "demo"})
    )
    runs = list_runs(tmp_path)
    assert runs.loc[0, "run"] == "r1" and "cutswap 80.0" in runs.loc[0, "mean image_AUROC"]
    page = write_index(tmp_path).read_text()
    assert '<a href="r1/index.html">r1</a>' in page
    assert cli(["--reports", str(tmp_path), "runs"]) == 0
    assert "r1" in capsys.readouterr().out
    assert cli(["--reports", str(tmp_path), "show", "r1"]) == 0
    assert "| bottle | 95.0 ± 1.4 | 90.0 ± 1.4 |" in capsys.readouterr().out
    assert cli(["--reports", str(tmp_path), "show", "nope"]) == 2
    assert "runs: r1" in capsys.readouterr().err


def test_cells_skip_missing_values():
    results = _results()
    results.loc[0, "image_AUROC"] = np.nan  # bottle, cutswap, seed 0
    assert pivot(results).loc["bottle", "cutswap"] == "96.0"
