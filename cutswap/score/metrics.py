"""Detection and localization metrics, written out so their definitions are pinned and checked in tests.

Inputs: per-image ``scores`` (T,) with ``labels`` (T,) (1 = anomalous), and per-pixel anomaly ``maps``
(T, H, W) with ground-truth ``masks`` (T, H, W) bool, at whatever resolution the caller works at (the
evaluate stage uses the working size; it records it next to the numbers). Larger means more anomalous.
An undefined metric (one class absent) is NaN.

Definitions (``METRIC_DEFINITIONS`` holds the same text for the stores and reports):

``image_AUROC``
    Area under the ROC curve of per-image scores against labels: the Mann-Whitney U statistic with ties
    counting one half, i.e. the probability that a random anomalous image scores above a random normal
    one. Equals scikit-learn's ``roc_auc_score`` and anomalib's ``image_AUROC``.
``image_F1Max`` / ``pixel_F1Max``
    ``max_t 2PR / (P + R)`` over every threshold ``t`` (a sample is predicted anomalous when its score is
    ``>= t``), as anomalib's ``F1Max``. The maximum is always reached at a threshold equal to some
    anomalous sample's score (raising ``t`` to the next anomalous score keeps TP and cannot add FP), so
    only those thresholds are swept. Scores are used raw: anomalib's torchmetrics curve applies a sigmoid
    to scores outside [0, 1], which in float32 merges all large scores into ties; we do not.
``pixel_AUROC``
    ROC AUC over all pixels of all test images, normal images included (anomalib's ``pixel_AUROC``).
``pixel_AUPRO``
    Area under the per-region-overlap curve up to a false-positive rate of 0.3, divided by 0.3, as
    anomalib's ``AUPRO(fpr_limit=0.3)`` and the official MVTec AD evaluation define it. Regions are the
    8-connected components of each image's ground-truth mask (``scipy.ndimage.label`` with a 3 x 3 block,
    as OpenCV's default in anomalib's CPU path and the MVTec code). For a threshold ``t``, FPR is the
    fraction of background pixels (outside every region, normal images included) scoring ``>= t``, and a
    region's overlap is the fraction of its pixels scoring ``>= t``; this is the ROC of that region on
    ``background U region``. The curve averages the regions' ROCs on a common FPR axis (a macro average:
    every region weighs the same, however large), is cut at FPR 0.3 by linear interpolation, integrated
    with the trapezoidal rule and divided by 0.3.

How it is computed: exactly, in one sweep. Every per-region ROC shares the background, so they share the
FPR axis, and averaging them on a common FPR grid is the same as one ROC whose positives carry weight
``1 / (R * |region|)`` (R regions) instead of ``1 / n_pos``. Between two consecutive distinct anomalous
scores the curve is flat, so the whole curve (pixel AUROC, AUPRO, F1) follows from, per distinct
anomalous score, how many background pixels tie with it and how many fall in the gap above it. Those
counts come from streaming the background pixels through ``searchsorted`` chunk by chunk: memory is
O(anomalous pixels + one chunk), never a sort of all 1e8 pixels. anomalib resamples each region's curve
by point index before averaging, an approximation of this same curve.

``bins``: optionally, scores are first quantised into ``bins`` equal-width bins between the minimum and
maximum map value, and the metrics are those of the quantised scores (exact for them). Pixels sharing a
bin become ties, which count one half; the pixel AUROC then differs from the exact one by at most half the
fraction of (anomalous, normal) pixel pairs that share a bin,
``0.5 * sum_b n_pos(b) * n_neg(b) / (n_pos * n_neg)``, and F1-max can only go down (its thresholds are a
subset of the exact ones). It trades the exact mode's ``searchsorted`` for one ``bincount`` per chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

FPR_LIMIT = 0.3

METRIC_DEFINITIONS = {
    "image_AUROC": "ROC AUC of per-image scores vs labels (ties count 1/2); = sklearn roc_auc_score",
    "image_F1Max": "max over thresholds t of 2PR/(P+R), image predicted anomalous when score >= t",
    "pixel_AUROC": "ROC AUC over all pixels of all test images (normal images included)",
    "pixel_AUPRO": (
        "area under the per-region overlap curve (8-connected GT regions per image, macro average, FPR "
        "over background pixels) up to FPR 0.3, divided by 0.3; as anomalib AUPRO / MVTec AD evaluation"
    ),
    "pixel_F1Max": "max over thresholds t of 2PR/(P+R) over all pixels of all test images",
}

#: 8-connectivity inside each image and none across images of a (T, H, W) stack.
_IN_PLANE_8 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8[1] = True


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of scores against binary labels; NaN when only one class is present."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in length")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """Image F1-max of scores against binary labels; NaN without anomalous samples."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in length")
    _check_finite(s)
    sweep = _Sweep.build(s[y], None, lambda asc: _count_negatives(asc, [s[~y]]))
    return sweep.f1_max()


def pixel_metrics(
    maps: Any,
    masks: Any,
    fpr_limit: float = FPR_LIMIT,
    bins: int | None = None,
    chunk_pixels: int = 1 << 22,
) -> dict[str, float]:
    """``pixel_AUROC``, ``pixel_AUPRO`` and ``pixel_F1Max`` of (T, H, W) maps against (T, H, W) masks.

    Args:
        maps: anomaly maps, any real dtype; a NumPy array or anything sliced like one along the first
            axis (a Zarr array is read chunk by chunk).
        masks: ground truth, nonzero = anomalous pixel.
        fpr_limit: the FPR where the per-region overlap curve is cut (anomalib's and MVTec's 0.3).
        bins: ``None`` for exact metrics, or the number of equal-width score bins (module docstring).
        chunk_pixels: pixels processed at once; bounds the working memory (about 40 bytes per pixel).

    Raises:
        ValueError: shapes differ, a map holds NaN or infinity, or a setting is out of range.
    """
    if maps.shape != masks.shape or len(maps.shape) != 3:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} must be the same (T, H, W)")
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if bins is not None and bins < 2:
        raise ValueError(f"bins must be at least 2 or None, got {bins}")
    step = max(1, chunk_pixels // max(1, maps.shape[1] * maps.shape[2]))
    quantise = _Quantiser.fit(maps, step, bins) if bins is not None else None
    # Pass 1: the anomalous pixels with the region each belongs to; the only data held whole.
    values, regions, offset = [], [], 0
    for s, m in _chunks(maps, masks, step):
        labelled, n = label_regions(m)
        values.append(quantise(s[m]) if quantise else s[m])
        regions.append(labelled[m].astype(np.int64) + offset - 1)
        offset += n
    pos = np.concatenate(values) if values else np.zeros(0)
    region = np.concatenate(regions) if regions else np.zeros(0, np.int64)

    # Pass 2: the normal pixels, streamed against the distinct anomalous scores.
    def negatives(asc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if quantise is None:
            return _count_negatives(asc, (s[~m] for s, m in _chunks(maps, masks, step)))
        hist = np.zeros(bins, np.int64)
        for s, m in _chunks(maps, masks, step):
            hist += np.bincount(quantise(s[~m]).astype(np.int64), minlength=bins)
        return _count_negatives(asc, [np.arange(bins, dtype=np.float64)], [hist])

    sweep = _Sweep.build(pos, region, negatives)
    return {
        "pixel_AUROC": sweep.area(1.0, macro=False),
        "pixel_AUPRO": float(sweep.area(fpr_limit, macro=True) / fpr_limit),
        "pixel_F1Max": sweep.f1_max(),
    }


def pixel_auroc(maps: Any, masks: Any, bins: int | None = None) -> float:
    """Pixel AUROC alone (see ``pixel_metrics``)."""
    return pixel_metrics(maps, masks, bins=bins)["pixel_AUROC"]


def aupro(maps: Any, masks: Any, fpr_limit: float = FPR_LIMIT, bins: int | None = None) -> float:
    """AUPRO alone (see ``pixel_metrics``)."""
    return pixel_metrics(maps, masks, fpr_limit, bins)["pixel_AUPRO"]


def pixel_f1_max(maps: Any, masks: Any, bins: int | None = None) -> float:
    """Pixel F1-max alone (see ``pixel_metrics``)."""
    return pixel_metrics(maps, masks, bins=bins)["pixel_F1Max"]


def auroc_binning_bound(maps: Any, masks: Any, bins: int) -> float:
    """Largest possible |binned - exact| pixel AUROC for ``bins`` (module docstring), for small inputs."""
    s, m = np.asarray(maps, dtype=np.float64), np.asarray(masks).astype(bool)
    q = _Quantiser.fit(s, len(s), bins)(s.ravel()).astype(np.int64)
    pos = np.bincount(q[m.ravel()], minlength=bins)
    neg = np.bincount(q[~m.ravel()], minlength=bins)
    return float(0.5 * (pos * neg).sum() / max(1, pos.sum() * neg.sum()))


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a (T, H, W) mask stack: int32 labels 1..n (0 = background), and n.

    8-connected inside each image (OpenCV's default in anomalib's CPU path, and the MVTec AD evaluation's
    3 x 3 structuring element); never connected across images, however the masks line up.
    """
    labelled, n = ndimage.label(np.asarray(masks).astype(bool), structure=_IN_PLANE_8)
    return labelled, int(n)


def _check_finite(x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite (found NaN or infinity)")


def _chunks(maps: Any, masks: Any, step: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, maps.shape[0], step):
        s = np.asarray(maps[start : start + step], dtype=np.float64)
        _check_finite(s)
        yield s, np.asarray(masks[start : start + step]).astype(bool)


@dataclass(frozen=True)
class _Quantiser:
    """Equal-width bins between the global minimum and maximum score."""

    low: float
    width: float
    bins: int

    @classmethod
    def fit(cls, maps: Any, step: int, bins: int) -> _Quantiser:
        low, high = np.inf, -np.inf
        for start in range(0, maps.shape[0], step):
            s = np.asarray(maps[start : start + step], dtype=np.float64)
            _check_finite(s)
            if s.size:
                low, high = min(low, float(s.min())), max(high, float(s.max()))
        if not np.isfinite(low):
            low = high = 0.0
        return cls(low, (high - low) / bins or 1.0, bins)

    def __call__(self, s: np.ndarray) -> np.ndarray:
        return np.clip(np.floor((s - self.low) / self.width), 0, self.bins - 1)


def _count_negatives(
    asc: np.ndarray, chunks: Any, weights: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Negatives tied with each distinct positive score ``asc[i]``, and in each gap between them.

    Returns ``(equal, gaps)``: ``equal[i]`` counts negatives equal to ``asc[i]``; ``gaps[i]`` counts those
    strictly between ``asc[i-1]`` and ``asc[i]`` (``gaps[0]`` below all, ``gaps[m]`` above all).
    """
    m = len(asc)
    equal = np.zeros(m, np.int64)
    gaps = np.zeros(m + 1, np.int64)
    for k, x in enumerate(chunks):
        w = None if weights is None else weights[k]
        if w is None:
            x = np.sort(x)  # sorted queries make the binary searches cache-friendly (several times faster)
        left = np.searchsorted(asc, x, "left")
        tied = asc[np.minimum(left, m - 1)] == x if m else np.zeros(len(x), bool)
        equal += np.bincount(left[tied], None if w is None else w[tied], minlength=m).astype(np.int64)
        gaps += np.bincount(left[~tied], None if w is None else w[~tied], minlength=m + 1).astype(np.int64)
    return equal, gaps


@dataclass(frozen=True)
class _Sweep:
    """The threshold sweep, summarised per distinct positive score, in descending score order.

    ``gap_above[j]`` negatives lie strictly between ``value[j-1]`` and ``value[j]``, ``tied[j]`` equal
    ``value[j]``, ``below`` lie under the lowest positive score. ``micro[j]`` / ``macro[j]`` are the share of
    positives at ``value[j]`` counted per pixel (TPR) or per region (overlap averaged over regions).
    """

    tied: np.ndarray
    gap_above: np.ndarray
    below: int
    pos: np.ndarray
    micro: np.ndarray
    macro: np.ndarray

    @classmethod
    def build(cls, pos_scores: np.ndarray, regions: np.ndarray | None, negatives: Any) -> _Sweep:
        asc, inverse, counts = np.unique(pos_scores, return_inverse=True, return_counts=True)
        n_pos = len(pos_scores)
        if regions is None or n_pos == 0:
            macro = counts / max(n_pos, 1)
        else:
            sizes = np.bincount(regions)
            n_regions = int((sizes > 0).sum())
            macro = np.bincount(inverse, 1.0 / (n_regions * sizes[regions]), minlength=len(asc))
        equal, gaps = negatives(asc)
        return cls(
            tied=equal[::-1],
            gap_above=gaps[1:][::-1],
            below=int(gaps[0]),
            pos=counts[::-1],
            micro=(counts / max(n_pos, 1))[::-1],
            macro=macro[::-1],
        )

    @property
    def n_neg(self) -> int:
        return int(self.tied.sum() + self.gap_above.sum() + self.below)

    def area(self, fpr_limit: float, macro: bool) -> float:
        """Area under the (FPR, TPR or mean overlap) curve from FPR 0 to ``fpr_limit``.

        Walking down the thresholds, the negatives in a gap move FPR at constant height (a flat segment),
        the negatives tied with a positive score move it while the height rises (a diagonal segment).
        """
        n_neg = self.n_neg
        if len(self.pos) == 0 or n_neg == 0:
            return float("nan")
        height = np.cumsum(self.macro if macro else self.micro)
        before = np.concatenate([[0.0], height[:-1]])
        # Segments in FPR order: flat(gap_above[0]), diag(tied[0]), flat(gap_above[1]), ..., flat(below).
        widths = np.empty(2 * len(height) + 1)
        widths[0:-1:2], widths[1::2], widths[-1] = self.gap_above, self.tied, self.below
        left = np.empty_like(widths)
        right = np.empty_like(widths)
        left[0:-1:2] = right[0:-1:2] = before
        left[1::2], right[1::2] = before, height
        left[-1] = right[-1] = height[-1]
        limit = fpr_limit * n_neg
        end = np.cumsum(widths)
        full = end <= limit
        area = float((widths[full] * (left[full] + right[full])).sum() / 2)
        cut = int(np.argmax(~full)) if not full.all() else None
        if cut is not None:
            part = limit - (end[cut] - widths[cut])
            top = left[cut] + (right[cut] - left[cut]) * part / widths[cut]
            area += part * (left[cut] + top) / 2
        return area / n_neg

    def f1_max(self) -> float:
        """max over thresholds at the positive scores of 2 TP / (2 TP + FP + FN)."""
        if len(self.pos) == 0:
            return float("nan")
        tp = np.cumsum(self.pos)
        fp = np.cumsum(self.gap_above + self.tied)
        return float((2 * tp / (2 * tp + fp + (tp[-1] - tp))).max())
