"""Evaluate: score and localize every test image of a category with one trained classifier.

Store layout (``storage/evaluate/<category>-<method>-s<seed>-<key>/``)::

    scores  float64 (T,)       Mahalanobis distance of each test image's embedding (larger = more anomalous)
    labels  uint8   (T,)       1 = anomalous
    index   int64   (T,)       row of the image in the ingest store
    holdout_scores  float64 (H,)   scores of the calibration images: the normal validation images, or the
                                   normal training images held out of every density fit
    holdout_index   int64   (H,)   their rows in the ingest store
                                   (``cutswap.score.detector.calibration_split``)
    density_mean, density_precision              float64 (D,), (D, D)  the image-level density
    patch_density_mean, patch_density_precision  float64 (D,), (D, D)  the crop density (``patch`` only)
    memory_bank   float32 (K, D)   PatchCore's coreset of normal patch features, instead of the densities
    maps    float16 (T, S, S)  anomaly map of each test image divided by ``map_scale`` (so in [0, 1]); one
                               map per chunk, ``SHARD`` per shard; absent when ``localization`` is ``none``
    attrs   metrics: {image_AUROC, image_F1Max, pixel_AUROC, pixel_AUPRO, pixel_F1Max} (NaN: undefined, no
            maps, or anomalous test images without masks: ``anomalous_without_mask`` > 0), metric_definitions:
            {name: text}, metric_resolution: [S, S] (the working size the pixel metrics were computed at, not
            the original image size), fpr_limit, pixel_bins, localization: {the settings that made the maps},
            scorer (gde | patchcore), l2_normalize (gde), coreset: {fraction, size, layers} (patchcore),
            map_scale, holdout_map_max (largest map value on the held-out normal images; None without maps),
            score_seconds (fitting and scoring, maps included), n_train (images the densities were fitted on),
            n_holdout, n_test, method, seed, category, worker (Dask worker or in-process), threshold: {value,
            fpr_target, n_holdout, rank, expected_fpr, holdout_fpr, resolved, rule, holdout, source
            ("validation" | "train holdout"), test: {precision, recall, fpr, tp, fp, fn, tn}, check:
            {allowed_fp, p_value, holds, level}}

The threshold is chosen on normal calibration images only, the category's validation images when it has
any, else training images held out of the fits (``cutswap.score.detector``: an order statistic of their
scores at the target false-positive rate ``evaluate.threshold_fpr``); the test labels only measure what it
gives (``threshold.test``) and whether that is within what the calibration sample allows
(``threshold.check``, ``cutswap.score.detector.operating_point_check``). The densities are stored so that
``cutswap predict`` and ``cutswap export`` score new images with exactly the detector evaluated here
(``cutswap.pipeline.readers.load_detector``).

The pixel metrics are computed from the float32 maps before they are stored; recomputing them from the
float16 maps gives the same numbers up to the ties float16 rounding creates (about 1e-3 relative).

The key covers the localization settings that change the maps or the metrics (for the chosen route
only, so changing ``gradcam_layer`` does not recompute ``patch`` runs), the scorer's own settings
(``l2_normalize`` for the densities, resolved per classifier and keyed only when on, so stores made
before it existed are reused; ``coreset_fraction`` for PatchCore) and the threshold settings
(``threshold_holdout``, ``threshold_fpr``), not batch sizes or the device.

PatchCore (``method.scorer == "patchcore"``) replaces both densities by one memory bank: its image score
is the largest patch distance, its maps the patch distances upsampled (``cutswap.score.patchcore``); the
``patch`` and ``gradcam`` routes are the density methods' (``localization: none`` still means no maps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cutswap.learn.execution import resolve_device
from cutswap.method.registry import get_method
from cutswap.pipeline.parallel import current_worker
from cutswap.pipeline.readers import load_model, read_rows, samples
from cutswap.pipeline.settings import EvaluateSettings, Settings
from cutswap.pipeline.stores import StoreRef, build_store, open_store, write_array
from cutswap.pipeline.stores.arrays import SHARD
from cutswap.score.density import GaussianDensity
from cutswap.score.detector import (
    Detector,
    calibration_split,
    choose_threshold,
    operating_point,
    operating_point_check,
)
from cutswap.score.localization import embed_images, fit_patch_density
from cutswap.score.metrics import FPR_LIMIT, METRIC_DEFINITIONS, f1_max, image_auroc, pixel_metrics
from cutswap.score.patchcore import AGGREGATION, LAYERS, PatchCore

PIXEL_METRICS = ("pixel_AUROC", "pixel_AUPRO", "pixel_F1Max")


def localization_key(cfg: EvaluateSettings, scorer: str = "gde") -> dict[str, Any]:
    """The evaluate settings that change the maps, for the chosen localization route only (PatchCore's
    own route when the scorer is ``patchcore``)."""
    if cfg.localization == "none":
        return {"localization": "none"}
    if scorer == "patchcore":
        return {"localization": "patchcore", "sigma": cfg.sigma, "pixel_bins": cfg.pixel_bins}
    if cfg.localization == "patch":
        route = ("patch_size", "patch_stride", "sigma", "max_fit_patches")
    else:
        route = ("gradcam_layer",)
    return {
        "localization": cfg.localization,
        **{k: getattr(cfg, k) for k in route},
        "pixel_bins": cfg.pixel_bins,
    }


def resolve_l2(setting: bool | str, pretrained: bool) -> bool:
    """``evaluate.l2_normalize`` for one classifier: ``auto`` normalises the embeddings of trunks that began
    from ImageNet weights (frozen or fine-tuned), not of trunks trained from scratch (``docs/method.md``)."""
    return pretrained if setting == "auto" else bool(setting)


def scorer_key(cfg: EvaluateSettings, scorer: str, l2: bool = False) -> dict[str, Any]:
    """The scorer's own settings: PatchCore's coreset, or the densities' normalisation when it is on."""
    if scorer == "patchcore":
        return {
            "scorer": "patchcore",
            "coreset_fraction": cfg.coreset_fraction,
            "layers": list(LAYERS),
            "aggregation": AGGREGATION,
        }
    return {"l2_normalize": True} if l2 else {}


def evaluate_key(cfg: EvaluateSettings, scorer: str = "gde", l2: bool = False) -> dict[str, Any]:
    """What an evaluate store is keyed by: the localization route's settings, the scorer's (with the
    normalisation resolved by ``resolve_l2``), the threshold's."""
    return {
        **localization_key(cfg, scorer),
        **scorer_key(cfg, scorer, l2),
        "threshold_holdout": cfg.threshold_holdout,
        "threshold_fpr": cfg.threshold_fpr,
    }


@dataclass
class _Category:
    """What the evaluation reads of a category's ingest store."""

    source: Any
    images: np.ndarray
    table: pd.DataFrame
    test: np.ndarray  # rows of the test images
    fit: np.ndarray  # normal training rows the densities are fitted on
    held: np.ndarray  # normal rows the threshold is chosen on (validation, or held-out training rows)
    calibration: str  # where ``held`` comes from: "validation" or "train holdout"

    @classmethod
    def read(cls, ingest: StoreRef, holdout: float) -> _Category:
        source = open_store(ingest)
        table = samples(source)
        test = np.flatnonzero((table["split"] == "test").to_numpy())
        fit, held, calibration = calibration_split(
            table["split"].to_numpy(), table["label"].to_numpy(), holdout
        )
        # Every image is read: the fitted, calibration and test rows cover every split (train, val, test),
        # all but a validation split's anomalous images, which datasets hardly have (MVTec AD has no val).
        return cls(source, source["images"][:], table, test, fit, held, calibration)


def _fit_detector(
    cfg: EvaluateSettings, model: Any, data: _Category, device: Any, scorer: str, l2: bool
) -> tuple[Detector, float]:
    """The detector (image density, and patch density on the patch route; or PatchCore's memory bank)
    fitted on ``data.fit``; the seconds the patch density took (part of the localization's cost)."""
    route = localization_key(cfg, scorer)
    fit = data.images[data.fit]
    if scorer == "patchcore":
        core = PatchCore.fit(model, fit, cfg.coreset_fraction, cfg.sigma, cfg.batch_size, device)
        size = data.images.shape[1]
        return Detector(
            model, None, route, size, patchcore=core, batch_size=cfg.batch_size, device=device
        ), 0.0
    embeddings = embed_images(model, fit, cfg.batch_size, device)
    density = GaussianDensity.fit(embeddings, l2)
    start = time.perf_counter()
    patch_density = None
    if cfg.localization == "patch":
        patch_density = fit_patch_density(
            model,
            data.images[data.fit],
            cfg.patch_size,
            cfg.patch_stride,
            cfg.max_fit_patches,
            cfg.patch_batch_size,
            device,
            l2_normalize=l2,
        )
    fit_seconds = time.perf_counter() - start
    # The detector ``cutswap predict`` loads back: test images are scored by the same object.
    detector = Detector(
        model,
        density,
        route,
        data.images.shape[1],
        patch_density,
        batch_size=cfg.batch_size,
        patch_batch_size=cfg.patch_batch_size,
        device=device,
    )
    return detector, fit_seconds


def _scored(detector: Detector, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Image scores and maps of one image set in one pass (PatchCore's patch distances serve both, where
    asking for each computed every patch feature twice); no maps for an empty set."""
    if len(images) == 0:
        return detector.image_scores(images), None
    return detector.score(images)


def _score_images(
    group: Any,
    cfg: EvaluateSettings,
    detector: Detector,
    data: _Category,
    holdout_scores: np.ndarray,
    scores: np.ndarray,
) -> dict[str, Any]:
    """The threshold chosen on the held-out images' scores, the test scores, the densities: written to
    ``group``; returns the threshold and the image metrics."""
    threshold = choose_threshold(holdout_scores, cfg.threshold_fpr)
    labels = data.table["label"].to_numpy()[data.test].astype(np.uint8)
    threshold["holdout"] = cfg.threshold_holdout
    threshold["source"] = data.calibration
    threshold["test"] = test = operating_point(scores, labels, threshold["value"])
    threshold["check"] = operating_point_check(threshold, test["fp"], test["fp"] + test["tn"])
    arrays = [("scores", scores), ("labels", labels), ("index", data.test)]
    arrays += [("holdout_scores", holdout_scores), ("holdout_index", data.held)]
    if detector.density is not None:
        arrays += [("density_mean", detector.density.mean), ("density_precision", detector.density.precision)]
    if detector.patchcore is not None:
        arrays += [("memory_bank", detector.patchcore.memory_bank)]
    if detector.patch_density is not None:
        arrays += [("patch_density_mean", detector.patch_density.mean)]
        arrays += [("patch_density_precision", detector.patch_density.precision)]
    for name, values in arrays:
        write_array(group, name, values, per_chunk=len(values) or 1, per_shard=len(values) or 1)
    metrics = {"image_AUROC": image_auroc(scores, labels), "image_F1Max": f1_max(scores, labels)}
    return {"threshold": threshold, "metrics": metrics}


def _score_maps(
    group: Any,
    cfg: EvaluateSettings,
    data: _Category,
    maps: np.ndarray | None,
    holdout_maps: np.ndarray | None,
) -> dict[str, Any]:
    """The test images' anomaly maps (written to ``group``, scaled to [0, 1]), the pixel metrics, and the
    largest map value of the held-out normal images (what a normal image reaches, for display)."""
    # An anomalous image without a ground-truth mask (a folder dataset without ``mask_dir``) would count
    # all its pixels as normal, so the pixel metrics are undefined rather than computed.
    unmasked = int((data.table["mask_path"].isna() & (data.table["label"] == 1)).to_numpy()[data.test].sum())
    if maps is None or unmasked:
        metrics = dict.fromkeys(PIXEL_METRICS, float("nan"))
    else:
        metrics = pixel_metrics(maps, read_rows(data.source["masks"], data.test), FPR_LIMIT, cfg.pixel_bins)
    normal_max = None
    if holdout_maps is not None and len(data.held):
        normal_max = float(holdout_maps.max())
    scale = 1.0
    if maps is not None:
        scale = float(maps.max()) if len(maps) and maps.max() > 0 else 1.0
        write_array(group, "maps", (maps / scale).astype(np.float16), per_chunk=1, per_shard=SHARD)
    return {
        "metrics": metrics,
        "map_scale": scale,
        "holdout_map_max": normal_max,
        "anomalous_without_mask": unmasked,
    }


def _scorer_attrs(detector: Detector) -> dict[str, Any]:
    """What the scorer was: the densities' normalisation, or PatchCore's bank."""
    core = detector.patchcore
    if core is None:
        return {"l2_normalize": detector.density.l2_normalize}
    return {"coreset": {"fraction": core.fraction, "size": len(core.memory_bank), "layers": list(LAYERS)}}


def evaluate_run(
    settings: Settings, ingest: StoreRef, train: StoreRef, mode: str = "run"
) -> tuple[StoreRef, bool]:
    """Fit the detector of one trained classifier on its category's normal images, choose its threshold on
    held-out ones, and score the test images and their maps (see the module docstring)."""
    cfg = settings.evaluate
    tattrs = open_store(train).attrs
    scorer = get_method(tattrs["method"]).scorer
    trunk = tattrs.get("trunk") or tattrs["settings"]  # stores from before the trunk record: the key's
    l2 = resolve_l2(cfg.l2_normalize, bool(trunk.get("pretrained", False)))

    def write(group):
        device = resolve_device(settings.train.device)
        data = _Category.read(ingest, cfg.threshold_holdout)
        detector, fit_seconds = _fit_detector(cfg, load_model(train, device), data, device, scorer, l2)
        start = time.perf_counter()
        holdout_scores, holdout_maps = _scored(detector, data.images[data.held])
        scores, maps = _scored(detector, data.images[data.test])
        seconds = time.perf_counter() - start + fit_seconds
        image = _score_images(group, cfg, detector, data, holdout_scores, scores)
        pixel = _score_maps(group, cfg, data, maps, holdout_maps)
        group.attrs.update(
            {
                "metrics": {**image["metrics"], **pixel.pop("metrics")},
                "metric_definitions": METRIC_DEFINITIONS,
                "metric_resolution": list(data.images.shape[1:3]),
                "fpr_limit": FPR_LIMIT,
                "pixel_bins": cfg.pixel_bins,
                "localization": detector.route,
                "scorer": scorer,
                **_scorer_attrs(detector),
                "threshold": image["threshold"],
                **pixel,
                "score_seconds": round(seconds, 3),
                "n_train": int(len(data.fit)),
                "n_holdout": int(len(data.held)),
                "n_test": int(len(data.test)),
                "worker": current_worker() or "in-process",
            }
        )

    extra = {"method": tattrs["method"], "seed": tattrs["seed"], "category": ingest.name}
    return build_store(
        settings.storage_root,
        "evaluate",
        train.name,
        evaluate_key(cfg, scorer, l2),
        {"ingest": ingest, "train": train},
        write,
        mode,
        extra,
    )
