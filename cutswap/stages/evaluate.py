"""Evaluate: score and localize every test image of a category with one trained classifier.

Store layout (``storage/evaluate/<category>-<method>-s<seed>-<key>/``)::

    scores  float64 (T,)       Mahalanobis distance of each test image's embedding (larger = more anomalous)
    labels  uint8   (T,)       1 = anomalous
    index   int64   (T,)       row of the image in the ingest store
    maps    float16 (T, S, S)  anomaly map of each test image divided by ``map_scale`` (so in [0, 1]); one
                               map per chunk, 128 per shard; absent when ``localization`` is ``none``
    attrs   metrics: {image_AUROC, image_F1Max, pixel_AUROC, pixel_AUPRO, pixel_F1Max} (NaN: undefined, no
            maps, or anomalous test images without masks: ``anomalous_without_mask`` > 0),
            metric_definitions: {name: text}, metric_resolution: [S, S] (the working size the
            pixel metrics were computed at, not the original image size), fpr_limit, pixel_bins,
            localization: {the settings that made the maps}, map_scale, map_seconds, n_train, n_test,
            method, seed, category, worker (Dask worker or in-process)

The pixel metrics are computed from the float32 maps before they are stored; recomputing them from the
float16 maps gives the same numbers up to the ties float16 rounding creates (about 1e-3 relative).

The key covers the localization settings that change the maps or the metrics (for the chosen route
only, so changing ``gradcam_layer`` does not recompute ``patch`` runs), not batch sizes or the device.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from cutswap.density import GaussianDensity
from cutswap.execution import resolve_device
from cutswap.localization import embed_images, gradcam_maps, patch_maps
from cutswap.metrics import FPR_LIMIT, METRIC_DEFINITIONS, f1_max, image_auroc, pixel_metrics
from cutswap.parallel import current_worker
from cutswap.readers import load_model, samples, train_indices
from cutswap.settings import EvaluateSettings, Settings
from cutswap.stores import StoreRef, build_store, open_store, write_array

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


def anomaly_maps(
    cfg: EvaluateSettings, model, train_images: np.ndarray, test_images: np.ndarray, device: torch.device
) -> np.ndarray | None:
    """float32 (T, S, S) maps of the test images by the configured route; None for ``none``, and for
    ``gradcam`` of the no-training baseline, which has no anomaly logit to explain (pixel metrics NaN)."""
    if cfg.localization == "patch":
        return patch_maps(
            model,
            train_images,
            test_images,
            cfg.patch_size,
            cfg.patch_stride,
            cfg.sigma,
            cfg.max_fit_patches,
            cfg.patch_batch_size,
            device,
        )
    if cfg.localization == "gradcam" and model.classifier.out_features > 1:
        return gradcam_maps(model, test_images, cfg.gradcam_layer, cfg.batch_size, device)
    return None


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
        fit = train_indices(source)
        model = load_model(train, device)
        bs = cfg.batch_size
        density = GaussianDensity.fit(embed_images(model, images[fit], bs, device))
        scores = density.score(embed_images(model, images[test], bs, device))
        labels = table["label"].to_numpy()[test].astype(np.uint8)
        for name, data in (("scores", scores), ("labels", labels), ("index", test)):
            write_array(group, name, data, per_chunk=len(data) or 1, per_shard=len(data) or 1)
        metrics = {"image_AUROC": image_auroc(scores, labels), "image_F1Max": f1_max(scores, labels)}

        start = time.perf_counter()
        maps = anomaly_maps(cfg, model, images[fit], images[test], device)
        seconds = time.perf_counter() - start
        scale = 1.0
        # An anomalous image without a ground-truth mask (a folder dataset without ``mask_dir``) would
        # count all its pixels as normal, so the pixel metrics are undefined rather than computed.
        unmasked = int((table["mask_path"].isna() & (table["label"] == 1)).to_numpy()[test].sum())
        if maps is None or unmasked:
            metrics.update(dict.fromkeys(PIXEL_METRICS, float("nan")))
        else:
            masks = source["masks"][:][test]
            metrics.update(pixel_metrics(maps, masks, FPR_LIMIT, cfg.pixel_bins))
        if maps is not None:
            scale = float(maps.max()) if len(maps) and maps.max() > 0 else 1.0
            write_array(group, "maps", (maps / scale).astype(np.float16), per_chunk=1, per_shard=128)
        size = list(images.shape[1:3])
        group.attrs.update(
            {
                "metrics": metrics,
                "metric_definitions": METRIC_DEFINITIONS,
                "metric_resolution": size,
                "fpr_limit": FPR_LIMIT,
                "pixel_bins": cfg.pixel_bins,
                "localization": localization_key(cfg),
                "map_scale": scale,
                "map_seconds": round(seconds, 3),
                "n_train": int(len(fit)),
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
        localization_key(cfg),
        {"ingest": ingest, "train": train},
        write,
        mode,
        extra,
    )
