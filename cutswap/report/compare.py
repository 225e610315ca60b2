"""Paired comparisons between methods: the benchmark's questions, answered with an interval and a verdict.

Input: the per-seed results table (``reports/<run>/results.csv``), one row per category x method x seed::

    category  method       seed  image_AUROC  image_F1Max  pixel_AUROC  pixel_AUPRO  pixel_F1Max  ...
    bottle    cutswap      0     0.953        0.941        0.912        0.802        0.511
    bottle    random-swap  0     0.941        0.930        NaN          NaN          NaN

Metrics are fractions in [0, 1]; NaN means undefined (e.g. pixel metrics without masks). Output of
:func:`compare` (``reports/<run>/comparisons.csv``), one row per question x metric, differences a - b as
fractions::

    a  b  metric  n_pairs  mean_diff  ci_low  ci_high  wins  ties  losses  verdict

A pair is a (category, seed) where both methods have a finite value; a method trained with seed s on
category c is compared with the other method trained with the same seed on the same category (same test
images). ``mean_diff`` is the mean over categories of each category's mean difference over seeds, so
every category weighs the same, as in the report's "mean" row and the published tables; when every
category has the same seeds this is the plain mean over pairs.

Why this interval:

* **Stratified by category.** The categories are the fixed set the benchmark is about, not a sample from
  a population of categories, so they are not resampled: each resample redraws, within every category,
  as many seeds as it has (with replacement), and averages the category means with the same equal weights.
  What varies is the training noise (the seed), which is what a rerun would change. Resampling categories
  too would widen the interval with between-category spread (bottle is easier than screw for every
  method), which is not uncertainty about this benchmark's answer.
* **Bootstrap, not a t-interval.** With 3 to 5 seeds per category the differences are neither many nor
  normal (AUROC differences pile up near the ceiling and are bounded), and the statistic is a mean of
  per-category means with unequal seed counts when a partner is missing; the percentile bootstrap needs
  neither normality nor a degrees-of-freedom formula for that design. It is vectorised: each category's
  ``n_boot`` resamples are one integer draw and one mean, so 10,000 resamples take milliseconds.
* **Deterministic**: a fresh ``numpy.random.Generator`` seeded with ``seed`` per row, so a row does not
  depend on which other rows are computed.
* A category with a single seed contributes its one difference as a constant to every resample (it adds
  no width). When no category has two seeds there is no training noise to measure: the interval is NaN
  and the verdict is "no detectable difference at this power".

What it does not capture: the test set's own sampling noise (another draw of test images would move both
methods' AUROC). Both methods are scored on the same test images, so much of that noise is shared and
cancels in the paired difference, but not all of it; the interval is about training seeds on these test
images, and a difference can be real here yet not carry over to other images of the same category.

Ties: ``|diff| <= tie`` with ``tie = 0.001`` by default, i.e. 0.1 AUROC points, the precision the report
prints, so a "win" is a difference a reader of the tables could see.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cutswap.method.registry import METHODS, UNTRAINED_METHODS

#: The no-training baseline: frozen ImageNet trunk + the same Gaussian density, nothing trained.
BASELINE = "imagenet-gde"
#: Metrics compared by default (those of them a run has), in the report's order.
METRICS = ("image_AUROC", "image_F1Max", "pixel_AUROC", "pixel_AUPRO", "pixel_F1Max")
#: Columns of :func:`compare`'s table and of ``comparisons.csv``.
COLUMNS = (
    "a",
    "b",
    "metric",
    "n_pairs",
    "mean_diff",
    "ci_low",
    "ci_high",
    "wins",
    "ties",
    "losses",
    "verdict",
)
#: Differences within this (a fraction: 0.1 points) count as ties: the report prints one decimal in %.
TIE = 0.001
NO_DIFFERENCE = "no detectable difference at this power"
#: The fixed questions: (method under test, reference) -> what the comparison answers.
QUESTIONS: dict[tuple[str, str], str] = {
    ("cutswap", "random-swap"): "Does saliency guidance help (the same swaps at random locations)?",
    ("cutswap", "cutpaste"): "Do saliency-guided swaps beat CutPaste?",
    ("cutswap-3way", "cutpaste-3way"): "Do saliency-guided swaps beat CutPaste in the 3-way setting?",
}
_REQUIRED = ("category", "method", "seed")


def question(a: str, b: str) -> str:
    """The one-sentence purpose of comparing ``a`` (under test) with ``b`` (reference), for row titles."""
    if (a, b) in QUESTIONS:
        return QUESTIONS[(a, b)]
    if b == BASELINE:
        return f"Does training ({a}) beat the untrained ImageNet features?"
    return f"Is {a} better than {b}?"


def comparison_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """The (a, b) pairs that answer the benchmark's questions, among ``methods``.

    The fixed questions of :data:`QUESTIONS` come first, then every trained method against the
    no-training baseline :data:`BASELINE` (known methods in the settings' order, then any others in the
    given order). A positive difference a - b means a is better.
    """
    present = list(dict.fromkeys(methods))
    pairs = [(a, b) for a, b in QUESTIONS if a in present and b in present]
    if BASELINE in present:
        trained = [m for m in METHODS if m in present] + [m for m in present if m not in METHODS]
        pairs += [(m, BASELINE) for m in trained if m != BASELINE]
    return pairs


def _check_columns(results: pd.DataFrame) -> None:
    if not isinstance(results, pd.DataFrame):
        raise ValueError(f"results must be a pandas DataFrame, got {type(results).__name__}")
    missing = [c for c in _REQUIRED if c not in results.columns]
    if missing:
        raise ValueError(f"results lack the columns {missing} (need {list(_REQUIRED)} and the metrics)")


def _check(results: pd.DataFrame, metric: str) -> None:
    _check_columns(results)
    if metric not in results.columns:
        metrics = [m for m in METRICS if m in results.columns]
        raise ValueError(f"unknown metric {metric!r}: the results have {metrics}")
    if not pd.api.types.is_numeric_dtype(results[metric]):
        raise ValueError(f"metric {metric!r} is not numeric (dtype {results[metric].dtype})")


def paired_differences(results: pd.DataFrame, a: str, b: str, metric: str) -> pd.DataFrame:
    """Per (category, seed), the difference ``a - b`` of ``metric``, where both have a finite value.

    A (category, seed) that one method lacks, or where either value is NaN, is dropped (the number of
    rows returned is the comparison's ``n_pairs``), because an unpaired value would mix seed noise into
    the difference. The exception is a method that trains nothing (``UNTRAINED_METHODS``, evaluated once
    per category because no seed changes it): its one value per category pairs with every seed of the
    other method.

    Returns:
        Columns ``category, seed, a_value, b_value, diff``, sorted by category and seed.

    Raises:
        ValueError: missing columns, an unknown or non-numeric metric, a == b, a method absent from the
            results, or a (category, method, seed) present twice (pairing would be ambiguous).
    """
    _check(results, metric)
    if a == b:
        raise ValueError(f"cannot compare {a!r} with itself")
    for method in (a, b):
        if not (results["method"] == method).any():
            raise ValueError(
                f"method {method!r} is not in the results ({sorted(results['method'].unique())})"
            )
    sides = []
    for method, name in ((a, "a_value"), (b, "b_value")):
        sub = results.loc[results["method"] == method, ["category", "seed", metric]]
        if sub.duplicated(["category", "seed"]).any():
            raise ValueError(f"method {method!r} has several rows for one (category, seed)")
        sides.append(sub.rename(columns={metric: name}))
    on = ["category", "seed"]
    for i, method in enumerate((a, b)):
        if method in UNTRAINED_METHODS and (a, b)[1 - i] not in UNTRAINED_METHODS:
            if sides[i]["category"].duplicated().any():
                raise ValueError(f"method {method!r} trains nothing but has several seeds in a category")
            sides[i] = sides[i].drop(columns="seed")
            on = ["category"]
    joined = sides[0].merge(sides[1], on=on, how="inner")
    joined = joined[
        np.isfinite(joined["a_value"].astype(float)) & np.isfinite(joined["b_value"].astype(float))
    ]
    joined = joined.assign(diff=joined["a_value"].astype(float) - joined["b_value"].astype(float))
    return joined.sort_values(["category", "seed"], kind="stable").reset_index(drop=True)


def stratified_bootstrap(
    diffs: pd.DataFrame, n_boot: int = 10000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of category means of ``diffs["diff"]`` and its stratified percentile bootstrap interval.

    Within each category its seeds are redrawn with replacement (as many as it has); categories keep equal
    weights. NaN bounds when there are no pairs or no category has two seeds (nothing to resample).
    """
    groups = [g.to_numpy(float) for _, g in diffs.groupby("category", sort=True)["diff"]]
    if not groups:
        return float("nan"), float("nan"), float("nan")
    mean = float(np.mean([g.mean() for g in groups]))
    if max(len(g) for g in groups) < 2:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boot = np.zeros(n_boot)
    for g in groups:  # categories are few; each one's n_boot resamples are one vectorised draw
        boot += g[rng.integers(0, len(g), size=(n_boot, len(g)))].mean(axis=1)
    boot /= len(groups)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return mean, float(low), float(high)


def verdict(a: str, b: str, mean_diff: float, ci_low: float, ci_high: float, n_pairs: int) -> str:
    """The row's conclusion in words, differences in percentage points with one decimal.

    "no detectable difference at this power" when the interval contains 0, is undefined, or there are
    fewer than 2 pairs; otherwise the better method, by how much and its interval, as positive numbers.
    """
    if n_pairs < 2 or not (np.isfinite(ci_low) and np.isfinite(ci_high)) or ci_low <= 0 <= ci_high:
        return NO_DIFFERENCE
    if ci_low > 0:
        return f"{a} better by {mean_diff * 100:.1f} [{ci_low * 100:.1f}, {ci_high * 100:.1f}]"
    return f"{b} better by {-mean_diff * 100:.1f} [{-ci_high * 100:.1f}, {-ci_low * 100:.1f}]"


def compare(
    results: pd.DataFrame,
    pairs: Sequence[tuple[str, str]] | None = None,
    metrics: Sequence[str] | None = None,
    n_boot: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    tie: float = TIE,
) -> pd.DataFrame:
    """Every comparison x metric: paired mean difference a - b, its interval, wins/ties/losses, verdict.

    Args:
        results: the per-seed results (see the module docstring for the columns).
        pairs: (a, b) pairs; default :func:`comparison_pairs` of the methods present.
        metrics: metric columns; default those of :data:`METRICS` that have a finite value.
        n_boot: bootstrap resamples.
        confidence: coverage of the percentile interval, in (0, 1).
        seed: seed of the resampling (the same seed gives the same table).
        tie: a pair with ``|diff| <= tie`` (a fraction) is a tie; default 0.001 = 0.1 points.

    Returns:
        One row per pair x metric with exactly :data:`COLUMNS`, differences as fractions.

    Raises:
        ValueError: bad results (missing columns, duplicates), an unknown metric or method, or
            out-of-range ``n_boot``, ``confidence`` or ``tie``.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not tie >= 0:
        raise ValueError(f"tie must be >= 0, got {tie!r}")
    _check_columns(results)
    if metrics is None:
        metrics = [m for m in METRICS if m in results.columns and results[m].notna().any()]
    if isinstance(metrics, str):
        metrics = [metrics]
    for metric in metrics:
        _check(results, metric)
    if pairs is None:
        pairs = comparison_pairs(list(results["method"]))
    rows = []
    for a, b in pairs:
        for metric in metrics:
            diffs = paired_differences(results, a, b, metric)
            d = diffs["diff"].to_numpy(float)
            if not len(d):  # nothing to compare (e.g. a method without pixel maps): no row, no verdict
                continue
            mean, low, high = stratified_bootstrap(diffs, n_boot, confidence, seed)
            rows.append(
                {
                    "a": a, "b": b, "metric": metric, "n_pairs": len(d), "mean_diff": mean,
                    "ci_low": low, "ci_high": high, "wins": int((d > tie).sum()),
                    "ties": int((np.abs(d) <= tie).sum()), "losses": int((d < -tie).sum()),
                    "verdict": verdict(a, b, mean, low, high, len(d)),
                }
            )  # fmt: skip
    return pd.DataFrame(rows, columns=list(COLUMNS))


def points(value: float, signed: bool = True) -> str:
    """A fraction as percentage points with one decimal (``0.0123 -> '+1.2'``); 'n/a' for NaN."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


def display_table(comparisons: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The comparison table for people: indexed by the question, differences in points, the verdict."""
    missing = [c for c in COLUMNS if c not in comparisons.columns]
    if missing:
        raise ValueError(f"comparisons lack the columns {missing}")
    level = f"{confidence * 100:g}% interval"
    rows = [
        {
            "question": question(r.a, r.b),
            "a − b": f"{r.a} − {r.b}",
            "metric": r.metric,
            "pairs": int(r.n_pairs),
            "mean diff": points(r.mean_diff),
            level: f"[{points(r.ci_low)}, {points(r.ci_high)}]" if np.isfinite(r.ci_low) else "n/a",
            "wins/ties/losses": f"{int(r.wins)}/{int(r.ties)}/{int(r.losses)}",
            "verdict": r.verdict,
        }
        for r in comparisons.itertuples(index=False)
    ]
    columns = ["question", "a − b", "metric", "pairs", "mean diff", level, "wins/ties/losses", "verdict"]
    return pd.DataFrame(rows, columns=columns).set_index("question")


def interval_note(n_boot: int = 10000, confidence: float = 0.95, tie: float = TIE, seed: int = 0) -> str:
    """One sentence saying how the intervals and wins were computed, for under the table."""
    return (
        f"Differences a − b in percentage points over (category, seed) pairs; mean = mean over categories; "
        f"{confidence * 100:g}% percentile interval from {n_boot} paired bootstrap resamples stratified by "
        f"category (seeds redrawn within each category, categories fixed; seed {seed}); it reflects "
        f"training-seed noise, not the test set's own sampling noise. Ties: |diff| ≤ {tie * 100:g} points."
    )


def comparisons_markdown(
    comparisons: pd.DataFrame, n_boot: int = 10000, confidence: float = 0.95, tie: float = TIE, seed: int = 0
) -> str:
    """The comparison table as GitHub Markdown (one row per question x metric) with the interval note."""
    table = display_table(comparisons, confidence).reset_index()
    lines = [
        "| " + " | ".join(table.columns) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * 4 + ["---"]) + "|",
    ]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join([*lines, "", interval_note(n_boot, confidence, tie, seed)])
