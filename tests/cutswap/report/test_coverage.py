"""Does the comparison's 95 % interval cover the true difference 95 % of the time? Checked by simulation.

The model: per (category, seed) the difference a - b is ``delta_c + T_c + e_cs``: ``delta_c`` the true
difference, ``T_c`` the luck of the category's one test set (shared by every seed, variance ``tau_c^2``),
``e_cs`` the seed's training noise (variance ``sigma_c^2``). The interval is given the differences and a
test-noise variance estimated, as the report does, from ``N_REDRAWS`` redraws (a scaled chi-square).

The sizes are the demo's: ``SIGMA`` the seed-to-seed standard deviations of cutswap - cutpaste image AUROC
measured per category in the demo record (brick, grass, gravel), ``TAU`` the test-set standard deviation
of a paired difference measured from the redraws of the demo's 200 test images. The 5 x 15 design (a
MVTec AD-sized benchmark) cycles them. The old interval (a percentile bootstrap of seeds within
categories) is measured beside it and printed (``pytest -s``); it is not asserted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cutswap.report.compare import compare
from cutswap.report.intervals import skew_t
from cutswap.score.resample import N_REDRAWS, image_metric_redraws, redraws

SIGMA = np.array([0.140, 0.042, 0.056])
TAU = np.array([0.025, 0.025, 0.025])
REPLICATIONS = 1000


def _old_percentile_bootstrap(
    d: np.ndarray, rng: np.random.Generator, n_boot: int = 2000
) -> tuple[float, float]:
    """The interval the report used before: seeds redrawn within each category, percentiles of the mean."""
    k, n = d.shape
    picks = rng.integers(0, n, size=(n_boot, k, n))
    boot = np.take_along_axis(np.broadcast_to(d, (n_boot, k, n)), picks, axis=2).mean(axis=(1, 2))
    low, high = np.quantile(boot, [0.025, 0.975])
    return float(low), float(high)


def _coverage(categories: int, seeds: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    sigma, tau = np.resize(SIGMA, categories), np.resize(TAU, categories)
    delta = rng.normal(0.0, 0.03, categories)  # the true differences, fixed for the design
    truth = delta.mean()
    names = [f"c{i}" for i in range(categories)]
    frame = pd.DataFrame({"category": np.repeat(names, seeds), "seed": np.tile(range(seeds), categories)})
    new = old = 0
    for _ in range(REPLICATIONS):
        d = (
            delta[:, None]
            + rng.normal(0, tau)[:, None]
            + rng.normal(0, 1, (categories, seeds)) * sigma[:, None]
        )
        tau2 = tau**2 * rng.chisquare(N_REDRAWS - 1, categories) / (N_REDRAWS - 1)
        iv = skew_t(frame.assign(diff=d.ravel()), dict(zip(names, tau2, strict=True)), N_REDRAWS)
        new += iv.low <= truth <= iv.high
        low, high = _old_percentile_bootstrap(d, rng)
        old += low <= truth <= high
    return new / REPLICATIONS, old / REPLICATIONS


@pytest.mark.parametrize(("categories", "seeds"), [(3, 3), (15, 5)])
def test_the_95_interval_covers_95_percent_at_few_and_many_seeds(categories, seeds):
    new, old = _coverage(categories, seeds, seed=categories * 100 + seeds)
    print(
        f"\n{seeds} seeds x {categories} categories: t interval {new:.1%}, old percentile bootstrap {old:.1%}"
    )
    assert 0.93 <= new <= 0.97


def _binormal_run(rng: np.random.Generator, mu: np.ndarray, seeds: int, n: int) -> tuple[pd.DataFrame, ...]:
    """Per-image scores of two methods over seeds, the image effects shared (the same test images): the
    results table and the redraws table, as the report stage builds them."""
    results, again = [], []
    for c, mu_c in enumerate(mu):
        y = np.r_[np.zeros(n), np.ones(n)].astype(int)
        shared = rng.normal(size=2 * n)
        counts = redraws(y, 200, seed=c)
        for method, lift in (("a", 0.3), ("b", 0.0)):
            own = rng.normal(size=2 * n)
            for s in range(seeds):
                v = rng.normal(0, 0.3)  # the seed's training luck: a shift of the anomalous scores
                x = y * (mu_c + lift + v) + 0.7 * shared + 0.5 * own + 0.5 * rng.normal(size=2 * n)
                key = {"category": f"c{c}", "method": method, "seed": s}
                u = stats.mannwhitneyu(x[y == 1], x[y == 0]).statistic  # an independent AUROC
                results.append({**key, "image_AUROC": u / n**2})
                values = image_metric_redraws(x, y, counts)["image_AUROC"]
                again.append(pd.DataFrame({**key, "redraw": range(len(values)), "image_AUROC": values}))
    return pd.DataFrame(results), pd.concat(again, ignore_index=True)


@pytest.mark.slow
def test_end_to_end_coverage_from_per_image_scores():
    """The report's whole path, per-image scores to interval, on a binormal model whose AUROC is known.

    With seed shift ``v ~ N(0, 0.3^2)`` and per-image variance 0.99, ``AUROC = Phi((mu + lift) / sqrt(2 *
    0.99 + 0.09))`` averaged over seeds; 200 replications of 3 categories x 3 seeds, 100 + 100 images.
    """
    rng = np.random.default_rng(7)
    mu = np.array([0.6, 1.0, 1.4])
    scale = np.sqrt(2 * 0.99 + 0.3**2)
    truth = np.mean(stats.norm.cdf((mu + 0.3) / scale) - stats.norm.cdf(mu / scale))
    covered, replications = 0, 200
    for _ in range(replications):
        results, again = _binormal_run(rng, mu, 3, 100)
        row = compare(results, [("a", "b")], ["image_AUROC"], redraws=again).iloc[0]
        covered += row["ci_low"] <= truth <= row["ci_high"]
    print(f"\nend to end, 3 seeds x 3 categories, 200 replications: {covered / replications:.1%}")
    assert 0.90 <= covered / replications <= 0.99  # 95 % +- 3 standard errors of 200 replications
