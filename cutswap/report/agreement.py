"""Two runs' answers side by side: do their verdicts survive the rerun?

Input: two ``comparisons.csv`` tables (``cutswap.report.compare.COLUMNS``) of runs that asked the same
questions, e.g. the same preset with disjoint seeds or on two machines. Output of :func:`agreement`, one
row per (a, b, metric) both runs answered::

    question  a − b  metric  run A  run B  A's estimate in B's interval  B's in A's  agreement

``agreement`` is ``opposite`` when one run finds a better and the other b better (the failure this table
exists to catch), ``one finds a difference`` when only one run's interval clears zero (what two honest
runs near the detectable difference do now and then), ``same`` otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cutswap.report.compare import points, question

OPPOSITE = "opposite"
ONE_SIDED = "one finds a difference"
SAME = "same"


def direction(ci_low: float, ci_high: float) -> int:
    """+1: a better (interval above zero), -1: b better, 0: the interval holds zero, or no interval."""
    if np.isfinite(ci_low) and ci_low > 0:
        return 1
    if np.isfinite(ci_high) and ci_high < 0:
        return -1
    return 0


def _interval(r: pd.Series, side: str) -> str:
    return f"{points(r['mean_diff' + side])} [{points(r['ci_low' + side])}, {points(r['ci_high' + side])}]"


def _inside(value: float, low: float, high: float) -> str:
    if not (np.isfinite(value) and np.isfinite(low) and np.isfinite(high)):
        return "n/a"
    return "yes" if low <= value <= high else "no"


def agreement(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """The questions both runs answered, their intervals in points and whether their verdicts agree.

    Raises:
        ValueError: a table lacks the columns of ``comparisons.csv``, or the runs share no question.
    """
    needed = ["a", "b", "metric", "mean_diff", "ci_low", "ci_high"]
    for name, table in (("first", first), ("second", second)):
        missing = [c for c in needed if c not in table.columns]
        if missing:
            raise ValueError(f"the {name} run's comparisons lack the columns {missing}")
    asked = ["question"] if "question" in first.columns else []  # reports before the ablation block lack it
    both = first[needed + asked].merge(second[needed], on=["a", "b", "metric"], suffixes=("_A", "_B"))
    if both.empty:
        raise ValueError("the two runs answered no common question (no (a, b, metric) in both)")
    rows = []
    for _, r in both.iterrows():
        da, db = direction(r["ci_low_A"], r["ci_high_A"]), direction(r["ci_low_B"], r["ci_high_B"])
        verdict = OPPOSITE if da * db < 0 else ONE_SIDED if da != db else SAME
        rows.append(
            {
                "question": r["question"] if asked else question(r["a"], r["b"]),
                "a − b": f"{r['a']} − {r['b']}",
                "metric": r["metric"],
                "run A": _interval(r, "_A"),
                "run B": _interval(r, "_B"),
                "A's estimate in B's interval": _inside(r["mean_diff_A"], r["ci_low_B"], r["ci_high_B"]),
                "B's in A's": _inside(r["mean_diff_B"], r["ci_low_A"], r["ci_high_A"]),
                "agreement": verdict,
            }
        )
    return pd.DataFrame(rows)
