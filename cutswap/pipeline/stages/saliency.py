"""Saliency: multilevel LayerCAM (or Grad-CAM) maps of every training image on a frozen ImageNet backbone.

Store layout (``storage/saliency/<category>-<key>/``)::

    maps     float16 (N, L, S, S)  one map per training image and level, min-max normalised to [0, 1]
    targets  int64   (N,)          ImageNet class whose score was back-propagated
    index    int64   (N,)          row of the image in the ingest store
    attrs    backbone: {name, sha256, source, fallback_reason}, levels, input_size, cam, device

``S`` is the working size (``dataset.image_size``) whatever ``saliency.input_size``: the backbone sees each
image resized to ``input_size`` squared (224 by default, so that a stride-32 deep level keeps 7 x 7 cells
instead of collapsing to one or two at small working sizes), and each level's map is resampled from its own
resolution straight to ``S``; ``input_size: null`` runs the backbone at ``S`` (see
:mod:`cutswap.method.saliency`). ``input_size`` is part of the key and recorded in the attrs.

``saliency.cam`` picks LayerCAM (``layercam``, CutSwap's) or Grad-CAM (``gradcam``, the ablation of the
saliency source). It is recorded in the attrs always but keyed only when it is ``gradcam``
(:func:`saliency_key`): the setting came after stores were made, and LayerCAM maps keep the keys they
had, so existing stores stay reusable.

The key includes the resolved backbone and its weights hash, so ``backbone: auto`` resolving to another
network on another machine never reuses the wrong maps. The backbone is resolved once, in the process that
keys the store; its workers load exactly that name and hash (``load_exact_backbone``) and fail rather than
compute with other weights. Images are processed in shard-sized ranges, each
written by one task (a Dask worker, or this process), so the store is the same with any worker count.
"""

from __future__ import annotations

import functools
from pathlib import Path

from cutswap.method.backbones import Backbone, load_backbone, load_exact_backbone
from cutswap.method.saliency import SaliencyExtractor, saliency_maps
from cutswap.pipeline import parallel
from cutswap.pipeline.parallel import DaskPool, run_sharded, worker_device
from cutswap.pipeline.readers import train_indices
from cutswap.pipeline.settings import SaliencySettings, Settings
from cutswap.pipeline.stores import (
    StoreRef,
    build_store,
    empty_array,
    location_of,
    open_store,
    record_digests,
    write_array,
)
from cutswap.pipeline.stores.shards import open_for_shards


@functools.lru_cache(maxsize=4)
def _backbone(name: str, weights: Path | None, allow_download: bool) -> Backbone:
    """The run's backbone, resolved from the settings (``auto`` included) once per process."""
    return load_backbone(name, weights, allow_download)


@functools.lru_cache(maxsize=4)
def _exact_backbone(name: str, sha256: str, source: str | None, allow_download: bool) -> Backbone:
    """One loaded backbone per process and resolved choice (workers reuse it across shards)."""
    return load_exact_backbone(name, sha256, source, allow_download)


def _shard(
    start: int, stop: int, *, ingest: StoreRef, out: str, cfg: SaliencySettings, resolved: dict, device: str
) -> dict[str, str]:
    """Computes images ``start:stop`` and writes their shards; returns the digests of what it wrote
    (``open_for_shards``), so that the store's commit reads nothing back."""
    source = open_store(ingest)
    index = train_indices(source)[start:stop]
    images = source["images"].get_orthogonal_selection((index,))
    backbone = _exact_backbone(resolved["name"], resolved["sha256"], resolved["source"], cfg.allow_download)
    dev = worker_device(device)
    with SaliencyExtractor(
        backbone, cfg.levels, cfg.target_class, cfg.shallow_tanh, input_size=cfg.input_size, cam=cfg.cam
    ) as extractor:
        maps, targets = saliency_maps(extractor, images, batch_size=cfg.batch_size, device=dev)
    group, digests = open_for_shards(out)
    group["maps"][start:stop] = maps
    group["targets"][start:stop] = targets
    return digests


def saliency_key(cfg: SaliencySettings, backbone_provenance: dict) -> dict:
    """The settings a saliency store is keyed by: what changes the maps, and only that.

    Left out: how the work is batched and where the weights file lies (``batch_size``, ``weights``,
    ``allow_download``, the provenance's ``source``), and the requested ``backbone`` name, replaced by the
    resolved backbone and its weights hash. ``cam`` is left out at ``layercam`` so that LayerCAM stores keep
    the keys they had before the setting existed; ``gradcam`` maps differ and are keyed by it.
    """
    exclude = {"batch_size", "weights", "allow_download", "backbone"}
    if cfg.cam == "layercam":
        exclude.add("cam")
    backbone = {k: v for k, v in backbone_provenance.items() if k != "source"}
    return {**cfg.model_dump(exclude=exclude), "backbone": backbone}


def saliency_category(
    settings: Settings, ingest: StoreRef, mode: str = "run", dask: DaskPool | None = None
) -> tuple[StoreRef, bool]:
    cfg = settings.saliency
    backbone = _backbone(cfg.backbone, cfg.weights, cfg.allow_download)
    keyed = saliency_key(cfg, backbone.provenance())

    def write(group):
        index = train_indices(open_store(ingest))
        size = settings.dataset.image_size
        empty_array(
            group, "maps", (len(index), len(cfg.levels), size, size), "float16", per_shard=parallel.SHARD
        )
        empty_array(group, "targets", (len(index),), "int64", per_shard=parallel.SHARD)
        write_array(group, "index", index, per_chunk=len(index) or 1, per_shard=len(index) or 1)
        shard = functools.partial(
            _shard,
            ingest=ingest,
            out=location_of(group),
            cfg=cfg,
            resolved=backbone.provenance(),
            device=settings.train.device,
        )
        workers: list[str] = []
        for digests in run_sharded(shard, len(index), dask, parallel.SHARD, workers):
            record_digests(group, digests)
        group.attrs["workers"] = sorted(set(workers))
        group.attrs["device"] = worker_device(settings.train.device) if dask is None else "dask workers"

    extra = {
        "backbone": backbone.provenance(),
        "levels": cfg.levels,
        "input_size": cfg.input_size,
        "cam": cfg.cam,
    }
    return build_store(
        settings.storage_root, "saliency", ingest.name, keyed, {"ingest": ingest}, write, mode, extra
    )
