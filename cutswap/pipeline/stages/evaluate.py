"""Evaluate: score and localize every test image of a category with one trained classifier.

Store layout (``storage/evaluate/<category>-<method>-s<seed>-<key>/``)::

    scores  float64 (T,)       Mahalanobis distance of each test image's embedding (larger = more anomalous)
    labels  uint8   (T,)       1 = anomalous
    index   int64   (T,)       row of the image in the ingest store
    holdout_scores  float64 (H,)   scores of the normal training images held out of every density fit
    holdout_index   int64   (H,)   their rows in the ingest store (``cutswap.score.detector.threshold_split``)
    density_mean, density_precision              float64 (D,), (D, D)  the image-level density
    patch_density_mean, patch_density_precision  float64 (D,), (D, D)  the crop density (``patch`` only)
    maps    float16 (T, S, S)  anomaly map of each test image divided by ``map_scale`` (so in [0, 1]); one
                               map per chunk, ``SHARD`` per shard; absent when ``localization`` is ``none``
    attrs   metrics: {image_AUROC, image_F1Max, pixel_AUROC, pixel_AUPRO, pixel_F1Max} (NaN: undefined, no
            maps, or anomalous test images without masks: ``anomalous_without_mask`` > 0),
            metric_definitions: {name: text}, metric_resolution: [S, S] (the working size the
            pixel metrics were computed at, not the original image size), fpr_limit, pixel_bins,
            localization: {the settings that made the maps}, map_scale, holdout_map_max (largest map
            value on the held-out normal images; None without maps), map_seconds, n_train (images the
            densities were fitted on), n_holdout, n_test, method, seed, category, worker (Dask worker or
            in-process), threshold: {value, fpr_target, n_holdout, rank, expected_fpr, holdout_fpr,
            resolved, rule, holdout, test: {precision, recall, fpr, tp, fp, fn, tn}}

The threshold is chosen on the held-out normal training images only (``cutswap.score.detector``: an order
statistic of their scores at the target false-positive rate ``evaluate.threshold_fpr``); the test labels
only measure what it gives (``threshold.test``). The densities are stored so that ``cutswap predict`` and
``cutswap export`` score new images with exactly the detector evaluated here (``cutswap.pipeline.readers.load_detector``).

The pixel metrics are computed from the float32 maps before they are stored; recomputing them from the
float16 maps gives the same numbers up to the ties float16 rounding creates (about 1e-3 relative).

The key covers the localization settings that change the maps or the metrics (for the chosen route
only, so changing ``gradcam_layer`` does not recompute ``patch`` runs) and the threshold settings
(``threshold_holdout``, ``threshold_fpr``), not batch sizes or the device.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cutswap.learn.execution import resolve_device
from cutswap.pipeline.parallel import current_worker
from cutswap.pipeline.readers import load_model, samples, train_indices
from cutswap.pipeline.settings import EvaluateSettings, Settings
from cutswap.pipeline.stores import StoreRef, build_store, open_store, write_array
from cutswap.pipeline.stores.arrays import SHARD
from cutswap.score.density import GaussianDensity
from cutswap.score.detector import Detector, choose_threshold, operating_point, threshold_split
from cutswap.score.localization import embed_images, fit_patch_density
from cutswap.score.metrics import FPR_LIMIT, METRIC_DEFINITIONS, f1_max, image_auroc, pixel_metrics

PIXEL_METRICS = ("pixel_AUROC", "pixel_AUPRO", "pixel_F1Max")


def localization_key(cfg: EvaluateSettings) -> dict[str, Any]:
    """The evaluate settings that change results, for the chosen localization route only."""
    if cfg.localization == "none":
        return {"localization": "none"}
    if cfg.localization == "patch":
        route = ("patch_size", "patch_stride", "sigma", "max_fit_patches")
    else:
        route = ("gradcam_layer",)
    return {
        "localization": cfg.localization,
        **{k: getattr(cfg, k) for k in route},
        "pixel_bins": cfg.pixel_bins,
    }


def evaluate_key(cfg: EvaluateSettings) -> dict[str, Any]:
    """What an evaluate store is keyed by: the localization route's settings and the threshold's."""
    return {
        **localization_key(cfg),
        "threshold_holdout": cfg.threshold_holdout,
        "threshold_fpr": cfg.threshold_fpr,
    }


def evaluate_run(
    settings: Settings, ingest: StoreRef, train: StoreRef, mode: str = "run"
) -> tuple[StoreRef, bool]:
    cfg = settings.evaluate

    def write(group):
        device = resolve_device(settings.train.device)
        source = open_store(ingest)
        images = source["images"][:]
        table = samples(source)
        test = np.flatnonzero((table["split"] == "test").to_numpy())
        fit, held = threshold_split(train_indices(source), cfg.threshold_holdout)
        model = load_model(train, device)
        bs = cfg.batch_size
        density = GaussianDensity.fit(embed_images(model, images[fit], bs, device))
        route = localization_key(cfg)
        start = time.perf_counter()
        patch_density = None
        if cfg.localization == "patch":
            patch_density = fit_patch_density(
                model,
                images[fit],
                cfg.patch_size,
                cfg.patch_stride,
                cfg.max_fit_patches,
                cfg.patch_batch_size,
                device,
            )
        fit_seconds = time.perf_counter() - start
        # The detector ``cutswap predict`` loads back: test images are scored by the same object.
        detector = Detector(
            model,
            density,
            route,
            images.shape[1],
            patch_density,
            batch_size=bs,
            patch_batch_size=cfg.patch_batch_size,
            device=device,
        )
        holdout_scores = detector.image_scores(images[held])
        threshold = choose_threshold(holdout_scores, cfg.threshold_fpr)
        scores = detector.image_scores(images[test])
        labels = table["label"].to_numpy()[test].astype(np.uint8)
        threshold["holdout"] = cfg.threshold_holdout
        threshold["test"] = operating_point(scores, labels, threshold["value"])
        arrays = [("scores", scores), ("labels", labels), ("index", test)]
        arrays += [("holdout_scores", holdout_scores), ("holdout_index", held)]
        arrays += [("density_mean", density.mean), ("density_precision", density.precision)]
        if patch_density is not None:
            arrays += [("patch_density_mean", patch_density.mean)]
            arrays += [("patch_density_precision", patch_density.precision)]
        for name, data in arrays:
            write_array(group, name, data, per_chunk=len(data) or 1, per_shard=len(data) or 1)
        metrics = {"image_AUROC": image_auroc(scores, labels), "image_F1Max": f1_max(scores, labels)}

        start = time.perf_counter()
        maps = detector.anomaly_maps(images[test])
        seconds = time.perf_counter() - start + fit_seconds
        scale = 1.0
        # An anomalous image without a ground-truth mask (a folder dataset without ``mask_dir``) would
        # count all its pixels as normal, so the pixel metrics are undefined rather than computed.
        unmasked = int((table["mask_path"].isna() & (table["label"] == 1)).to_numpy()[test].sum())
        if maps is None or unmasked:
            metrics.update(dict.fromkeys(PIXEL_METRICS, float("nan")))
        else:
            masks = source["masks"][:][test]
            metrics.update(pixel_metrics(maps, masks, FPR_LIMIT, cfg.pixel_bins))
        # The largest map value on held-out normal images: what a normal image reaches, for display.
        normal_max = None
        if maps is not None and len(held):
            normal_max = float(detector.anomaly_maps(images[held]).max())
        if maps is not None:
            scale = float(maps.max()) if len(maps) and maps.max() > 0 else 1.0
            write_array(group, "maps", (maps / scale).astype(np.float16), per_chunk=1, per_shard=SHARD)
        size = list(images.shape[1:3])
        group.attrs.update(
            {
                "metrics": metrics,
                "metric_definitions": METRIC_DEFINITIONS,
                "metric_resolution": size,
                "fpr_limit": FPR_LIMIT,
                "pixel_bins": cfg.pixel_bins,
                "localization": route,
                "threshold": threshold,
                "map_scale": scale,
                "holdout_map_max": normal_max,
                "map_seconds": round(seconds, 3),
                "n_train": int(len(fit)),
                "n_holdout": int(len(held)),
                "n_test": int(len(test)),
                "anomalous_without_mask": unmasked,
                "worker": current_worker() or "in-process",
            }
        )

    tattrs = open_store(train).attrs
    extra = {"method": tattrs["method"], "seed": tattrs["seed"], "category": ingest.name}
    return build_store(
        settings.storage_root,
        "evaluate",
        train.name,
        evaluate_key(cfg),
        {"ingest": ingest, "train": train},
        write,
        mode,
        extra,
    )
