"""Pairs: a bank of D patch-pair draws per saliency map, anchored in its top cluster, degrading by steps.

Store layout (``storage/pairs/<category>-<key>/``)::

    boxes     int32 (N, L, D, 6)   (h, w, y1, x1, y2, x2) per draw, at the working size
    step      uint8 (N, L, D)      the ladder step that made the draw (``cutswap.method.pairs.STEPS``: 0 top,
                                   1 top-extra, 2 smaller, 3 next-cluster, 4 random)
    fallback  bool  (N, L, D)      step == random: no guided step could place the pair, locations are random
    attrs     fallback_rate        share of random draws over all levels
              step_rates           {level name: {step name: share of that level's draws}}

Training samples one (level, draw) per negative from the image's slice, so the bank is computed once per
dataset and shared by every seed and schedule; the random-swap control reads the sizes of this bank. Map
``i`` of image ``n`` at level ``l`` is map ``n * L + l`` to the sampler, whose draws depend only on
(seed, map index): shard ranges give the same bank as one call. Level names come from the saliency store
that the cluster store was computed from (its ``inputs``).
"""

from __future__ import annotations

import functools

import numpy as np

from cutswap.method.pairs import STEP_RANDOM, STEPS, sample_pair_bank, step_counts
from cutswap.pipeline import parallel
from cutswap.pipeline.parallel import DaskPool, run_sharded
from cutswap.pipeline.settings import PairSettings, Settings
from cutswap.pipeline.stores import (
    StoreRef,
    build_store,
    empty_array,
    location_of,
    open_store,
    record_digests,
)
from cutswap.pipeline.stores.shards import open_for_shards


def _shard(
    start: int, stop: int, *, cluster: StoreRef, out: str, cfg: PairSettings
) -> tuple[list[list[int]], dict[str, str]]:
    """Samples images ``start:stop`` and writes their shards; returns per-level draw counts per step
    (L, steps) and the digests of what it wrote (``open_for_shards``: the store's commit reads nothing
    back)."""
    source = open_store(cluster)
    top = source["top"][start:stop]
    ranks = source["rank"][start:stop]
    n, levels, h, w = top.shape
    bank = sample_pair_bank(
        top.reshape(n * levels, h, w),
        cfg.draws,
        tuple(cfg.area),
        tuple(cfg.aspect),
        cfg.max_tries,
        cfg.seed,
        index_offset=start * levels,
        ranks=ranks.reshape(n * levels, h, w),
    )
    step = bank.step.reshape(n, levels, cfg.draws)
    group, digests = open_for_shards(out)
    group["boxes"][start:stop] = bank.boxes.reshape(n, levels, cfg.draws, 6)
    group["step"][start:stop] = step
    group["fallback"][start:stop] = bank.fallback.reshape(n, levels, cfg.draws)
    return [step_counts(step[:, level]).tolist() for level in range(levels)], digests


def level_names(cluster: StoreRef) -> list[str]:
    """The saliency levels of a cluster store, read from the saliency store it was computed from."""
    saliency = StoreRef.recorded(open_store(cluster).attrs["inputs"]["saliency"], cluster.root)
    return list(open_store(saliency).attrs["levels"])


def pairs_category(
    settings: Settings, cluster: StoreRef, mode: str = "run", dask: DaskPool | None = None
) -> tuple[StoreRef, bool]:
    cfg = settings.pairs

    def write(group):
        n, levels = open_store(cluster)["top"].shape[:2]
        empty_array(group, "boxes", (n, levels, cfg.draws, 6), "int32", per_shard=parallel.SHARD)
        empty_array(group, "step", (n, levels, cfg.draws), "uint8", per_shard=parallel.SHARD)
        empty_array(group, "fallback", (n, levels, cfg.draws), "bool", per_shard=parallel.SHARD)
        shard = functools.partial(_shard, cluster=cluster, out=location_of(group), cfg=cfg)
        counts = np.zeros((levels, len(STEPS)), dtype=np.int64)
        workers: list[str] = []
        for part, digests in run_sharded(shard, n, dask, parallel.SHARD, workers):
            counts += np.asarray(part, dtype=np.int64)
            record_digests(group, digests)
        group.attrs["workers"] = sorted(set(workers))
        per_level = max(n * cfg.draws, 1)
        group.attrs["fallback_rate"] = float(counts[:, STEP_RANDOM].sum()) / (per_level * levels)
        group.attrs["step_rates"] = {
            name: {step: float(c) / per_level for step, c in zip(STEPS, row, strict=True)}
            for name, row in zip(level_names(cluster), counts.tolist(), strict=True)
        }

    return build_store(
        settings.storage_root, "pairs", cluster.name, cfg.model_dump(), {"cluster": cluster}, write, mode
    )
