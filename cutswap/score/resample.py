"""The test set's own sampling noise: every metric recomputed on bootstrap redraws of the test images.

Two methods scored on the same test images share that sample's luck; another draw of test images moves
both, and their difference too. To put that noise into a comparison (``cutswap.report.compare``), every
evaluation of a category is re-scored on the same ``B`` redraws of its test images, and the comparison
reads the covariance of its differences across redraws.

Inputs, per evaluation (one method, one seed, one category): per-image ``scores`` (T,) and ``labels``
(T,) (1 = anomalous); for pixel metrics, the anomaly ``maps`` (T, H, W) and ``masks`` (T, H, W).
:func:`redraws` gives the redraws as counts, ``(B, T)`` int, row ``b`` saying how often each image is in
redraw ``b``: normal and anomalous images are redrawn separately (as many of each as the test set has,
with replacement), so every redraw keeps the test set's class balance, as the benchmark's design does.

Images, never pixels, are what is redrawn: the pixels of one image are not independent samples, and a
pixel bootstrap would call a defect that one image carries a certainty.

How: a metric of a weighted sample is a function of, per score level, the weighted count of positives
and negatives at that level. For image scores the levels are the distinct scores (exact); for maps they
are ``bins`` equal-width bins between the maps' minimum and maximum, so the pixel metrics of a redraw are
those of the quantised maps (``cutswap.score.metrics`` with ``bins``: the same curve, ties counting one
half). Per image, a histogram of its pixels per level (background, anomalous, and each region's overlap
share for AUPRO); a redraw is then one matrix product ``counts @ histograms``. Only the spread across
redraws is used, so the quantisation's small offset of the pixel metrics does not enter the estimate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cutswap.score.metrics import FPR_LIMIT, label_regions

#: Redraws per category: the test-noise variance is estimated with B - 1 degrees of freedom.
N_REDRAWS = 500
#: Score levels of the pixel metrics' redraws (equal-width bins between the maps' extremes).
PIXEL_BINS = 1000


def redraws(labels: np.ndarray, n_redraws: int = N_REDRAWS, seed: int = 0) -> np.ndarray:
    """``(n_redraws, T)`` counts: each row redraws the normal and the anomalous images, with replacement.

    Raises:
        ValueError: ``n_redraws`` below 2 (a spread needs two redraws).
    """
    if n_redraws < 2:
        raise ValueError(f"n_redraws must be at least 2, got {n_redraws}")
    y = np.asarray(labels).astype(bool).ravel()
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_redraws, len(y)), np.int64)
    for members in (np.flatnonzero(~y), np.flatnonzero(y)):
        if len(members):
            picks = rng.integers(0, len(members), size=(n_redraws, len(members)))
            for row, pick in enumerate(picks):
                counts[row] += np.bincount(members[pick], minlength=len(y))
    return counts


def image_metric_redraws(scores: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """``image_AUROC`` and ``image_F1Max`` of each redraw, ``(B,)`` each (exact: levels = distinct scores)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape or counts.shape[1] != len(s):
        raise ValueError(f"scores {s.shape}, labels {y.shape} and redraws {counts.shape} disagree")
    order = np.argsort(s, kind="stable")
    ordered = s[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # one level per distinct score
    w = counts[:, order].astype(np.float64)
    pos = np.add.reduceat(w * y[order], starts, axis=1)
    neg = np.add.reduceat(w * ~y[order], starts, axis=1)
    return {"image_AUROC": _area(pos, neg, 1.0), "image_F1Max": _f1_max(pos, neg)}


def pixel_histograms(maps: Any, masks: Any, bins: int = PIXEL_BINS) -> dict[str, np.ndarray]:
    """Per image and score level: background pixels, anomalous pixels, summed region overlap shares.

    Returns:
        ``background``, ``anomalous``, ``overlap`` (T, bins) and ``regions`` (T,): the number of
        ground-truth regions of each image (8-connected, as ``cutswap.score.metrics``).
    """
    s = np.asarray(maps, dtype=np.float64)
    m = np.asarray(masks).astype(bool)
    if s.shape != m.shape or s.ndim != 3:
        raise ValueError(f"maps {s.shape} and masks {m.shape} must be the same (T, H, W)")
    if not np.isfinite(s).all():
        raise ValueError("maps must be finite (found NaN or infinity)")
    t = len(s)
    low, high = (float(s.min()), float(s.max())) if s.size else (0.0, 0.0)
    width = (high - low) / bins or 1.0
    level = np.clip(np.floor((s - low) / width), 0, bins - 1).astype(np.int64)
    flat = level + (np.arange(t) * bins)[:, None, None]
    background = np.bincount(flat[~m], minlength=t * bins).reshape(t, bins)
    anomalous = np.bincount(flat[m], minlength=t * bins).reshape(t, bins)
    labelled, n = label_regions(m)
    sizes = np.bincount(labelled.ravel(), minlength=n + 1).astype(np.float64)
    share = 1.0 / sizes[labelled[m]]  # each anomalous pixel carries 1/|its region|
    overlap = np.bincount(flat[m], weights=share, minlength=t * bins).reshape(t, bins)
    regions = np.array([len(np.unique(labelled[i][m[i]])) for i in range(t)], np.float64)
    return {"background": background, "anomalous": anomalous, "overlap": overlap, "regions": regions}


def pixel_metric_redraws(
    histograms: dict[str, np.ndarray], counts: np.ndarray, fpr_limit: float = FPR_LIMIT
) -> dict[str, np.ndarray]:
    """``pixel_AUROC``, ``pixel_AUPRO`` and ``pixel_F1Max`` of each redraw, ``(B,)`` each."""
    w = counts.astype(np.float64)
    neg = w @ histograms["background"]
    pos = w @ histograms["anomalous"]
    # Per region: its overlap share at each level; a redraw's curve averages its regions (macro).
    macro = (w @ histograms["overlap"]) / np.maximum(w @ histograms["regions"], 1e-300)[:, None]
    return {
        "pixel_AUROC": _area(pos, neg, 1.0),
        "pixel_AUPRO": _area(macro, neg, fpr_limit) / fpr_limit,
        "pixel_F1Max": _f1_max(pos, neg),
    }


def _area(pos: np.ndarray, neg: np.ndarray, fpr_limit: float) -> np.ndarray:
    """Area under the (FPR, TPR) curve up to ``fpr_limit`` per row; levels ascending in columns.

    Walking the levels from the top, each level adds its negatives to FPR and its positives to TPR at
    once (a diagonal segment: ties count one half). NaN for a row without positives or negatives.
    """
    p, n = pos[:, ::-1], neg[:, ::-1]
    p_tot, n_tot = p.sum(1), n.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p, 1) / p_tot[:, None]], 1)
        fpr = np.concatenate([np.zeros((len(n), 1)), np.cumsum(n, 1) / n_tot[:, None]], 1)
    x0, x1, h0, h1 = fpr[:, :-1], fpr[:, 1:], tpr[:, :-1], tpr[:, 1:]
    end = np.minimum(x1, fpr_limit)  # each segment cut at the limit (segments past it get no width)
    with np.errstate(invalid="ignore", divide="ignore"):
        top = np.where(x1 > x0, h0 + (h1 - h0) * (end - x0) / (x1 - x0), h1)
    width = np.clip(end - x0, 0.0, None)
    area = np.nansum(width * (h0 + top), axis=1) / 2
    return np.where((p_tot > 0) & (n_tot > 0), area, np.nan)


def _f1_max(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """max over thresholds of 2 TP / (2 TP + FP + FN) per row (predicted anomalous at or above a level)."""
    tp = np.cumsum(pos[:, ::-1], 1)
    fp = np.cumsum(neg[:, ::-1], 1)
    total = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (tp + fp + total)
    out = np.nanmax(np.where(np.isfinite(f1), f1, np.nan), axis=1, initial=0.0)
    return np.where(total[:, 0] > 0, out, np.nan)
