"""The test-set redraws: the full sample reproduces the metrics, and the spread matches DeLong's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cutswap.score.metrics import f1_max, image_auroc, pixel_metrics
from cutswap.score.resample import (
    image_metric_redraws,
    pixel_histograms,
    pixel_metric_redraws,
    redraws,
)


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(30), np.ones(20)].astype(int)
    scores = rng.normal(size=50) + labels
    scores[[3, 33, 40]] = scores[7]  # ties across and within the classes
    return scores, labels


def test_redraws_keep_the_class_counts_and_draw_with_replacement(scored):
    _, labels = scored
    counts = redraws(labels, 300, seed=1)
    assert counts.shape == (300, 50)
    assert (counts[:, labels == 0].sum(1) == 30).all() and (counts[:, labels == 1].sum(1) == 20).all()
    assert (counts > 1).any() and (counts == 0).any()
    np.testing.assert_array_equal(counts, redraws(labels, 300, seed=1))
    with pytest.raises(ValueError, match="at least 2"):
        redraws(labels, 1)


def test_the_whole_sample_gives_the_image_metrics_exactly(scored):
    scores, labels = scored
    both = image_metric_redraws(scores, labels, np.ones((1, 50), int))
    assert both["image_AUROC"][0] == pytest.approx(image_auroc(scores, labels), abs=1e-12)
    assert both["image_F1Max"][0] == pytest.approx(f1_max(scores, labels), abs=1e-12)
    # a redraw is the metric of the sample it names: the images repeated as often as counted
    counts = redraws(labels, 3, seed=2)
    picked = np.repeat(np.arange(50), counts[1])
    again = image_metric_redraws(scores, labels, counts)
    assert again["image_AUROC"][1] == pytest.approx(image_auroc(scores[picked], labels[picked]), abs=1e-12)
    assert again["image_F1Max"][1] == pytest.approx(f1_max(scores[picked], labels[picked]), abs=1e-12)


def test_the_whole_sample_gives_the_binned_pixel_metrics_exactly():
    rng = np.random.default_rng(3)
    maps = rng.random((12, 16, 16))
    masks = np.zeros_like(maps, dtype=bool)
    masks[6:, 3:7, 3:7] = True
    masks[9:, 10:12, 9:15] = True  # two regions on some images
    maps[masks] += 0.4
    histograms = pixel_histograms(maps, masks, bins=100)
    ones = pixel_metric_redraws(histograms, np.ones((1, 12), int))
    reference = pixel_metrics(maps, masks, bins=100)
    for name, value in reference.items():
        assert ones[name][0] == pytest.approx(value, abs=1e-12), name
    counts = np.zeros((1, 12), int)
    counts[0, [0, 0, 2, 6, 9, 9, 11]] = 1
    counts[0, 0], counts[0, 9] = 2, 2
    picked = np.repeat(np.arange(12), counts[0])
    # a redraw is the metric of the sample it names, on the whole set's bins: the quantised maps' exact
    # metrics, images repeated as often as counted
    width = (maps.max() - maps.min()) / 100
    quantised = np.clip(np.floor((maps - maps.min()) / width), 0, 99)
    sub = pixel_metric_redraws(histograms, counts)
    reference = pixel_metrics(quantised[picked], masks[picked])
    for name, value in reference.items():
        assert sub[name][0] == pytest.approx(value, abs=1e-12), name


def _delong_paired_variance(x: np.ndarray, z: np.ndarray, labels: np.ndarray) -> float:
    """DeLong, DeLong & Clarke-Pearson (1988): variance of AUROC(x) - AUROC(z) on the same images."""
    pos, neg = labels == 1, labels == 0

    def components(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        diff = s[pos][:, None] - s[neg][None, :]
        psi = (diff > 0) + 0.5 * (diff == 0)
        return psi.mean(1), psi.mean(0)

    (vx10, vx01), (vz10, vz01) = components(x), components(z)
    s10 = np.cov(np.vstack([vx10, vz10]))
    s01 = np.cov(np.vstack([vx01, vz01]))
    contrast = np.array([1.0, -1.0])
    return float(contrast @ s10 @ contrast / pos.sum() + contrast @ s01 @ contrast / neg.sum())


def test_the_spread_of_a_paired_auroc_difference_matches_delong():
    """An independent reference for the test-set noise: DeLong's analytic variance of paired AUROCs."""
    rng = np.random.default_rng(4)
    labels = np.r_[np.zeros(100), np.ones(100)].astype(int)
    shared = rng.normal(size=200)
    x = labels * 1.0 + shared + 0.6 * rng.normal(size=200)
    z = labels * 0.8 + shared + 0.6 * rng.normal(size=200)
    counts = redraws(labels, 4000, seed=5)
    d = (
        image_metric_redraws(x, labels, counts)["image_AUROC"]
        - image_metric_redraws(z, labels, counts)["image_AUROC"]
    )
    delong = _delong_paired_variance(x, z, labels)
    # 4000 redraws estimate a variance to about +-2 % (sd sqrt(2/4000)); the bootstrap and DeLong differ
    # by O(1/n) besides
    assert d.var(ddof=1) == pytest.approx(delong, rel=0.12)
    assert stats.pearsonr(image_metric_redraws(x, labels, counts)["image_AUROC"],
                          image_metric_redraws(z, labels, counts)["image_AUROC"]).statistic > 0.3  # fmt: skip
