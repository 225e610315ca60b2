"""The runs index and the comparison pages (``cutswap.report.runs_page``), read as files; the browser
behaviour (sorting, filtering, opening a comparison) is in ``test_report_browser.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cutswap.report.answers import answers_html, grid_html, row_words
from cutswap.report.compare import compare, headline
from cutswap.report.runs_page import COMPARE, comparison_name, write_index


def _run(root: Path, name: str, dataset: str, shift: float, failed: int = 0) -> None:
    rng = np.random.default_rng(len(name))
    rows = [
        {"dataset": dataset, "category": c, "method": m, "seed": s,
         "image_AUROC": 0.8 + (shift if m == "cutswap" else 0.0) + rng.normal(0, 0.01),
         "pixel_AUROC": 0.9 + rng.normal(0, 0.01)}
        for c in ("bottle", "screw") for m in ("cutswap", "random-swap") for s in range(3)
    ]  # fmt: skip
    results = pd.DataFrame(rows)
    folder = root / name
    folder.mkdir(parents=True)
    results.to_csv(folder / "results.csv", index=False)
    table = compare(results, confirmatory=[("cutswap", "random-swap", "image_AUROC")])
    table.to_csv(folder / "comparisons.csv", index=False)
    prov = {"run": name, "created": "2026-12-06T10:00:00", "preset": "p.yaml", "failed_jobs": [{}] * failed}
    (folder / "provenance.json").write_text(json.dumps(prov))


def test_the_index_lists_answers_and_status_and_writes_a_comparison_per_two_runs_of_one_dataset(tmp_path):
    _run(tmp_path, "a1", "mvtec", 0.05)
    _run(tmp_path, "a2", "mvtec", 0.05, failed=2)
    _run(tmp_path, "b1", "visa", 0.0)
    page = write_index(tmp_path).read_text()
    assert '<a href="a1/index.html">a1</a>' in page and 'value="b1"' in page
    assert "cutswap − random-swap: cutswap better" in page  # the confirmatory answer
    assert "incomplete: 2 failed jobs" in page
    pairs = json.loads(re.search(r'<script type="application/json" id="pairs">(.*?)</script>', page).group(1))
    assert pairs == {"a1\na2": "compare/a1+a2.html"}  # b1 is another dataset: no page
    compared = (tmp_path / comparison_name("a2", "a1")).read_text()
    assert "a1 beside a2" in compared and 'id="agreement"' in compared and "0 opposite" in compared
    # a run removed: its comparison page goes with it
    for f in (tmp_path / "a2").iterdir():
        f.unlink()
    (tmp_path / "a2").rmdir()
    write_index(tmp_path)
    assert not list((tmp_path / COMPARE).glob("*.html"))


def test_an_unreadable_comparisons_table_is_listed_and_set_beside_nothing(tmp_path):
    _run(tmp_path, "a1", "mvtec", 0.05)
    _run(tmp_path, "a2", "mvtec", 0.05)
    (tmp_path / "a2" / "comparisons.csv").write_bytes(b"\xff\xfe not a table")
    page = write_index(tmp_path).read_text()
    assert "comparisons.csv unreadable" in page and not list((tmp_path / COMPARE).glob("*.html"))


def test_the_answers_name_the_better_method_and_read_old_tables_from_their_intervals(tmp_path):
    _run(tmp_path, "a1", "mvtec", 0.05)
    table = pd.read_csv(tmp_path / "a1" / "comparisons.csv")
    rows = headline(table)
    assert list(rows["metric"]) == ["image_AUROC"]  # one line per question, on the main metric
    assert row_words(rows.iloc[0]) == "cutswap better"
    old = table.drop(columns=["answer", "role", "flag", "categories", "like_these_answer", "p_adjusted"])
    assert row_words(headline(old).iloc[0]) == "cutswap better"
    top = answers_html(table, "<figure id='x'></figure>")
    assert "Does saliency guidance help" in top and "confirmatory" in top and "<figure id='x'>" in top
    grid = grid_html(table, "g")
    assert grid.count("<tr>") == 1 + 1 and "image_AUROC" in grid and "pixel_AUROC" in grid
    assert 'class="a-better"' in grid
