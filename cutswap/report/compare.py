"""Paired comparisons between methods: the benchmark's questions, answered with intervals and a verdict.

Input: the per-seed results table (``reports/<run>/results.csv``), one row per category x method x seed::

    category  method       seed  image_AUROC  image_F1Max  pixel_AUROC  pixel_AUPRO  pixel_F1Max  ...
    bottle    cutswap      0     0.953        0.941        0.912        0.802        0.511
    bottle    random-swap  0     0.941        0.930        NaN          NaN          NaN

Metrics are fractions in [0, 1]; NaN means undefined (e.g. pixel metrics without masks). Output of
:func:`compare` (``reports/<run>/comparisons.csv``), one row per question x metric (:data:`COLUMNS`),
differences a - b as fractions; a positive difference favours a.

* ``block`` (``main``: the benchmark's questions; ``ablation``: a variant against its method or its
  control, ``cutswap.report.ablations``), ``question`` in words, ``role``: ``confirmatory`` (a question the
  run's settings name, ``report.confirmatory``) or ``exploratory``.
* ``pairing``: ``by seed`` (a's seed s with b's seed s on the same category and test images), one
  evaluation of a method that trains nothing against every seed, or ``unpaired: ...`` with the reason (two
  trained methods whose seeds differ: each category's means, Welch). ``n_pairs``: the pairs compared.
* **On these categories** (the benchmark's categories, fixed): ``mean_diff`` (mean over categories of each
  category's mean difference, so every category weighs the same, as in the published tables), ``ci_low``,
  ``ci_high``, ``se``, ``df`` (:func:`cutswap.report.intervals.skew_t`: Hall's skewness-corrected t, whose
  variance holds the seeds' spread within each category and, ``test_noise``, the test set's own noise),
  ``detectable`` (the difference found with 80 % power: an estimate, as noisy as ``se``), ``flag`` (why
  its coverage is not promised, :func:`cutswap.report.intervals.flag`; empty when it is), ``p_value`` (the
  same interval inverted), ``p_adjusted`` (Holm, within the row's family: the confirmatory rows, or its
  block's exploratory rows), ``answer``: ``a better``, ``b better``, ``practically equivalent`` (the
  interval within ``±margin``, 1 point by default), ``inconclusive`` or ``not answered``.
* **On categories like these** (categories as the unit, :func:`like_these`, at least
  :data:`MIN_CATEGORIES`): ``like_these_low``, ``like_these_high``, ``like_these_answer`` (``n/a`` below);
  ``categories`` and how many favour each side (``categories_a``, ``categories_b``: category means beyond
  the tie).
* ``p_improve`` [``p_improve_low``, ``p_improve_high``]: :func:`probability_of_improvement`; ``wins``,
  ``ties``, ``losses`` over the compared differences; ``verdict``: the answer in words with its scope.

Optional input, the redraws (:func:`cutswap.report.redraws.redraw_test_sets`, on the redraws of
``cutswap.score.resample``): one row per evaluation x redraw, ``category  method  seed  redraw  <metrics>``.

The interval's variance, per category:

* **Seed noise**: the variance of its per-seed differences over its number of seeds, ``s_c^2 / n_c`` (a
  category with one seed borrows the mean ``s^2`` of the others). Categories are fixed in this scope:
  the answer is about this benchmark, not about categories one has not measured (the other scope).
* **Test-set noise**, when the redraws are given: every evaluation of the category re-scored on the same
  bootstrap redraws of its test images; the differences of each redraw give their covariance matrix ``C``
  across redraws. The noise every seed shares (the luck of this one test set, which no number of seeds
  averages away) is the mean off-diagonal entry of ``C``; what differs between seeds is already in
  ``s_c^2``. With one seed, ``C``'s one entry.
* Not in it: the luck of the one training set, shared by every seed and method (docs/method.md).

Ties: ``|diff| <= tie`` with ``tie = 0.001`` by default, i.e. 0.1 AUROC points, the precision the report
prints, so a "win" is a difference a reader of the tables could see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import pandas as pd
from scipy import stats

from cutswap.method.registry import METHODS, UNTRAINED_METHODS
from cutswap.report.intervals import (
    MAX_SHARE,
    MIN_SEEDS,
    POWER,
    ROUND_OFF,
    Interval,
    Parts,
    flag,
    skew_interval,
)

#: The no-training baseline: frozen ImageNet trunk + the same Gaussian density, nothing trained.
BASELINE = "imagenet-gde"
#: The strongest no-training detector in use: frozen mid-level patch features, nearest neighbours.
PATCHCORE = "patchcore"
#: The metric a question is answered on in one line (the report's answers): the paper's.
MAIN_METRIC = "image_AUROC"
#: Metrics compared by default (those of them a run has), in the report's order.
METRICS = ("image_AUROC", "image_F1Max", "pixel_AUROC", "pixel_AUPRO", "pixel_F1Max")
#: Columns of :func:`compare`'s table and of ``comparisons.csv`` (module docstring).
COLUMNS = (
    "block", "question", "role", "a", "b", "metric", "pairing", "n_pairs",
    "mean_diff", "ci_low", "ci_high", "se", "df", "detectable", "test_noise", "flag",
    "p_value", "p_adjusted", "answer",
    "categories", "categories_a", "categories_b", "like_these_low", "like_these_high", "like_these_answer",
    "p_improve", "p_improve_low", "p_improve_high", "wins", "ties", "losses", "verdict",
)  # fmt: skip
#: Differences within this (a fraction: 0.1 points) count as ties: the report prints one decimal in %.
TIE = 0.001
#: The default margin of practical equivalence, a fraction (1 point).
MARGIN = 0.01
#: The fewest categories for an answer on categories like these.
MIN_CATEGORIES = 5
#: Bootstrap resamples of the probability of improvement's interval.
N_BOOT_IMPROVE = 2000
#: The answers (``answer``, ``like_these_answer``) and roles.
A_BETTER, B_BETTER = "a better", "b better"
EQUIVALENT, INCONCLUSIVE, NOT_ANSWERED = "practically equivalent", "inconclusive", "not answered"
CONFIRMATORY, EXPLORATORY = "confirmatory", "exploratory"
#: The fixed questions: (method under test, reference) -> what the comparison answers.
QUESTIONS: dict[tuple[str, str], str] = {
    ("cutswap", "random-swap"): "Does saliency guidance help (the same swaps at random locations)?",
    ("cutswap", "cutpaste"): "Do saliency-guided swaps beat CutPaste?",
    ("cutswap-3way", "cutpaste-3way"): "Do saliency-guided swaps beat CutPaste in the 3-way setting?",
}
#: The confirmatory questions of the shipped presets: ``report.confirmatory``'s default in the settings, which
#: do not import this module (a test keeps the two equal).
CONFIRMATORY_DEFAULT = (("cutswap", "random-swap", "image_AUROC"), ("cutswap", "cutpaste", "image_AUROC"))
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


def _redraw_lookup(redraws: pd.DataFrame, metric: str) -> dict[tuple[str, str, int], np.ndarray]:
    """``(category, method, seed) -> metric over the redraws, in redraw order`` (one pass over the table)."""
    ordered = redraws.sort_values("redraw", kind="stable")
    return {
        (str(c), str(m), int(s)): g.to_numpy(float)
        for (c, m, s), g in ordered.groupby(["category", "method", "seed"], sort=False)[metric]
    }


def _test_variances(
    columns: dict[str, list[tuple[int, int]]], lookup: dict[tuple[str, str, int], np.ndarray], a: str, b: str
) -> tuple[dict[str, float], int]:
    """Per category, the test-set variance every compared difference shares (module docstring), and B.

    ``columns``: per category the (seed of a, seed of b) of each difference: ``(s, s)`` paired, every
    combination unpaired. The shared part is the mean covariance of two differences that share neither
    a's nor b's evaluation (two that share one also share its own test noise); paired, that is every two
    seeds.
    """
    # a method that trains nothing has one evaluation per category, paired with every seed of the other
    both_untrained = a in UNTRAINED_METHODS and b in UNTRAINED_METHODS
    untrained = {m: m in UNTRAINED_METHODS and not both_untrained for m in (a, b)}
    by_method: dict[tuple[str, str], list[int]] = {}
    for category, method, seed in lookup:
        by_method.setdefault((category, method), []).append(seed)
    out, n_redraws = {}, 0
    for category, seeds in columns.items():
        series = []
        for pair in seeds:
            side = []
            for method, seed in zip((a, b), pair, strict=True):
                found = by_method.get((category, method), [])
                key = found[0] if untrained[method] and len(found) == 1 else int(seed)
                if key not in found:
                    raise ValueError(f"no test redraws for {category}/{method}/seed {seed}")
                side.append(lookup[(category, method, key)])
            series.append(side[0] - side[1])
        d = np.column_stack(series)
        d = d[np.isfinite(d).all(axis=1)]
        if len(d) < 2:
            raise ValueError(f"fewer than 2 usable test redraws for {category}")
        n_redraws = len(d)
        out[category] = _shared_variance(d, seeds)
    return out, n_redraws


def _shared_variance(d: np.ndarray, seeds: list[tuple[int, int]]) -> float:
    """The mean covariance across redraws (rows of ``d``) of two differences (columns) that share neither
    a's nor b's evaluation; with one seed on a side, of any two; with one difference, its variance."""
    cov = np.atleast_2d(np.cov(d, rowvar=False))
    sa, sb = (np.array([pair[i] for pair in seeds]) for i in (0, 1))
    apart = (sa[:, None] != sa[None, :]) & (sb[:, None] != sb[None, :])
    if not apart.any():
        apart = ~np.eye(len(cov), dtype=bool)
    shared = cov[apart].mean() if apart.any() else cov[0, 0]
    return max(float(shared), 0.0)


def _by_category(results: pd.DataFrame, method: str, metric: str) -> dict[str, pd.Series]:
    """Per category, ``method``'s finite values of ``metric`` indexed by seed."""
    sub = results.loc[results["method"] == method, ["category", "seed", metric]]
    sub = sub[np.isfinite(sub[metric].astype(float))]
    return {str(c): g.set_index("seed")[metric].astype(float) for c, g in sub.groupby("category", sort=True)}


def _seed_list(values: dict[str, pd.Series]) -> str:
    seeds = sorted({int(s) for v in values.values() for s in v.index})
    return ", ".join(map(str, seeds)) or "none"


def unpaired_reason(a: str, b: str, va: dict[str, pd.Series], vb: dict[str, pd.Series]) -> str | None:
    """Why ``a`` and ``b`` are compared unpaired, or None when every category's seeds match.

    Two trained methods whose finite results do not share their seeds in some category (a seed not run, or
    failed, on one side) are compared through each category's means rather than by dropping the unmatched
    seeds, which would change the design without a word. The pairing by seed number (the same initial
    weights and random stream) is then given up, so the interval errs wide.
    """
    if a in UNTRAINED_METHODS or b in UNTRAINED_METHODS:
        return None
    common = sorted(set(va) & set(vb))
    differ = [c for c in common if set(va[c].index) != set(vb[c].index)]
    if not differ:
        return None
    return (
        f"unpaired: the seeds differ in {len(differ)} of {len(common)} categories ({a}: {_seed_list(va)}; "
        f"{b}: {_seed_list(vb)}), so each category's means are compared (Welch)"
    )


def row_differences(results: pd.DataFrame, a: str, b: str, metric: str) -> np.ndarray:
    """The differences a row of :func:`compare` counts its wins, ties and losses over, and the report
    draws: per (category, seed) pair, or every run of a against every run of b within each category when
    the row is unpaired (:func:`unpaired_reason`)."""
    va, vb = _by_category(results, a, metric), _by_category(results, b, metric)
    if unpaired_reason(a, b, va, vb) is None:
        return paired_differences(results, a, b, metric)["diff"].to_numpy(float)
    cross = _cross(va, vb)
    return np.concatenate(list(cross.values())) if cross else np.empty(0)


def _cross(va: dict[str, pd.Series], vb: dict[str, pd.Series]) -> dict[str, np.ndarray]:
    """Per common category, every ``a - b`` over a's values x b's values (seeds not matched)."""
    common = sorted(set(va) & set(vb))
    return {c: np.subtract.outer(va[c].to_numpy(), vb[c].to_numpy()).ravel() for c in common}


def probability_of_improvement(
    va: dict[str, pd.Series],
    vb: dict[str, pd.Series],
    tie: float = TIE,
    confidence: float = 0.95,
    n_boot: int = N_BOOT_IMPROVE,
) -> tuple[float, float, float]:
    """P(a > b): the chance that a run of a beats a run of b on the same category, averaged over categories
    (rliable's unpaired form, Agarwal et al. 2021), a tie (``|a - b| <= tie``) counting one half; with a
    percentile interval from a bootstrap of each method's runs within each category (seeded, so a report
    rebuilds the same). NaNs without a common category; NaN bounds where the resamples do not vary (one
    run a side, or every run of a beating every run of b), where a zero-width interval would claim
    certainty that a few runs cannot give.

    Unpaired, as rliable's: it asks how often one training of a beats one of b, over all ``n_a x n_b``
    comparisons of a category, not only the seed-matched ones.
    """
    common = sorted(set(va) & set(vb))
    if not common:
        return (float("nan"),) * 3
    rng = np.random.default_rng(0)
    point, boot = [], []
    for c in common:
        x, y = va[c].to_numpy(), vb[c].to_numpy()
        point.append(_beats(x[None, :], y[None, :], tie)[0])
        xs = x[rng.integers(0, len(x), (n_boot, len(x)))]
        ys = y[rng.integers(0, len(y), (n_boot, len(y)))]
        boot.append(_beats(xs, ys, tie))
    alpha = 1 - confidence
    low, high = np.quantile(np.mean(boot, axis=0), [alpha / 2, 1 - alpha / 2])
    if high - low < 1e-12:
        return float(np.mean(point)), float("nan"), float("nan")
    return float(np.mean(point)), float(low), float(high)


def _beats(x: np.ndarray, y: np.ndarray, tie: float) -> np.ndarray:
    """Per row of ``x`` (R, n) and ``y`` (R, m): the share of the n x m pairs where x wins, ties half."""
    d = x[:, :, None] - y[:, None, :]
    return ((d > tie) + 0.5 * (np.abs(d) <= tie)).mean(axis=(1, 2))


def like_these(parts: Parts, confidence: float = 0.95) -> tuple[float, float]:
    """The interval on categories like these: categories as the unit, a t interval over the category mean
    differences with ``C - 1`` degrees of freedom (docs/method.md says why this one); NaNs with fewer than
    :data:`MIN_CATEGORIES` categories, or when every category's mean is the same."""
    m = parts.category_means
    if len(m) < MIN_CATEGORIES or not np.all(np.isfinite(m)) or np.std(m) <= ROUND_OFF:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(m) - 1) * m.std(ddof=1) / np.sqrt(len(m))
    return float(m.mean() - half), float(m.mean() + half)


def answer(low: float, high: float, margin: float) -> str:
    """The row's answer from its interval: ``a better`` or ``b better`` (the interval excludes 0),
    ``practically equivalent`` (it lies within ``±margin``), ``inconclusive`` (neither), or ``not
    answered`` (no interval)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return NOT_ANSWERED
    if low > 0:
        return A_BETTER
    if high < 0:
        return B_BETTER
    if -margin <= low and high <= margin:
        return EQUIVALENT
    return INCONCLUSIVE


def answer_words(said: str, a: str, b: str) -> str:
    """An answer with the better method named: ``cutswap better``; the others as they are."""
    return {A_BETTER: f"{a} better", B_BETTER: f"{b} better"}.get(said, said)


def _span(mean: float, low: float, high: float, sign: int = 1) -> str:
    """``5.0 [4.0, 6.0]`` in points, signed by ``sign`` (-1 reads a b-better difference as positive)."""
    if sign < 0:
        mean, low, high = -mean, -high, -low
    return f"{mean * 100:.1f} [{low * 100:.1f}, {high * 100:.1f}]"


def why_not_answered(iv: Interval, n_pairs: int, unpaired: bool = False) -> str:
    """Why a row has no interval, in words (for the verdict)."""
    if n_pairs == 0 or not np.isfinite(iv.mean):
        return "no pairs to compare"
    if not np.isfinite(iv.se):
        if unpaired:
            return "a method has no category with two seeds, so its seeds' noise cannot be measured"
        return "no category has two seeds, so the seeds' noise cannot be measured"
    same = (
        "every run of each method gives the same value"
        if unpaired
        else "every seed gives the same difference"
    )
    return (
        f"{same} in each category and the test set's noise was not measured, so any interval would be "
        "made up; rerun with more seeds or with the test-set redraws"
    )


def _categories_words(n: int) -> str:
    return "this 1 category" if n == 1 else f"these {n} categories"


def verdict(
    a: str,
    b: str,
    iv: Interval,
    n_pairs: int,
    categories: int,
    margin: float = MARGIN,
    flag: str = "",
    unpaired: bool = False,
) -> str:
    """The row's conclusion on these categories, in words, differences in percentage points: the better
    method, by how much and its interval (as positive numbers); practically equivalent; or inconclusive
    with the difference this design would have detected (an estimate). A flag says why its coverage is not
    promised; a row without an interval says why."""
    said = answer(iv.low, iv.high, margin)
    if said == NOT_ANSWERED:
        return f"{NOT_ANSWERED}: {why_not_answered(iv, n_pairs, unpaired)}"
    scope = f"on {_categories_words(categories)}"
    width = f"±{margin * 100:.1f}"
    if said in (A_BETTER, B_BETTER):
        winner, sign = (a, 1) if said == A_BETTER else (b, -1)
        text = f"{winner} better by {_span(iv.mean, iv.low, iv.high, sign)} {scope}"
        if max(abs(iv.low), abs(iv.high)) <= margin:
            text += f", less than the {width}-point margin"
    elif said == EQUIVALENT:
        text = f"practically equivalent {scope}: {_span(iv.mean, iv.low, iv.high)} lies within {width}"
    else:
        detect = f"would detect ±{iv.detectable * 100:.1f}, an estimate"
        text = f"inconclusive {scope}: {_span(iv.mean, iv.low, iv.high)} ({detect})"
    return text + (f" (coverage not promised: {flag})" if flag else "")


def _scope_words(a: str, b: str, row: dict[str, object], margin: float) -> str:
    """What the row says beyond these categories: on categories like these, or that it cannot."""
    categories = int(row["categories"])  # type: ignore[arg-type]
    if categories < MIN_CATEGORIES:
        return f"does not generalise beyond {_categories_words(categories)} (fewer than {MIN_CATEGORIES})"
    low, high = float(row["like_these_low"]), float(row["like_these_high"])  # type: ignore[arg-type]
    counts = f"{row['categories_a']} of {categories} favour {a}, {row['categories_b']} favour {b}"
    if not np.isfinite(low):
        return f"on categories like these: no interval; {counts}"
    said = answer(low, high, margin)
    words = answer_words(said, a, b)
    return f"on categories like these {words}: {_span(float(row['mean_diff']), low, high)}; {counts}"  # type: ignore[arg-type]


def _check_settings(confidence: float, power: float, tie: float, margin: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    if not tie >= 0:
        raise ValueError(f"tie must be >= 0, got {tie!r}")
    if not margin > 0:
        raise ValueError(f"margin must be > 0 (a fraction: 0.01 is 1 point), got {margin!r}")


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error); NaN stays NaN and does not count."""
    p = np.asarray(p, float)
    out = np.full(len(p), np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def compare(
    results: pd.DataFrame,
    pairs: Sequence[tuple[str, str]] | None = None,
    metrics: Sequence[str] | None = None,
    redraws: pd.DataFrame | None = None,
    confidence: float = 0.95,
    power: float = POWER,
    tie: float = TIE,
    asked: dict[tuple[str, str], tuple[str, str]] | None = None,
    margin: float = MARGIN,
    confirmatory: Sequence[tuple[str, str, str]] = (),
) -> pd.DataFrame:
    """Every comparison x metric: the difference a - b, its interval on these categories and on categories
    like these, the answer, the p-values, P(a > b) and the verdict.

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
        margin: the margin of practical equivalence, a fraction (0.01: 1 point).
        confirmatory: the (a, b, metric) rows the run set out to answer; every other row is exploratory.

    Returns:
        One row per pair x metric with exactly :data:`COLUMNS`, differences as fractions.

    Raises:
        ValueError: bad results (missing columns, duplicates), an unknown metric or method, redraws
            missing an evaluation, or out-of-range ``confidence``, ``power``, ``tie`` or ``margin``.
    """
    _check_settings(confidence, power, tie, margin)
    metrics = _metrics(results, metrics)
    if pairs is None:
        pairs = comparison_pairs(list(results["method"]))
    lookups = {}
    if redraws is not None:
        lookups = {m: _redraw_lookup(redraws, m) for m in metrics if m in redraws.columns}
    confirmed = {tuple(c) for c in confirmatory}
    rows = []
    for a, b in pairs:
        asked_as = (asked or {}).get((a, b), ("main", question(a, b)))
        for metric in metrics:
            role = CONFIRMATORY if (a, b, metric) in confirmed else EXPLORATORY
            row = _answer(results, a, b, metric, lookups.get(metric), confidence, power, tie, margin)
            if row is not None:  # None: nothing to compare (e.g. a method without pixel maps), no row
                rows.append({"block": asked_as[0], "question": asked_as[1], "role": role, **row})
    table = _adjusted(pd.DataFrame(rows, columns=[*COLUMNS, "_beyond"]), confidence)
    table["verdict"] = table["verdict"] + "; " + table["_beyond"]
    return table.drop(columns="_beyond")


def _answer(
    results: pd.DataFrame,
    a: str,
    b: str,
    metric: str,
    lookup: dict[tuple[str, str, int], np.ndarray] | None,
    confidence: float,
    power: float,
    tie: float,
    margin: float,
) -> dict[str, object] | None:
    """One row of :func:`compare` before its p-values are adjusted; None when a and b share no category."""
    va, vb = _by_category(results, a, metric), _by_category(results, b, metric)
    compared = _compared(results, a, b, metric, va, vb)
    if compared is None:
        return None
    columns, d, pairing, build = compared
    n_pairs, unpaired = len(d), pairing.startswith("unpaired")
    test_variance, n_redraws = _test_variances(columns, lookup, a, b) if lookup else (None, 0)
    parts = build(test_variance, n_redraws)
    iv = skew_interval(parts, confidence, power)
    concern = flag(parts)
    like_low, like_high = like_these(parts, confidence)
    p_improve = probability_of_improvement(va, vb, tie, confidence)
    row = {
        "a": a, "b": b, "metric": metric, "pairing": pairing, "n_pairs": n_pairs,
        "mean_diff": iv.mean, "ci_low": iv.low, "ci_high": iv.high, "se": iv.se, "df": iv.df,
        "detectable": iv.detectable, "test_noise": test_variance is not None, "flag": concern,
        "p_value": iv.p, "answer": answer(iv.low, iv.high, margin),
        "categories": len(parts.names),
        "categories_a": int((parts.category_means > tie).sum()),
        "categories_b": int((parts.category_means < -tie).sum()),
        "like_these_low": like_low, "like_these_high": like_high,
        "like_these_answer": answer(like_low, like_high, margin) if len(parts.names) >= MIN_CATEGORIES
        else "n/a",
        "p_improve": p_improve[0], "p_improve_low": p_improve[1], "p_improve_high": p_improve[2],
        "wins": int((d > tie).sum()), "ties": int((np.abs(d) <= tie).sum()), "losses": int((d < -tie).sum()),
        "verdict": verdict(a, b, iv, n_pairs, len(parts.names), margin, concern, unpaired),
    }  # fmt: skip
    row["_beyond"] = _scope_words(a, b, row, margin)  # after the multiplicity clause, in compare
    return row


def _compared(
    results: pd.DataFrame, a: str, b: str, metric: str, va: dict[str, pd.Series], vb: dict[str, pd.Series]
) -> tuple[dict[str, list[tuple[int, int]]], np.ndarray, str, Callable[..., Parts]] | None:
    """What a row compares: per category the (seed of a, seed of b) of each difference, the differences,
    the pairing in words, and how to build its :class:`Parts` from the test-set variances; None when a and
    b share no category."""
    reason = unpaired_reason(a, b, va, vb)
    if reason is not None:
        cross = _cross(va, vb)
        if not cross:
            return None
        columns = {c: [(int(s), int(t)) for s in va[c].index for t in vb[c].index] for c in cross}
        values = ({c: va[c].to_numpy() for c in cross}, {c: vb[c].to_numpy() for c in cross})
        return columns, np.concatenate(list(cross.values())), reason, partial(Parts.unpaired, *values)
    diffs = paired_differences(results, a, b, metric)
    if diffs.empty:
        return None
    diffs = diffs.assign(category=diffs["category"].astype(str))
    columns = {c: [(int(s), int(s)) for s in g] for c, g in diffs.groupby("category", sort=True)["seed"]}
    untrained = b in UNTRAINED_METHODS and a not in UNTRAINED_METHODS
    pairing = f"{b}'s one evaluation per category against every seed" if untrained else "by seed"
    return columns, diffs["diff"].to_numpy(float), pairing, partial(Parts.paired, diffs)


def _adjusted(table: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Holm-adjusted p-values per family (the confirmatory rows; each block's exploratory rows), and the
    verdict of a difference that does not survive its family's adjustment says so."""
    table["p_adjusted"] = np.nan
    alpha = 1 - confidence
    family_of = table["role"].where(table["role"] == CONFIRMATORY, table["role"] + "/" + table["block"])
    for _, family in table.groupby(family_of, sort=False):
        adjusted = holm(family["p_value"].to_numpy(float))
        table.loc[family.index, "p_adjusted"] = adjusted
        size = int(np.isfinite(family["p_value"].to_numpy(float)).sum())
        for i, p_adj in zip(family.index, adjusted, strict=True):
            decided = table.at[i, "answer"] in (A_BETTER, B_BETTER)
            if decided and np.isfinite(p_adj) and p_adj >= alpha:
                role = table.at[i, "role"]
                table.at[i, "verdict"] += (
                    f"; not significant after Holm's adjustment over the {size} {role} rows "
                    f"(adjusted p = {p_adj:.2g})"
                )
    return table


def multiplicity_note(
    comparisons: pd.DataFrame,
    confidence: float = 0.95,
    confirmatory: Sequence[Sequence[str]] = (),
) -> str:
    """How many "better" answers chance alone would give among the exploratory rows, and how many the run
    gives before and after Holm's adjustment; which ``confirmatory`` questions (a, b, metric) the run
    could not ask. "" for a table of an earlier report version."""
    if "role" not in comparisons.columns or comparisons.empty:
        return ""
    alpha = 1 - confidence
    sentences = []
    confirmed = comparisons[comparisons["role"] == CONFIRMATORY]
    if len(confirmed):
        sentences.append(
            f"{len(confirmed)} confirmatory question{'' if len(confirmed) == 1 else 's'}, named by the run's "
            "settings (`report.confirmatory`), Holm-adjusted among themselves."
        )
    asked = set(zip(confirmed["a"], confirmed["b"], confirmed["metric"], strict=True))
    missing = [f"{a} − {b} on {m}" for a, b, m in map(tuple, confirmatory) if (a, b, m) not in asked]
    if missing:
        sentences.append(
            f"Not asked, so not answered: the confirmatory question{'s' if len(missing) > 1 else ''} "
            f"{'; '.join(missing)} (the run lacks a row or the metric, or the pair is not one of its "
            "questions)."
        )
    for block, rows in split_blocks(comparisons[comparisons["role"] == EXPLORATORY]).items():
        tested = rows[np.isfinite(rows["p_value"].astype(float))]
        if tested.empty:
            continue
        decided = tested["answer"].isin((A_BETTER, B_BETTER))
        survive = decided & (tested["p_adjusted"].astype(float) < alpha)
        sentences.append(
            f"{len(tested)} exploratory rows ({BLOCKS[block].lower()}): if no method differed from another, "
            f'chance alone would give about {alpha * len(tested):.1f} "better" answers ({alpha:.0%} each); '
            f"this run gives {int(decided.sum())}, of which {int(survive.sum())} survive Holm's adjustment "
            "over these rows."
        )
    return " ".join(sentences)


def _metrics(results: pd.DataFrame, metrics: Sequence[str] | str | None) -> list[str]:
    """The metrics to compare, checked: those given, else those of :data:`METRICS` with a finite value."""
    _check_columns(results)
    if metrics is None:
        metrics = [m for m in METRICS if m in results.columns and results[m].notna().any()]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    for metric in metrics:
        _check(results, metric)
    return metrics


def points(value: float, signed: bool = True) -> str:
    """A fraction as percentage points with one decimal (``0.0123 -> '+1.2'``); 'n/a' for NaN."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


#: Columns a comparisons table needs to be shown.
_SHOWN = ("a", "b", "metric", "n_pairs", "mean_diff", "ci_low", "ci_high", "verdict")


def role_words(role: object, p_adjusted: float) -> str:
    """A row's role with its Holm-adjusted p-value (within its family): ``exploratory, adjusted p 0.45``;
    "" for a table of a report version before issue 31 (no role)."""
    if not isinstance(role, str):
        return ""
    return f"{role}, adjusted p {p_adjusted:.2g}" if np.isfinite(p_adjusted) else role


def _improvement(r: tuple) -> str:
    """P(a > b) with its interval, or "(no interval)" where the resamples did not vary."""
    p = getattr(r, "p_improve", float("nan"))
    if not np.isfinite(p):
        return "n/a"
    if not np.isfinite(r.p_improve_low):
        return f"{p:.2f} (no interval)"
    return f"{p:.2f} [{r.p_improve_low:.2f}, {r.p_improve_high:.2f}]"


def display_table(comparisons: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The comparison table for people: indexed by the question, differences in points, the verdict."""
    missing = [c for c in _SHOWN if c not in comparisons.columns]
    if missing:
        raise ValueError(f"comparisons lack the columns {missing}")
    level = f"{confidence * 100:g}% interval"
    rows = [
        {
            "question": getattr(r, "question", None) or question(r.a, r.b),
            "a − b": f"{r.a} − {r.b}",
            "metric": r.metric,
            "role": role_words(getattr(r, "role", None), getattr(r, "p_adjusted", float("nan"))) or "n/a",
            "pairs": int(r.n_pairs),
            "mean diff": points(r.mean_diff),
            level: f"[{points(r.ci_low)}, {points(r.ci_high)}]" if np.isfinite(r.ci_low) else "n/a",
            "P(a > b)": _improvement(r),
            "verdict": r.verdict,
        }
        for r in comparisons.itertuples(index=False)
    ]
    columns = ["question", "a − b", "metric", "role", "pairs", "mean diff", level, "P(a > b)", "verdict"]
    return pd.DataFrame(rows, columns=columns).set_index("question")


def interval_note(
    confidence: float = 0.95,
    tie: float = TIE,
    power: float = POWER,
    redraws: int = 0,
    n_boot: int | None = None,
    seed: int | None = None,
    margin: float | None = None,
) -> str:
    """Sentences saying how the intervals, answers and P(a > b) were computed, for under the table.

    ``n_boot`` and ``seed`` describe reports of earlier versions (a percentile bootstrap over seeds), and
    no ``margin`` those before issue 31 (a symmetric t interval, verdicts without a scope).
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
    if margin is None:
        return (
            f"Differences a − b in percentage points over (category, seed) pairs; mean = mean over "
            f"categories. {confidence * 100:g}% t interval (Welch-Satterthwaite degrees of freedom) whose "
            f"variance holds the seed-to-seed spread within each category and {test}; categories are fixed "
            f"(an earlier report version). Detectable: the difference this design finds with "
            f"{power * 100:g}% power. {ties}"
        )
    return (
        f"Differences a − b in percentage points; mean = mean over categories of each category's mean over "
        f"seeds. **On these categories**: a {confidence * 100:g}% t interval whose variance holds the "
        f"seed-to-seed spread within each category and {test}, corrected for the seeds' skewness where "
        f"every category has {MIN_SEEDS} seeds or more (Hall's transformation: longer on the side where "
        "trainings now and then collapse; below, the symmetric t interval); the categories are fixed, so "
        f"the answer is about them. **On categories like these** (at least {MIN_CATEGORIES} categories): a t "
        "interval over the category means, categories as the unit, with how many favour each side (not "
        "adjusted for the number of rows). Answers: better (the interval excludes 0), practically "
        "equivalent (it lies within "
        f"±{margin * 100:g} points, the run's margin, `report.equivalence_margin`), inconclusive (neither; "
        f"the difference it would detect with {power * 100:g}% power is an estimate from the same noisy "
        f"variance). A row is flagged, its coverage not promised, with fewer than {MIN_SEEDS} seeds per "
        f"category or when one category holds more than {MAX_SHARE:.0%} of the variance (no interval then "
        "holds 95 % when seeds misbehave: docs/method.md#coverage). Not in any interval: the luck of the one "
        "training set every seed and method shares. P(a > b): the chance a run of a beats a run of b on the "
        "same category, averaged over categories, ties half, with a bootstrap interval of the runs. "
        f"Per-seed numbers are not reproducible across machines; the intervals are what carries over. {ties}"
    )


def comparisons_markdown(
    comparisons: pd.DataFrame,
    confidence: float = 0.95,
    tie: float = TIE,
    power: float = POWER,
    redraws: int = 0,
    n_boot: int | None = None,
    seed: int | None = None,
    margin: float | None = None,
    confirmatory: Sequence[Sequence[str]] = (),
) -> str:
    """The comparison table as GitHub Markdown (one row per question x metric) with the interval and
    multiplicity notes; the ablation block, where there is one, as a table of its own after the notes,
    under ``### Ablations``."""
    blocks = split_blocks(comparisons)
    lines = _markdown_rows(display_table(blocks["main"], confidence)) + [""] if "main" in blocks else []
    lines.append(interval_note(confidence, tie, power, redraws, n_boot, seed, margin))
    multiplicity = multiplicity_note(comparisons, confidence, confirmatory)
    if multiplicity:
        lines += ["", multiplicity]
    if "ablation" in blocks:
        lines += ["", f"### {BLOCKS['ablation']}", "", ABLATION_NOTE, ""]
        lines += _markdown_rows(display_table(blocks["ablation"], confidence))
    return "\n".join(lines)


#: What the ablation block answers, under its title.
ABLATION_NOTE = (
    "Each variant of a method (the same method with one choice of the paper changed) against that method, "
    "a − b with a the method as the run's settings make it; where the variant changes where swaps come "
    "from, also against a control: random-swap under the variant's own settings (its patch sizes). The "
    "same paired intervals as above."
)


def headline(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The run's answers in one row per question of the main block: its row on :data:`MAIN_METRIC`, or on
    the first metric the question has (a run without image-level scores)."""
    main = split_blocks(comparisons).get("main")
    if main is None or main.empty:
        return comparisons.iloc[0:0]
    ranked = main.assign(_main=main["metric"] != MAIN_METRIC)  # False first: the main metric
    first = ranked.sort_values("_main", kind="stable").drop_duplicates(["a", "b"])
    return first.drop(columns="_main").loc[sorted(first.index)]


def split_blocks(comparisons: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The comparisons by block (``BLOCKS`` order); a table without a block column is all ``main``."""
    if "block" not in comparisons.columns:
        return {"main": comparisons}
    return {b: comparisons[comparisons["block"] == b] for b in BLOCKS if (comparisons["block"] == b).any()}


def _markdown_rows(table: pd.DataFrame) -> list[str]:
    table = table.reset_index()
    lines = [
        "| " + " | ".join(table.columns) + " |",
        "|" + "|".join(["---"] * 4 + ["---:"] * 4 + ["---"]) + "|",
    ]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
