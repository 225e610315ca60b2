"""Paired comparisons between methods: the benchmark's questions, answered with an interval and a verdict.

Input: the per-seed results table (``reports/<run>/results.csv``), one row per category x method x seed::

    category  method       seed  image_AUROC  image_F1Max  pixel_AUROC  pixel_AUPRO  pixel_F1Max  ...
    bottle    cutswap      0     0.953        0.941        0.912        0.802        0.511
    bottle    random-swap  0     0.941        0.930        NaN          NaN          NaN

Metrics are fractions in [0, 1]; NaN means undefined (e.g. pixel metrics without masks). Output of
:func:`compare` (``reports/<run>/comparisons.csv``), one row per question x metric, differences a - b as
fractions::

    block question a b metric n_pairs mean_diff ci_low ci_high se df detectable test_noise wins ties losses
    verdict

``block`` is ``main`` for the benchmark's own questions and ``ablation`` for a variant against its method
or its control (``cutswap.report.ablations``); ``question`` is the row's question in words.

``se`` the standard error of ``mean_diff``, ``df`` its degrees of freedom, ``detectable`` the difference
the design detects with 80 % power, ``test_noise`` whether the test set's noise is in ``se``.
Optional input, the redraws (:func:`cutswap.report.redraws.redraw_test_sets`, on the redraws of
``cutswap.score.resample``): one row per evaluation x redraw, ``category  method  seed  redraw  <metrics>``.

A pair is a (category, seed) where both methods have a finite value; a method trained with seed s on
category c is compared with the other method trained with the same seed on the same category (same test
images). ``mean_diff`` is the mean over categories of each category's mean difference over seeds, so
every category weighs the same, as in the report's "mean" row and the published tables.

The interval (:func:`paired_interval`): a t interval on that mean, with a variance of two parts and
Satterthwaite's degrees of freedom.

* **Seed noise**, per category: the variance of its per-seed differences over its number of seeds,
  ``s_c^2 / n_c`` (a category with one seed borrows the mean ``s^2`` of the others). Categories are
  fixed, not resampled: they are the benchmark, not a sample of one, and resampling them would add the
  spread between easy and hard categories, which is not uncertainty about this benchmark's answer.
* **Test-set noise**, per category, when the redraws of ``cutswap.score.resample`` are given: every
  evaluation of the category re-scored on the same bootstrap redraws of its test images; the per-seed
  differences of each redraw give their covariance matrix ``C`` across redraws. The noise every seed shares
  (the luck of this one test set, which no number of seeds averages away) is the mean off-diagonal entry
  of ``C``; what differs between seeds is already in ``s_c^2``. With one seed, ``C``'s one entry.
* ``Var = sum_c (s_c^2 / n_c + tau_c^2) / C^2``; degrees of freedom by Welch-Satterthwaite, ``n_c - 1``
  per seed term and ``B - 1`` per test term.

Why not the percentile bootstrap over seeds used before: with 3 seeds per category its spread is about
sqrt(2/3) of the standard error and it leaves the test set's noise out; in the simulation of
``tests/cutswap/report/test_coverage.py`` (the demo's measured variances) its 95 % interval covered the
truth in about 76 % of replications, this one in 94-95 % at 3 seeds x 3 categories and at 5 x 15.

The power: ``detectable`` is the difference this design finds with probability ``power`` (two-sided, at
the interval's level): ``(t_{1-alpha/2} + t_{power}) * se`` with the row's degrees of freedom. Where the
verdict is "no detectable difference", it says this number, so "no difference" and "too little data"
read apart.

Ties: ``|diff| <= tie`` with ``tie = 0.001`` by default, i.e. 0.1 AUROC points, the precision the report
prints, so a "win" is a difference a reader of the tables could see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from cutswap.method.registry import METHODS, UNTRAINED_METHODS

#: The no-training baseline: frozen ImageNet trunk + the same Gaussian density, nothing trained.
BASELINE = "imagenet-gde"
#: The strongest no-training detector in use: frozen mid-level patch features, nearest neighbours.
PATCHCORE = "patchcore"
#: Metrics compared by default (those of them a run has), in the report's order.
METRICS = ("image_AUROC", "image_F1Max", "pixel_AUROC", "pixel_AUPRO", "pixel_F1Max")
#: Columns of :func:`compare`'s table and of ``comparisons.csv``.
COLUMNS = (
    "block",
    "question",
    "a",
    "b",
    "metric",
    "n_pairs",
    "mean_diff",
    "ci_low",
    "ci_high",
    "se",
    "df",
    "detectable",
    "test_noise",
    "wins",
    "ties",
    "losses",
    "verdict",
)
#: Differences within this (a fraction: 0.1 points) count as ties: the report prints one decimal in %.
TIE = 0.001
NO_DIFFERENCE = "no detectable difference"
#: The power at which ``detectable`` is stated.
POWER = 0.8
#: The fixed questions: (method under test, reference) -> what the comparison answers.
QUESTIONS: dict[tuple[str, str], str] = {
    ("cutswap", "random-swap"): "Does saliency guidance help (the same swaps at random locations)?",
    ("cutswap", "cutpaste"): "Do saliency-guided swaps beat CutPaste?",
    ("cutswap-3way", "cutpaste-3way"): "Do saliency-guided swaps beat CutPaste in the 3-way setting?",
}
_REQUIRED = ("category", "method", "seed")
#: The blocks of questions, in the report's order: the benchmark's own, then the variants' (``ablations``).
BLOCKS = {"main": "Comparisons", "ablation": "Ablations"}


def question(a: str, b: str) -> str:
    """The one-sentence purpose of comparing ``a`` (under test) with ``b`` (reference), for row titles."""
    if (a, b) in QUESTIONS:
        return QUESTIONS[(a, b)]
    if b == BASELINE:
        return f"Does training ({a}) beat the untrained ImageNet features?"
    if b == PATCHCORE:
        return f"Does training ({a}) beat PatchCore, the strongest no-training detector?"
    return f"Is {a} better than {b}?"


def comparison_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """The (a, b) pairs that answer the benchmark's questions, among ``methods``.

    The fixed questions of :data:`QUESTIONS` come first, then every trained method against each
    no-training row present, :data:`BASELINE` then :data:`PATCHCORE` (known methods in the settings'
    order, then any others in the given order). A positive difference a - b means a is better.
    """
    present = list(dict.fromkeys(methods))
    pairs = [(a, b) for a, b in QUESTIONS if a in present and b in present]
    trained = [m for m in METHODS if m in present] + [m for m in present if m not in METHODS]
    trained = [m for m in trained if m not in UNTRAINED_METHODS]
    for reference in (BASELINE, PATCHCORE):
        if reference in present:
            pairs += [(m, reference) for m in trained]
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


@dataclass(frozen=True)
class Interval:
    """A paired mean difference with its t interval, standard error, degrees of freedom and power."""

    mean: float
    low: float
    high: float
    se: float
    df: float
    detectable: float


def _redraw_lookup(redraws: pd.DataFrame, metric: str) -> dict[tuple[str, str, int], np.ndarray]:
    """``(category, method, seed) -> metric over the redraws, in redraw order`` (one pass over the table)."""
    ordered = redraws.sort_values("redraw", kind="stable")
    return {
        (str(c), str(m), int(s)): g.to_numpy(float)
        for (c, m, s), g in ordered.groupby(["category", "method", "seed"], sort=False)[metric]
    }


def _test_variances(
    diffs: pd.DataFrame, lookup: dict[tuple[str, str, int], np.ndarray], a: str, b: str
) -> tuple[dict[str, float], int]:
    """Per category, the test-set variance every seed's difference shares (module docstring), and B."""
    # a method that trains nothing has one evaluation per category, paired with every seed of the other
    both_untrained = a in UNTRAINED_METHODS and b in UNTRAINED_METHODS
    untrained = {m: m in UNTRAINED_METHODS and not both_untrained for m in (a, b)}
    by_method = {}
    for category, method, seed in lookup:
        by_method.setdefault((category, method), []).append(seed)
    out, n_redraws = {}, 0
    for category, group in diffs.groupby("category", sort=True):
        columns = []
        for seed in group["seed"]:
            side = []
            for method in (a, b):
                found = by_method.get((str(category), method), [])
                key = found[0] if untrained[method] and len(found) == 1 else int(seed)
                if key not in found:
                    raise ValueError(f"no test redraws for {category}/{method}/seed {seed}")
                side.append(lookup[(str(category), method, key)])
            columns.append(side[0] - side[1])
        d = np.column_stack(columns)
        d = d[np.isfinite(d).all(axis=1)]
        if len(d) < 2:
            raise ValueError(f"fewer than 2 usable test redraws for {category}")
        n_redraws = len(d)
        cov = np.atleast_2d(np.cov(d, rowvar=False))
        k = len(cov)
        shared = (cov.sum() - np.trace(cov)) / (k * (k - 1)) if k > 1 else cov[0, 0]
        out[category] = max(float(shared), 0.0)
    return out, n_redraws


def paired_interval(
    diffs: pd.DataFrame,
    test_variance: dict[str, float] | None = None,
    n_redraws: int = 0,
    confidence: float = 0.95,
    power: float = POWER,
) -> Interval:
    """The mean of category means of ``diffs["diff"]``, its t interval and the detectable difference.

    Args:
        diffs: ``category, seed, diff`` (:func:`paired_differences`).
        test_variance: per category, the test-set variance shared by its seeds; None: seed noise only.
        n_redraws: redraws behind ``test_variance`` (its degrees of freedom are ``n_redraws - 1``).

    Returns NaN bounds when no category has two seeds (seed noise cannot be measured) or no pairs.
    """
    groups = {c: g.to_numpy(float) for c, g in diffs.groupby("category", sort=True)["diff"]}
    nan = float("nan")
    if not groups:
        return Interval(nan, nan, nan, nan, nan, nan)
    mean = float(np.mean([g.mean() for g in groups.values()]))
    measured = {c: g.var(ddof=1) for c, g in groups.items() if len(g) > 1}
    if not measured:
        return Interval(mean, nan, nan, nan, nan, nan)
    borrowed = float(np.mean(list(measured.values())))
    borrowed_df = sum(len(groups[c]) - 1 for c in measured)
    k = len(groups)
    variance, df_terms = 0.0, 0.0
    for c, g in groups.items():
        seed_term = measured.get(c, borrowed) / len(g) / k**2
        seed_df = len(g) - 1 if c in measured else borrowed_df
        variance += seed_term
        df_terms += seed_term**2 / seed_df
        if test_variance is not None:
            test_term = test_variance[c] / k**2
            variance += test_term
            df_terms += test_term**2 / max(n_redraws - 1, 1)
    se = float(np.sqrt(variance))
    df = float(variance**2 / df_terms) if df_terms > 0 else float("inf")
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    detectable = (stats.t.ppf(0.5 + confidence / 2, df) + stats.t.ppf(power, df)) * se
    return Interval(mean, mean - half, mean + half, se, df, float(detectable))


def verdict(a: str, b: str, interval: Interval, n_pairs: int) -> str:
    """The row's conclusion in words, differences in percentage points with one decimal.

    "no detectable difference" when the interval contains 0, is undefined, or there are fewer than 2
    pairs, with the difference this design would have detected; otherwise the better method, by how much
    and its interval, as positive numbers.
    """
    low, high = interval.low, interval.high
    if n_pairs < 2 or not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        if np.isfinite(interval.detectable):
            return f"{NO_DIFFERENCE} (would detect ±{interval.detectable * 100:.1f})"
        return f"{NO_DIFFERENCE} (too few seeds to tell)"
    if low > 0:
        return f"{a} better by {interval.mean * 100:.1f} [{low * 100:.1f}, {high * 100:.1f}]"
    return f"{b} better by {-interval.mean * 100:.1f} [{-high * 100:.1f}, {-low * 100:.1f}]"


def _check_settings(confidence: float, power: float, tie: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    if not tie >= 0:
        raise ValueError(f"tie must be >= 0, got {tie!r}")


def compare(
    results: pd.DataFrame,
    pairs: Sequence[tuple[str, str]] | None = None,
    metrics: Sequence[str] | None = None,
    redraws: pd.DataFrame | None = None,
    confidence: float = 0.95,
    power: float = POWER,
    tie: float = TIE,
    asked: dict[tuple[str, str], tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Every comparison x metric: paired mean difference a - b, its interval and power, verdict.

    Args:
        results: the per-seed results (see the module docstring for the columns).
        pairs: (a, b) pairs; default :func:`comparison_pairs` of the methods present.
        metrics: metric columns; default those of :data:`METRICS` that have a finite value.
        redraws: the evaluations re-scored on redraws of their test images; None leaves the test set's
            noise out (``test_noise`` False).
        confidence: coverage of the interval, in (0, 1).
        power: the power at which ``detectable`` is stated, in (0, 1).
        tie: a pair with ``|diff| <= tie`` (a fraction) is a tie; default 0.001 = 0.1 points.
        asked: (a, b) -> (block, question) for pairs that are not the benchmark's own questions (the
            ablations, ``cutswap.report.ablations``); other pairs are block ``main`` with :func:`question`.

    Returns:
        One row per pair x metric with exactly :data:`COLUMNS`, differences as fractions.

    Raises:
        ValueError: bad results (missing columns, duplicates), an unknown metric or method, redraws
            missing an evaluation, or out-of-range ``confidence``, ``power`` or ``tie``.
    """
    _check_settings(confidence, power, tie)
    metrics = _metrics(results, metrics)
    if pairs is None:
        pairs = comparison_pairs(list(results["method"]))
    lookups = {}
    if redraws is not None:
        lookups = {m: _redraw_lookup(redraws, m) for m in metrics if m in redraws.columns}
    rows = []
    for a, b in pairs:
        for metric in metrics:
            diffs = paired_differences(results, a, b, metric)
            d = diffs["diff"].to_numpy(float)
            if not len(d):  # nothing to compare (e.g. a method without pixel maps): no row, no verdict
                continue
            test_variance, n_redraws = (None, 0)
            if metric in lookups:
                test_variance, n_redraws = _test_variances(diffs, lookups[metric], a, b)
            iv = paired_interval(diffs, test_variance, n_redraws, confidence, power)
            asked_as = (asked or {}).get((a, b), ("main", question(a, b)))
            rows.append(_row(asked_as, a, b, metric, iv, d, test_variance is not None, tie))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _metrics(results: pd.DataFrame, metrics: Sequence[str] | str | None) -> list[str]:
    """The metrics to compare, checked: those given, else those of :data:`METRICS` with a finite value."""
    _check_columns(results)
    if metrics is None:
        metrics = [m for m in METRICS if m in results.columns and results[m].notna().any()]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    for metric in metrics:
        _check(results, metric)
    return metrics


def _row(
    asked_as: tuple[str, str],
    a: str,
    b: str,
    metric: str,
    iv: Interval,
    d: np.ndarray,
    test_noise: bool,
    tie: float,
) -> dict[str, object]:
    """One row of :func:`compare`'s table (``asked_as``: its block and question)."""
    block, text = asked_as
    return {
        "block": block, "question": text, "a": a, "b": b, "metric": metric,
        "n_pairs": len(d), "mean_diff": iv.mean,
        "ci_low": iv.low, "ci_high": iv.high, "se": iv.se, "df": iv.df,
        "detectable": iv.detectable, "test_noise": test_noise,
        "wins": int((d > tie).sum()), "ties": int((np.abs(d) <= tie).sum()),
        "losses": int((d < -tie).sum()), "verdict": verdict(a, b, iv, len(d)),
    }  # fmt: skip


def points(value: float, signed: bool = True) -> str:
    """A fraction as percentage points with one decimal (``0.0123 -> '+1.2'``); 'n/a' for NaN."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


#: Columns a comparisons table needs to be shown (reports of earlier versions lack the power columns).
_SHOWN = tuple(c for c in COLUMNS if c not in ("se", "df", "detectable", "test_noise"))


def display_table(comparisons: pd.DataFrame, confidence: float = 0.95, power: float = POWER) -> pd.DataFrame:
    """The comparison table for people: indexed by the question, differences in points, the verdict."""
    missing = [c for c in _SHOWN if c not in comparisons.columns]
    if missing:
        raise ValueError(f"comparisons lack the columns {missing}")
    level = f"{confidence * 100:g}% interval"
    detect = f"detectable ({power * 100:g}% power)"
    rows = [
        {
            "question": getattr(r, "question", None) or question(r.a, r.b),
            "a − b": f"{r.a} − {r.b}",
            "metric": r.metric,
            "pairs": int(r.n_pairs),
            "mean diff": points(r.mean_diff),
            level: f"[{points(r.ci_low)}, {points(r.ci_high)}]" if np.isfinite(r.ci_low) else "n/a",
            detect: "±" + points(r.detectable, signed=False) if "detectable" in r._fields else "n/a",
            "wins/ties/losses": f"{int(r.wins)}/{int(r.ties)}/{int(r.losses)}",
            "verdict": r.verdict,
        }
        for r in comparisons.itertuples(index=False)
    ]
    columns = [
        "question",
        "a − b",
        "metric",
        "pairs",
        "mean diff",
        level,
        detect,
        "wins/ties/losses",
        "verdict",
    ]
    return pd.DataFrame(rows, columns=columns).set_index("question")


def interval_note(
    confidence: float = 0.95,
    tie: float = TIE,
    power: float = POWER,
    redraws: int = 0,
    n_boot: int | None = None,
    seed: int | None = None,
) -> str:
    """One sentence saying how the intervals and wins were computed, for under the table.

    ``n_boot`` and ``seed`` describe reports of earlier versions (a percentile bootstrap over seeds).
    """
    ties = f"Ties: |diff| ≤ {tie * 100:g} points."
    if n_boot is not None:
        return (
            f"Differences a − b in percentage points over (category, seed) pairs; {confidence * 100:g}% "
            f"percentile interval from {n_boot} bootstrap resamples of seeds within categories (an earlier "
            f"report version: training-seed noise only, and too narrow at few seeds). {ties}"
        )
    test = (
        f"the test set's own noise from {redraws} redraws of its test images (normal and anomalous "
        "images redrawn separately, images not pixels)"
        if redraws
        else "not the test set's own noise (no redraws)"
    )
    return (
        f"Differences a − b in percentage points over (category, seed) pairs; mean = mean over categories. "
        f"{confidence * 100:g}% t interval (Welch-Satterthwaite degrees of freedom) whose variance holds the "
        f"seed-to-seed spread within each category and {test}; categories are fixed. Detectable: the "
        f"difference this design finds with {power * 100:g}% power. Per-seed numbers are not reproducible "
        "across machines (training is chaotic in float rounding); the intervals are what carries over. "
        f"{ties}"
    )


def comparisons_markdown(
    comparisons: pd.DataFrame,
    confidence: float = 0.95,
    tie: float = TIE,
    power: float = POWER,
    redraws: int = 0,
    n_boot: int | None = None,
    seed: int | None = None,
) -> str:
    """The comparison table as GitHub Markdown (one row per question x metric) with the interval note; the
    ablation block, where there is one, as a table of its own after the note, under ``### Ablations``."""
    blocks = split_blocks(comparisons)
    lines = (
        _markdown_rows(display_table(blocks["main"], confidence, power)) + [""] if "main" in blocks else []
    )
    lines.append(interval_note(confidence, tie, power, redraws, n_boot, seed))
    if "ablation" in blocks:
        lines += ["", f"### {BLOCKS['ablation']}", "", ABLATION_NOTE, ""]
        lines += _markdown_rows(display_table(blocks["ablation"], confidence, power))
    return "\n".join(lines)


#: What the ablation block answers, under its title.
ABLATION_NOTE = (
    "Each variant of a method (the same method with one choice of the paper changed) against that method, "
    "a − b with a the method as the run's settings make it; where the variant changes where swaps come "
    "from, also against a control: random-swap under the variant's own settings (its patch sizes). The "
    "same paired intervals as above."
)


def split_blocks(comparisons: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The comparisons by block (``BLOCKS`` order); a table without a block column is all ``main``."""
    if "block" not in comparisons.columns:
        return {"main": comparisons}
    return {b: comparisons[comparisons["block"] == b] for b in BLOCKS if (comparisons["block"] == b).any()}


def _markdown_rows(table: pd.DataFrame) -> list[str]:
    table = table.reset_index()
    lines = [
        "| " + " | ".join(table.columns) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * 5 + ["---"]) + "|",
    ]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
