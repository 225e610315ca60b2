"""Pairs: a bank of D patch-pair draws per saliency map, sampled from its top cluster.

Store layout (``storage/pairs/<category>-<key>/``)::

    boxes     int32 (N, L, D, 6)   (h, w, y1, x1, y2, x2) per draw, at the working size
    fallback  bool  (N, L, D)      the draw used random locations (top cluster could not anchor a pair)
    attrs     fallback_rate

Training samples one (level, draw) per negative from the image's slice, so the bank is computed once per
dataset and shared by every seed and schedule.
"""

from __future__ import annotations

from cutswap.pairs import sample_pair_bank
from cutswap.settings import Settings
from cutswap.stores import StoreRef, build_store, open_store, write_array


def pairs_category(settings: Settings, cluster: StoreRef, mode: str = "run") -> tuple[StoreRef, bool]:
    cfg = settings.pairs

    def write(group):
        top = open_store(cluster)["top"][:]
        n, levels, h, w = top.shape
        bank = sample_pair_bank(
            top.reshape(n * levels, h, w),
            cfg.draws,
            tuple(cfg.area),
            tuple(cfg.aspect),
            cfg.max_tries,
            cfg.seed,
        )
        write_array(group, "boxes", bank.boxes.reshape(n, levels, cfg.draws, 6))
        write_array(group, "fallback", bank.fallback.reshape(n, levels, cfg.draws))
        group.attrs["fallback_rate"] = float(bank.fallback.mean()) if bank.fallback.size else 0.0

    return build_store(
        settings.storage_root, "pairs", cluster.name, cfg.model_dump(), {"cluster": cluster}, write, mode
    )
