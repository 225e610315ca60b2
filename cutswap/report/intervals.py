"""The paired comparison's interval: the report's (Hall's skewness-corrected t), the flag where no interval
can promise coverage, and the candidates it was chosen among.

Input: per-seed differences a - b of one question and metric (``category, seed, diff``, from
``cutswap.report.compare.paired_differences``), or, for two trained methods whose seeds do not match, each
method's values per category (:meth:`Parts.unpaired`); and per category the test-set variance every seed
shares (``cutswap.report.compare``'s module docstring)::

    category  seed  diff          test_variance = {"brick": 0.0006, ...}, n_redraws = 500
    brick     0     +0.021
    brick     1     -0.004

Every interval has the same estimate (the mean over categories of each category's mean difference) and the
same variance (``sum_c (v_c + tau_c^2) / C^2``, ``v_c`` the seed variance of the category's mean:
``s_c^2 / n_c`` paired, ``s_a^2 / n_a + s_b^2 / n_b`` unpaired; Satterthwaite's degrees of freedom); they
differ in the quantiles they take:

* ``skew-t`` (**the report's**, :func:`skew_t`): Hall's (1992) skewness-removing transformation of the
  studentized mean, ``g(t) = t + k t^2 / 3 + k^2 t^3 / 27 + k / 6``, monotone, with ``k`` the estimate's
  skewness, ``sum_c k3(mean_c) / C^3 / se^3`` (``k3`` the unbiased third k-statistic of a category's seeds
  over ``n_c^2``; the test-set term is normal and adds none). The interval is ``mean - se * g^-1(t_df
  quantiles)``: asymmetric, longer on the side of the seeds' long tail, which is where a t interval misses
  when trainings now and then collapse. Below :data:`MIN_SEEDS` seeds in a category ``k`` is 0: the
  symmetric interval (:func:`skew_interval` says why). Its p-value inverts the same interval:
  ``2 min(F(g(T)), 1 - F(g(T)))`` with ``T = mean / se``, so ``p < 0.05`` exactly when the interval
  excludes 0.
* ``satterthwaite``: the report's interval before issue 31, ``mean -+ t_df * se``.
* ``skew-t-pooled``: ``skew-t`` with every category's third cumulant ``g1 * s_c^3``, ``g1`` the mean over
  categories of ``k3_c / s_c^3`` (one noise shape shared by the categories).
* ``bootstrap-t``: a studentized bootstrap stratified by category (seeds redrawn within each category, the
  test-set term drawn from its normal law), the quantiles of ``(mean* - mean) / se*``; seeded.
* ``bootstrap-t-pooled``: the same, residuals drawn from all categories' standardized residuals.
* ``signflip``: a sign-flip (Rademacher wild) bootstrap of the studentized mean: each seed's residual from
  its category mean keeps or flips its sign; symmetric, so it corrects the tails' weight, not skewness.

Equal seeds per category make a pooled variance and the Satterthwaite one the same number, so a variance
shrunk towards the pooled one only changes the degrees of freedom, upwards: narrower, never more coverage.

Measured by ``python -m cutswap.report.coverage --json --interval NAME`` (2,000 replications; a coverage's
Monte-Carlo standard error is about 0.5 points; ``docs/method.md#coverage`` has the table): at 5 seeds x 15
categories every candidate covers 93.8-95.7 % in the normal, collapse, heavy-tail and MNIST scenarios at
about the same width; in ``skewed`` (one category's variance 10x, left-skewed noise) satterthwaite gives
93.0 % and skew-t 94.1 % (93.8 % at 4,000 replications), the only candidate above 93.5 % in every
scenario. Where one category's standard
deviation is 10x (``--skew-reading sd``: it holds 95 % of the variance, and the interval rests on that
category's 5 draws) no candidate reaches 93 % (skew-t 90.3 %; even Hall's transformation with the true
skewness needs 1.8x the width): :func:`flag` marks those rows.

:func:`flag` names why a row's coverage cannot be promised: fewer than :data:`MIN_SEEDS` seeds in a category
(a rule on the design, so it cannot pick the lucky rows; every 3 x 3 row), or one category holding more than
:data:`MAX_SHARE` of the estimate's variance (the row is then one category's few draws).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

#: The power at which ``detectable`` is stated.
POWER = 0.8
#: Resamples of the bootstrap candidates.
N_BOOT = 999
#: A row is flagged when a category has fewer seeds than this (a rule on the design, not the data) ...
MIN_SEEDS = 5
#: ... or when one category holds more than this share of the estimate's variance.
MAX_SHARE = 0.5
#: A standard error below this (a fraction: 1e-9 points) is round-off of equal differences, not noise.
ROUND_OFF = 1e-11
#: The ``df`` rule, measured beside them by the coverage command: Satterthwaite's df below this.
MIN_DF = 4.0


@dataclass(frozen=True)
class Interval:
    """A mean difference with its interval, standard error, degrees of freedom, detectable difference and
    two-sided p-value (NaN where the interval does not define one)."""

    mean: float
    low: float
    high: float
    se: float
    df: float
    detectable: float
    p: float = float("nan")


def _k3(x: np.ndarray) -> float:
    """The unbiased third k-statistic (third cumulant) of a sample; 0 below three values."""
    n = len(x)
    if n < 3:
        return 0.0
    return float(n / ((n - 1) * (n - 2)) * np.sum((x - x.mean()) ** 3))


def _seed_variances(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per group, its seeds' variance and its degrees of freedom; a group of one seed borrows the mean
    variance of the others, with their pooled degrees of freedom. None when no group has two seeds."""
    n = np.array([len(g) for g in groups], float)
    measured = n > 1
    if not measured.any():
        return None
    s2 = np.array([g.var(ddof=1) if len(g) > 1 else 0.0 for g in groups])
    s2 = np.where(measured, s2, s2[measured].mean())
    return s2, np.where(measured, n - 1, (n[measured] - 1).sum())


class Parts:
    """One row's per-category pieces: mean differences, the seed variance of each category's mean, its
    degrees of freedom and third cumulant, the test-set terms; the estimate, se and df.

    ``usable`` is False when the seed variance cannot be measured (no category with two seeds, on a side
    that needs it); the variance pieces are then absent. Build with :meth:`paired` or :meth:`unpaired`.
    """

    names: list[str]
    category_means: np.ndarray
    n: np.ndarray  #: seeds per category (unpaired: the fewer of the two methods')
    usable: bool
    mean: float
    seeds: list[np.ndarray]  #: paired only: each category's per-seed differences (the bootstrap candidates)
    s2: np.ndarray  #: paired only: each category's seed variance
    seed_terms: np.ndarray
    test_terms: np.ndarray
    k3_terms: np.ndarray
    se: float
    df: float

    def __init__(self, names: list[str], category_means: np.ndarray, n: np.ndarray) -> None:
        self.names, self.category_means, self.n = names, category_means, n
        self.mean = float(category_means.mean()) if len(names) else float("nan")
        self.usable = False

    @classmethod
    def paired(
        cls, diffs: pd.DataFrame, test_variance: Mapping[str, float] | None = None, n_redraws: int = 0
    ) -> Parts:
        """From per-seed differences ``category, seed, diff``: the category mean's seed variance ``s_c^2 /
        n_c`` and third cumulant ``k3_c / n_c^2``."""
        groups = {str(c): g.to_numpy(float) for c, g in diffs.groupby("category", sort=True)["diff"]}
        seeds = list(groups.values())
        n = np.array([len(g) for g in seeds], float)
        parts = cls(list(groups), np.array([g.mean() for g in seeds]), n)
        parts.seeds = seeds
        variances = _seed_variances(seeds)
        if variances is not None:
            parts.s2, seed_df = variances
            third = np.array([_k3(g) for g in seeds]) / n**2
            parts._finish(parts.s2 / n, seed_df, third, test_variance, n_redraws)
        return parts

    @classmethod
    def unpaired(
        cls,
        a: Mapping[str, np.ndarray],
        b: Mapping[str, np.ndarray],
        test_variance: Mapping[str, float] | None = None,
        n_redraws: int = 0,
    ) -> Parts:
        """From each method's values per category (both trained, seeds not matched): the difference of the
        category's means, its seed variance ``s_a^2 / n_a + s_b^2 / n_b`` with Welch's degrees of freedom,
        and third cumulant ``k3_a / n_a^2 - k3_b / n_b^2``."""
        names = sorted(set(a) & set(b))
        va, vb = [np.asarray(a[c], float) for c in names], [np.asarray(b[c], float) for c in names]
        means = np.array([x.mean() - y.mean() for x, y in zip(va, vb, strict=True)])
        na, nb = np.array([len(x) for x in va], float), np.array([len(y) for y in vb], float)
        parts = cls(names, means, np.minimum(na, nb))
        sides = _seed_variances(va), _seed_variances(vb)
        if names and None not in sides:
            (s2a, dfa), (s2b, dfb) = sides
            ta, tb = s2a / na, s2b / nb
            with np.errstate(divide="ignore", invalid="ignore"):
                welch = np.where(ta + tb > 0, (ta + tb) ** 2 / (ta**2 / dfa + tb**2 / dfb), 1.0)
            third = np.array([_k3(x) for x in va]) / na**2 - np.array([_k3(y) for y in vb]) / nb**2
            parts._finish(ta + tb, welch, third, test_variance, n_redraws)
        return parts

    def _finish(
        self,
        variances: np.ndarray,
        seed_df: np.ndarray,
        third: np.ndarray,
        test_variance: Mapping[str, float] | None,
        n_redraws: int,
    ) -> None:
        k = len(self.names)
        self.usable = True
        self.seed_terms = variances / k**2
        self.k3_terms = third / k**3
        tau2 = [0.0 if test_variance is None else test_variance[c] for c in self.names]
        self.test_terms = np.array(tau2, float) / k**2
        self.se = float(np.sqrt(self.seed_terms.sum() + self.test_terms.sum()))
        df_terms = (self.seed_terms**2 / seed_df).sum() + (self.test_terms**2).sum() / max(n_redraws - 1, 1)
        self.df = float(self.se**4 / df_terms) if df_terms > 0 else float("inf")

    @property
    def varies(self) -> bool:
        """Whether there is noise to make an interval of: seed noise measured and a standard error beyond
        round-off (differences ``0.7 - 0.6`` and ``0.8 - 0.7`` are not bit-equal)."""
        return self.usable and self.se > ROUND_OFF

    @property
    def skewness(self) -> float:
        """The estimate's skewness (Hall's ``k``); 0 where the standard error is 0."""
        return float(self.k3_terms.sum() / self.se**3) if self.varies else 0.0


def _undefined(parts: Parts) -> Interval | None:
    """The rows without an interval: no pairs; seed noise not measurable; nothing varies (no seed
    difference differs from another and no test-set noise), where any width would be made up."""
    nan = float("nan")
    if not parts.names:
        return Interval(nan, nan, nan, nan, nan, nan)
    if not parts.usable:
        return Interval(parts.mean, nan, nan, nan, nan, nan)
    if not parts.varies:
        return Interval(parts.mean, nan, nan, 0.0, parts.df, nan)
    return None


def _interval(
    parts: Parts, q_low: float, q_high: float, confidence: float, power: float, p: float
) -> Interval:
    """``[mean - se * q_high, mean - se * q_low]`` for quantiles ``q`` of ``(mean - truth) / se``.

    ``detectable``: the difference found with probability ``power`` (two-sided, at the interval's level),
    ``(t_{1-alpha/2} + t_power) * se``: an estimate, as noisy as ``se`` is."""
    detectable = (stats.t.ppf(0.5 + confidence / 2, parts.df) + stats.t.ppf(power, parts.df)) * parts.se
    low, high = parts.mean - parts.se * q_high, parts.mean - parts.se * q_low
    return Interval(parts.mean, float(low), float(high), parts.se, parts.df, float(detectable), float(p))


def _hall(t: np.ndarray | float, k: float) -> np.ndarray | float:
    """Hall's transformation ``g(t) = t + k t^2 / 3 + k^2 t^3 / 27 + k / 6`` (``g' = (1 + k t / 3)^2``)."""
    return t + k * t**2 / 3 + k**2 * t**3 / 27 + k / 6


def _hall_inverse(y: np.ndarray, k: float) -> np.ndarray:
    """``t`` with ``g(t) = y`` for Hall's ``g``."""
    if abs(k) < 1e-12:
        return y - k / 6
    return 3 / k * (np.cbrt(1 + k * (y - k / 6)) - 1)


def _two_sided(statistic: float, df: float) -> float:
    return float(2 * stats.t.sf(abs(statistic), df))


def skew_interval(
    parts: Parts, confidence: float = 0.95, power: float = POWER, k: float | None = None
) -> Interval:
    """Hall's skewness-corrected t interval of ``parts`` (skewness ``k``, default the estimated one where
    every category has :data:`MIN_SEEDS` seeds, else 0: the symmetric t interval), and the p-value that
    inverts it.

    Why not below 5 seeds: a third cumulant from 3 draws is noise; correcting with it made the 3 x 3
    intervals 1.5 times as wide for no coverage (normal, the demo's spreads: 92.8 % against 93.8 %), and
    those rows are flagged anyway."""
    undefined = _undefined(parts)
    if undefined is not None:
        return undefined
    if k is None:
        k = parts.skewness if parts.n.min() >= MIN_SEEDS else 0.0
    alpha = 1 - confidence
    q_low, q_high = _hall_inverse(stats.t.ppf([alpha / 2, 1 - alpha / 2], parts.df), k)
    p = _two_sided(float(_hall(parts.mean / parts.se, k)), parts.df)
    return _interval(parts, q_low, q_high, confidence, power, p)


def _on_paired(compute: Callable[[Parts, float, float], Interval]) -> Callable[..., Interval]:
    """An interval of per-seed differences, ``(diffs, test_variance=None, n_redraws=0, confidence=0.95,
    power=POWER)``, from ``compute(parts, confidence, power)``, which sees only rows that have one.

    ``diffs``: ``category, seed, diff`` (``cutswap.report.compare.paired_differences``); ``test_variance``:
    per category, the test-set variance shared by its seeds (None: seed noise only); ``n_redraws``: the
    redraws behind it. NaN bounds when no category has two seeds, there are no pairs, or nothing varies.
    """

    @functools.wraps(compute)
    def interval(
        diffs: pd.DataFrame,
        test_variance: Mapping[str, float] | None = None,
        n_redraws: int = 0,
        confidence: float = 0.95,
        power: float = POWER,
    ) -> Interval:
        parts = Parts.paired(diffs, test_variance, n_redraws)
        undefined = _undefined(parts)
        return undefined if undefined is not None else compute(parts, confidence, power)

    return interval


@_on_paired
def skew_t(parts: Parts, confidence: float, power: float) -> Interval:
    """The report's interval: Hall's skewness-corrected t on per-seed differences (module docstring)."""
    return skew_interval(parts, confidence, power)


@_on_paired
def satterthwaite(parts: Parts, confidence: float, power: float) -> Interval:
    """The symmetric t interval with Satterthwaite's degrees of freedom (the report's before issue 31)."""
    q = stats.t.ppf(0.5 + confidence / 2, parts.df)
    return _interval(parts, -q, q, confidence, power, _two_sided(parts.mean / parts.se, parts.df))


@_on_paired
def skew_t_pooled(parts: Parts, confidence: float, power: float) -> Interval:
    """Hall's skewness-corrected t interval, the noise's shape pooled over categories (module docstring)."""
    s = np.sqrt(parts.s2)
    shaped = [_k3(g) / si**3 for g, si in zip(parts.seeds, s, strict=True) if len(g) >= 3 and si > 0]
    g1 = float(np.mean(shaped)) if shaped else 0.0
    k = float((g1 * s**3 / parts.n**2).sum() / len(parts.names) ** 3 / parts.se**3)
    return skew_interval(parts, confidence, power, k)


def _studentized(parts: Parts, draws: list[np.ndarray], tau2: np.ndarray, rng: np.random.Generator):
    """``(mean* - mean) / se*`` of resampled seeds ``draws`` (per category, (N_BOOT, n_c)) and test noise."""
    k = len(draws)
    means = np.column_stack([d.mean(axis=1) for d in draws])  # (N_BOOT, k)
    means = means + rng.normal(size=means.shape) * np.sqrt(tau2)
    seed_var = np.column_stack([d.var(axis=1, ddof=1) / d.shape[1] for d in draws])
    se = np.sqrt((seed_var.sum(axis=1) + tau2.sum()) / k**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (means.mean(axis=1) - parts.mean) / se
    return t[np.isfinite(t)]


def _bootstrap(parts: Parts, draws: list[np.ndarray], rng, confidence: float, power: float) -> Interval:
    t = _studentized(parts, draws, parts.test_terms * len(parts.names) ** 2, rng)
    if len(t) < 10:  # nothing varies in the resamples: the t interval
        q = stats.t.ppf(0.5 + confidence / 2, parts.df)
        return _interval(parts, -q, q, confidence, power, float("nan"))
    alpha = 1 - confidence
    q_low, q_high = np.quantile(t, [alpha / 2, 1 - alpha / 2])
    return _interval(parts, q_low, q_high, confidence, power, float("nan"))


@_on_paired
def bootstrap_t(parts: Parts, confidence: float, power: float) -> Interval:
    """Studentized bootstrap, seeds redrawn within categories (module docstring); a category with one seed
    keeps it fixed in every resample (its seed variance enters ``se`` but not the resamples)."""
    rng = np.random.default_rng(0)
    draws = [g[rng.integers(0, len(g), size=(N_BOOT, len(g)))] if len(g) > 1 else np.tile(g, (N_BOOT, 2))
             for g in parts.seeds]  # fmt: skip
    return _bootstrap(parts, draws, rng, confidence, power)


@_on_paired
def bootstrap_t_pooled(parts: Parts, confidence: float, power: float) -> Interval:
    """Studentized bootstrap with one noise shape: every category's seeds are redrawn as its mean plus its
    standard deviation times residuals drawn from all categories' standardized ones (module docstring)."""
    rng = np.random.default_rng(0)
    pooled = [(g - g.mean()) / np.sqrt(s2) * np.sqrt(len(g) / (len(g) - 1))
              for g, s2 in zip(parts.seeds, parts.s2, strict=True) if len(g) > 1 and s2 > 0]  # fmt: skip
    pool = np.concatenate(pooled) if pooled else np.zeros(1)
    draws = [g.mean() + np.sqrt(s2) * pool[rng.integers(0, len(pool), size=(N_BOOT, max(len(g), 2)))]
             for g, s2 in zip(parts.seeds, parts.s2, strict=True)]  # fmt: skip
    return _bootstrap(parts, draws, rng, confidence, power)


@_on_paired
def signflip(parts: Parts, confidence: float, power: float) -> Interval:
    """Sign-flip (Rademacher wild) bootstrap of the studentized mean: residuals from the category means keep
    or flip their sign (module docstring)."""
    rng = np.random.default_rng(0)
    draws = []
    for g in parts.seeds:
        if len(g) < 2:
            draws.append(np.tile(g, (N_BOOT, 2)))
            continue
        signs = rng.choice([-1.0, 1.0], size=(N_BOOT, len(g)))
        draws.append(g.mean() + signs * (g - g.mean()) * np.sqrt(len(g) / (len(g) - 1)))
    return _bootstrap(parts, draws, rng, confidence, power)


def flag(parts: Parts) -> str:
    """Why this row's coverage cannot be promised, in words; "" when it can (module docstring)."""
    if not parts.varies:
        return ""  # no interval to promise anything of
    reasons = []
    if parts.n.min() < MIN_SEEDS:
        reasons.append(f"fewer than {MIN_SEEDS} seeds per category")
    shares = (parts.seed_terms + parts.test_terms) / parts.se**2
    if len(shares) > 1 and shares.max() > MAX_SHARE:
        reasons.append(f"{parts.names[int(shares.argmax())]} holds {shares.max():.0%} of the variance")
    return "; ".join(reasons)


def flags(
    diffs: pd.DataFrame, test_variance: Mapping[str, float] | None = None, n_redraws: int = 0
) -> dict[str, bool]:
    """Per rule, whether it fires on this row, for the coverage command: ``df`` (Satterthwaite's degrees of
    freedom below :data:`MIN_DF`), ``share``, ``seeds``, and ``seeds-or-share`` (:func:`flag`'s rule)."""
    parts = Parts.paired(diffs, test_variance, n_redraws)
    if not parts.varies:
        return {"df": True, "share": True, "seeds": True, "seeds-or-share": True}
    share = bool(((parts.seed_terms + parts.test_terms) / parts.se**2).max() > MAX_SHARE)
    seeds = bool(parts.n.min() < MIN_SEEDS)
    return {"df": parts.df < MIN_DF, "share": share, "seeds": seeds, "seeds-or-share": seeds or share}


#: The report's interval, by name in the coverage command.
REPORTED = "skew-t"
#: The intervals the coverage command can measure, by name (``--interval``).
INTERVALS: dict[str, Callable[..., Interval]] = {
    "skew-t": skew_t,
    "satterthwaite": satterthwaite,
    "skew-t-pooled": skew_t_pooled,
    "bootstrap-t": bootstrap_t,
    "bootstrap-t-pooled": bootstrap_t_pooled,
    "signflip": signflip,
}
