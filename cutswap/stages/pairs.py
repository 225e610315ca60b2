"""Pairs: a bank of D patch-pair draws per saliency map, sampled from its top cluster.

Store layout (``storage/pairs/<category>-<key>/``)::

    boxes     int32 (N, L, D, 6)   (h, w, y1, x1, y2, x2) per draw, at the working size
    fallback  bool  (N, L, D)      the draw used random locations (top cluster could not anchor a pair)
    attrs     fallback_rate

Training samples one (level, draw) per negative from the image's slice, so the bank is computed once per
dataset and shared by every seed and schedule. Map ``i`` of image ``n`` at level ``l`` is map
``n * L + l`` to the sampler, whose draws depend only on (seed, map index): shard ranges give the same bank
as one call.
"""

from __future__ import annotations

import functools

import zarr

from cutswap import parallel
from cutswap.pairs import sample_pair_bank
from cutswap.parallel import Cluster, run_sharded
from cutswap.settings import PairSettings, Settings
from cutswap.stores import StoreRef, build_store, empty_array, open_store, store_dir


def _shard(start: int, stop: int, *, cluster: str, out: str, cfg: PairSettings) -> float:
    top = open_store(cluster)["top"][start:stop]
    n, levels, h, w = top.shape
    bank = sample_pair_bank(
        top.reshape(n * levels, h, w),
        cfg.draws,
        tuple(cfg.area),
        tuple(cfg.aspect),
        cfg.max_tries,
        cfg.seed,
        index_offset=start * levels,
    )
    group = zarr.open_group(out, mode="r+")
    group["boxes"][start:stop] = bank.boxes.reshape(n, levels, cfg.draws, 6)
    group["fallback"][start:stop] = bank.fallback.reshape(n, levels, cfg.draws)
    return float(bank.fallback.sum())


def pairs_category(
    settings: Settings, cluster: StoreRef, mode: str = "run", dask: Cluster | None = None
) -> tuple[StoreRef, bool]:
    cfg = settings.pairs

    def write(group):
        n, levels = open_store(cluster)["top"].shape[:2]
        empty_array(group, "boxes", (n, levels, cfg.draws, 6), "int32", per_shard=parallel.SHARD)
        empty_array(group, "fallback", (n, levels, cfg.draws), "bool", per_shard=parallel.SHARD)
        shard = functools.partial(_shard, cluster=cluster.path, out=str(store_dir(group)), cfg=cfg)
        fallbacks = run_sharded(shard, n, dask, parallel.SHARD)
        group.attrs["fallback_rate"] = sum(fallbacks) / max(n * levels * cfg.draws, 1)

    return build_store(
        settings.storage_root, "pairs", cluster.name, cfg.model_dump(), {"cluster": cluster}, write, mode
    )
