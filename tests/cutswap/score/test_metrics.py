"""Every metric against an independent computation: scikit-learn, scikit-image's labelling, hand-worked
cases, and AUPRO written out from its definition (a loop over thresholds)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from skimage.measure import label as sk_label
from sklearn.metrics import precision_recall_curve, roc_auc_score

from cutswap.score.metrics import (
    aupro,
    auroc_binning_bound,
    f1_max,
    image_auroc,
    label_regions,
    pixel_auroc,
    pixel_f1_max,
    pixel_metrics,
)


@pytest.mark.parametrize("seed", range(5))
def test_image_auroc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels * 0.7, 1)  # rounding creates ties
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_image_auroc_hand_computed():
    # pairs (pos, neg): (3>1) (3>2) (2=2 -> 0.5) (2>1) => 3.5 / 4
    assert image_auroc([1, 2, 2, 3], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert np.isnan(image_auroc([1, 2], [1, 1]))


def _sklearn_f1_max(labels, scores) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(f1.max())


@pytest.mark.parametrize("seed", range(5))
def test_image_f1_max_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 150)
    scores = np.round(rng.normal(size=150) + labels * 0.8, 1) * 100  # ties, and far outside [0, 1]
    assert f1_max(scores, labels) == pytest.approx(_sklearn_f1_max(labels, scores), abs=1e-12)


def test_image_f1_max_hand_computed():
    # t=0.9: TP1 FP0 FN1 -> 2/3; t=0.5: TP1 FP1 FN1 -> 1/2; t=0.4: TP2 FP1 -> 4/5; t=0.1: TP2 FP2 -> 2/3
    assert f1_max([0.9, 0.5, 0.4, 0.1], [1, 0, 1, 0]) == pytest.approx(0.8)
    assert np.isnan(f1_max([0.1, 0.2], [0, 0]))
    assert f1_max([0.1, 0.2], [1, 1]) == pytest.approx(1.0)


def _random_maps(seed: int, t: int = 6, size: int = 12, decimals: int = 1):
    """Maps with blob-shaped masks (several regions, some touching diagonally), two normal images, and
    scores rounded so that many pixels tie, across and within classes."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((t, size, size), bool)
    for i in range(2, t):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 3, 2)
            h, w = rng.integers(1, 4, 2)
            masks[i, y : y + h, x : x + w] = True
        masks[i, -1, -1] = masks[i, -2, -2] = True  # a diagonal pair: one 8-connected region
    maps = np.round(rng.normal(size=masks.shape) + 1.2 * masks, decimals).astype(np.float32)
    return maps, masks


def _aupro_by_thresholds(maps, masks, limit=0.3) -> float:
    """AUPRO from its definition: for every distinct score t (high to low), FPR over background pixels and
    the mean over regions of the fraction of the region's pixels at or above t; trapezoids up to the
    limit, the last one cut by linear interpolation; divided by the limit. Regions from scikit-image."""
    regions = []
    for scores, mask in zip(maps, masks, strict=True):
        components = sk_label(mask, connectivity=2)
        regions += [scores[components == k] for k in range(1, components.max() + 1)]
    background = maps[~masks]
    fpr, pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fpr.append(float((background >= t).mean()))
        pro.append(float(np.mean([(r >= t).mean() for r in regions])))
    fpr, pro = np.array(fpr), np.array(pro)
    i = int((fpr <= limit).sum())  # fpr[:i] <= limit < fpr[i]
    area = float(np.sum((fpr[1:i] - fpr[: i - 1]) * (pro[1:i] + pro[: i - 1]) / 2))
    if i == len(fpr):
        return area / limit
    at_limit = pro[i - 1] + (pro[i] - pro[i - 1]) * (limit - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
    area += (limit - fpr[i - 1]) * (pro[i - 1] + at_limit) / 2
    return area / limit


def _aupro_by_region_rocs(maps, masks, limit=0.3) -> float:
    """AUPRO as anomalib states it: each region's ROC on background U region (scikit-learn's partial
    ROC AUC up to the limit, interpolated there, with its McClish standardisation undone), averaged over
    regions, divided by the limit."""
    lo, hi = limit**2 / 2, limit
    areas = []
    for scores, mask in zip(maps, masks, strict=True):
        components = sk_label(mask, connectivity=2)
        for k in range(1, components.max() + 1):
            region = scores[components == k]
            y = np.r_[np.ones(len(region)), np.zeros((~masks).sum())]
            mcclish = roc_auc_score(y, np.r_[region, maps[~masks]], max_fpr=limit)
            areas.append(lo + (2 * mcclish - 1) * (hi - lo))
    return float(np.mean(areas)) / limit


def test_aupro_hand_computed():
    # Two images of 1 x 4 pixels. Regions: r1 = {0.8, 0.4} (image 0), r2 = {0.7}, r3 = {0.3} (image 1,
    # not adjacent). Background (4 pixels): 0.4, 0.1, 0.2, 0.6.
    #   t = 0.8: FPR 0,   overlaps (1/2, 0, 0) -> PRO 1/6
    #   t = 0.7: FPR 0,   overlaps (1/2, 1, 0) -> PRO 1/2
    #   t = 0.6: FPR 1/4, PRO 1/2             (flat from (0, 1/2) to (1/4, 1/2))
    #   t = 0.4: FPR 1/2, overlaps (1, 1, 0) -> PRO 2/3 (a background pixel ties with r1: a diagonal)
    # Up to FPR 0.3: 1/4 * 1/2, plus the diagonal cut at 0.3, where PRO = 1/2 + (1/6)(0.05 / 0.25) = 16/30:
    # 0.05 * (1/2 + 16/30) / 2. Total 181/1200; divided by 0.3: 181/360.
    maps = np.array([[[0.8, 0.4, 0.4, 0.1]], [[0.7, 0.2, 0.6, 0.3]]])
    masks = np.array([[[1, 1, 0, 0]], [[1, 0, 0, 1]]], bool)
    assert aupro(maps, masks) == pytest.approx(181 / 360, abs=1e-12)
    assert _aupro_by_thresholds(maps, masks) == pytest.approx(181 / 360, abs=1e-12)
    # A perfect map covers the whole FPR range at PRO 1; a reversed one at PRO 0.
    assert aupro(masks.astype(float), masks) == pytest.approx(1.0)
    assert aupro(-masks.astype(float), masks) == pytest.approx(0.0)


def test_aupro_weighs_regions_not_pixels():
    # A large region fully found and a one-pixel region missed: per-pixel TPR would be 8/9, AUPRO is 1/2.
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :] = True  # 8 pixels
    masks[1, 3, 3] = True  # 1 pixel, scored below every background pixel
    maps = np.where(masks, 5.0, 1.0)
    maps[1, 3, 3] = 0.0
    assert aupro(maps, masks) == pytest.approx(0.5)
    assert pixel_auroc(maps, masks) == pytest.approx(8 / 9)


def test_regions_are_8_connected_within_an_image_and_never_across_images():
    masks = np.zeros((2, 3, 3), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours: one region
    masks[1, 1, 1] = True  # same place in the next image: its own region
    labelled, n = label_regions(masks)
    assert n == 2
    assert labelled[0, 0, 0] == labelled[0, 1, 1] != labelled[1, 1, 1]
    assert (labelled[~masks] == 0).all()


@pytest.mark.parametrize("seed", range(4))
def test_pixel_metrics_equal_independent_references(seed):
    maps, masks = _random_maps(seed)
    got = pixel_metrics(maps, masks)
    assert got["pixel_AUROC"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert got["pixel_F1Max"] == pytest.approx(_sklearn_f1_max(masks.ravel(), maps.ravel()), abs=1e-12)
    assert got["pixel_AUPRO"] == pytest.approx(_aupro_by_thresholds(maps, masks), abs=1e-12)
    assert got["pixel_AUPRO"] == pytest.approx(_aupro_by_region_rocs(maps, masks), abs=1e-12)


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_other_limits_without_ties(limit):
    maps, masks = _random_maps(7, decimals=6)
    assert aupro(maps, masks, limit) == pytest.approx(_aupro_by_region_rocs(maps, masks, limit), abs=1e-9)
    assert aupro(maps, masks, limit) == pytest.approx(_aupro_by_thresholds(maps, masks, limit), abs=1e-9)


def test_chunked_streaming_and_zarr_input_give_identical_numbers(tmp_path):
    maps, masks = _random_maps(3, t=9)
    whole = pixel_metrics(maps, masks)
    assert pixel_metrics(maps, masks, chunk_pixels=1) == whole  # one image per chunk
    group = zarr.open_group(str(tmp_path), mode="w")
    group.create_array("maps", data=maps.astype(np.float16), chunks=(2, 12, 12))
    group.create_array("masks", data=masks, chunks=(2, 12, 12))
    from_store = pixel_metrics(group["maps"], group["masks"], chunk_pixels=300)
    assert from_store == pixel_metrics(maps.astype(np.float16), masks)


def test_binned_metrics_stay_within_their_documented_error():
    maps, masks = _random_maps(11, t=8, decimals=4)
    exact = pixel_metrics(maps, masks)
    for bins in (16, 256, 4096):
        binned = pixel_metrics(maps, masks, bins=bins)
        bound = auroc_binning_bound(maps, masks, bins)
        assert abs(binned["pixel_AUROC"] - exact["pixel_AUROC"]) <= bound + 1e-12
        assert binned["pixel_F1Max"] <= exact["pixel_F1Max"] + 1e-12
    fine = pixel_metrics(maps, masks, bins=1 << 16)
    assert fine["pixel_AUPRO"] == pytest.approx(exact["pixel_AUPRO"], abs=2e-3)
    assert fine["pixel_AUROC"] == pytest.approx(exact["pixel_AUROC"], abs=2e-4)
    # Binned metrics are the exact metrics of the quantised scores.
    q = np.clip(np.floor((maps - maps.min()) / ((maps.max() - maps.min()) / 16)), 0, 15)
    assert pixel_metrics(maps, masks, bins=16)["pixel_AUPRO"] == pytest.approx(aupro(q, masks), abs=1e-12)


def test_undefined_and_invalid_inputs():
    maps, masks = _random_maps(0)
    normal = np.zeros_like(masks)
    out = pixel_metrics(maps, normal)
    assert np.isnan(out["pixel_AUROC"]) and np.isnan(out["pixel_AUPRO"]) and np.isnan(out["pixel_F1Max"])
    assert pixel_f1_max(maps, np.ones_like(masks)) == pytest.approx(1.0)
    assert np.isnan(pixel_auroc(maps, np.ones_like(masks)))
    bad = maps.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        pixel_metrics(bad, masks)
    with pytest.raises(ValueError, match="same"):
        pixel_metrics(maps, masks[:, :-1])
    with pytest.raises(ValueError, match="fpr_limit"):
        pixel_metrics(maps, masks, fpr_limit=0)
