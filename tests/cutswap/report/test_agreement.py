"""Two runs' comparisons side by side: ``cutswap compare``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cutswap.app.cli import main as cli
from cutswap.report.agreement import ONE_SIDED, OPPOSITE, SAME, agreement, direction


def _table(rows: list[tuple[str, str, str, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["a", "b", "metric", "mean_diff", "ci_low", "ci_high"])


FIRST = _table(
    [
        ("cutswap", "random-swap", "image_AUROC", 0.014, 0.009, 0.018),  # a better
        ("cutswap", "cutpaste", "image_AUROC", -0.029, -0.051, -0.008),  # b better
        ("cutswap", "cutpaste", "pixel_AUROC", 0.001, -0.01, 0.012),  # none
        ("cutpaste", "imagenet-gde", "image_AUROC", 0.02, 0.01, 0.03),  # only in the first run
    ]
)
SECOND = _table(
    [
        ("cutswap", "random-swap", "image_AUROC", 0.012, 0.002, 0.022),
        ("cutswap", "cutpaste", "image_AUROC", 0.019, 0.004, 0.037),  # opposite
        ("cutswap", "cutpaste", "pixel_AUROC", 0.02, 0.015, 0.025),  # one finds a difference
    ]
)


def test_direction_reads_the_interval():
    assert (direction(0.01, 0.02), direction(-0.02, -0.01), direction(-0.01, 0.01)) == (1, -1, 0)
    assert direction(np.nan, np.nan) == 0


def test_agreement_flags_opposite_and_one_sided_verdicts():
    table = agreement(FIRST, SECOND)
    assert list(table["agreement"]) == [SAME, OPPOSITE, ONE_SIDED]  # the unshared question is left out
    opposite = table.iloc[1]
    assert opposite["run A"] == "-2.9 [-5.1, -0.8]" and opposite["run B"] == "+1.9 [+0.4, +3.7]"
    assert (opposite["A's estimate in B's interval"], opposite["B's in A's"]) == ("no", "no")
    assert table.iloc[0]["A's estimate in B's interval"] == "yes"
    with pytest.raises(ValueError, match="no common question"):
        agreement(FIRST.iloc[3:], SECOND)
    with pytest.raises(ValueError, match="lack the columns"):
        agreement(FIRST.drop(columns="ci_low"), SECOND)


def _run(root, name: str, comparisons: pd.DataFrame) -> None:
    (root / name).mkdir(parents=True)
    row = {
        "dataset": ["mvtec"],
        "category": ["bottle"],
        "method": ["cutswap"],
        "seed": [0],
        "image_AUROC": [0.9],
    }
    pd.DataFrame(row).to_csv(root / name / "results.csv")
    comparisons.to_csv(root / name / "comparisons.csv", index=False)


def test_cli_prints_both_runs_and_exits_1_on_opposite_verdicts(tmp_path, capsys):
    _run(tmp_path, "a", FIRST)
    _run(tmp_path, "b", SECOND)
    _run(tmp_path, "c", FIRST)
    assert cli(["--reports", str(tmp_path), "compare", "a", "b"]) == 1
    out = capsys.readouterr().out
    assert "| Do saliency-guided swaps beat CutPaste? | cutswap − cutpaste | image_AUROC |" in out
    assert "3 answers: 1 opposite, 1 where only one run finds a difference, 1 the same." in out
    assert cli(["--reports", str(tmp_path), "compare", "a", "c"]) == 0
    assert cli(["--reports", str(tmp_path), "compare", "a", "b", "--metric", "pixel_AUROC"]) == 0
    assert cli(["--reports", str(tmp_path), "compare", "a", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_agreement_keeps_the_question_a_report_wrote():
    # an ablation row's question is the report's own words, not "Is cutswap better than cutswap-level4?"
    asked = "Does multilevel saliency help (the run's levels vs level4 only)?"
    row = [("cutswap", "cutswap-level4", "image_AUROC", 0.004, -0.003, 0.011)]
    first = _table(row).assign(question=asked)
    assert list(agreement(first, _table(row))["question"]) == [asked]
