"""Saliency: multilevel LayerCAM maps of every training image on a frozen ImageNet backbone.

Store layout (``storage/saliency/<category>-<key>/``)::

    maps     float16 (N, L, S, S)  one map per training image and level, min-max normalised to [0, 1]
    targets  int64   (N,)          ImageNet class whose score was back-propagated
    index    int64   (N,)          row of the image in the ingest store
    attrs    backbone: {name, sha256, source, fallback_reason}, levels

The key includes the resolved backbone and its weights hash, so ``backbone: auto`` resolving to another
network on another machine never reuses the wrong maps.
"""

from __future__ import annotations

from cutswap.backbones import load_backbone
from cutswap.saliency import SaliencyExtractor, saliency_maps
from cutswap.settings import Settings
from cutswap.stages.ingest import train_indices
from cutswap.stores import StoreRef, build_store, open_store, write_array
from cutswap.training import resolve_device


def saliency_category(settings: Settings, ingest: StoreRef, mode: str = "run") -> tuple[StoreRef, bool]:
    cfg = settings.saliency
    backbone = load_backbone(cfg.backbone, cfg.weights, cfg.allow_download)
    keyed = {
        **cfg.model_dump(exclude={"batch_size", "weights", "allow_download", "backbone"}),
        "backbone": backbone.provenance(),
    }
    keyed["backbone"].pop("source", None)  # where the file lies does not change the maps

    def write(group):
        source = open_store(ingest)
        index = train_indices(source)
        images = source["images"][:][index]
        device = resolve_device(settings.train.device)
        backbone.model.to(device)
        with SaliencyExtractor(backbone, cfg.levels, cfg.target_class, cfg.shallow_tanh) as extractor:
            maps, targets = saliency_maps(extractor, images, batch_size=cfg.batch_size, device=str(device))
        write_array(group, "maps", maps)
        write_array(group, "targets", targets, per_chunk=len(targets) or 1, per_shard=len(targets) or 1)
        write_array(group, "index", index, per_chunk=len(index) or 1, per_shard=len(index) or 1)
        group.attrs["device"] = str(device)

    extra = {"backbone": backbone.provenance(), "levels": cfg.levels}
    return build_store(
        settings.storage_root, "saliency", ingest.name, keyed, {"ingest": ingest}, write, mode, extra
    )
