"""Cluster: K centroids of each saliency map's values, its top cluster and every pixel's cluster rank.

Store layout (``storage/cluster/<category>-<key>/``)::

    centroids  float32 (N, L, K)     ascending; the last one is the top cluster's
    top        bool    (N, L, S, S)  pixels whose hard label is the top cluster
    rank       uint8   (N, L, S, S)  the pixel's cluster counted from the top by distinct centroid: 0 = top
                                     (equal to ``top``), 1 = next, ...; 255 (``UNRANKED``) on constant maps.
                                     The pairs stage falls back to ranks <= 1 when the top cluster fails.

Computed in shard-sized ranges of images (all their levels at once), one task per range.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from cutswap.method.clustering import cluster_maps, cluster_ranks
from cutswap.pipeline import parallel
from cutswap.pipeline.parallel import DaskPool, run_sharded
from cutswap.pipeline.settings import ClusterSettings, Settings
from cutswap.pipeline.stores import StoreRef, build_store, empty_array, location_of, open_group, open_store


def _shard(start: int, stop: int, *, saliency: StoreRef, out: str, cfg: ClusterSettings) -> None:
    maps = open_store(saliency)["maps"][start:stop]
    n, levels, h, w = maps.shape
    flat = torch.from_numpy(maps.reshape(n * levels, h, w).astype(np.float32))
    centroids, top = cluster_maps(flat, cfg.method, cfg.k, cfg.m, cfg.bins, cfg.max_iter, cfg.tol)
    group = open_group(out, mode="r+")
    group["centroids"][start:stop] = centroids.cpu().numpy().reshape(n, levels, cfg.k).astype(np.float32)
    group["top"][start:stop] = top.cpu().numpy().reshape(n, levels, h, w)
    group["rank"][start:stop] = cluster_ranks(flat, centroids).cpu().numpy().reshape(n, levels, h, w)


def cluster_category(
    settings: Settings, saliency: StoreRef, mode: str = "run", dask: DaskPool | None = None
) -> tuple[StoreRef, bool]:
    cfg = settings.cluster

    def write(group):
        n, levels, h, w = open_store(saliency)["maps"].shape
        empty_array(group, "centroids", (n, levels, cfg.k), "float32", per_shard=parallel.SHARD)
        empty_array(group, "top", (n, levels, h, w), "bool", per_shard=parallel.SHARD)
        empty_array(group, "rank", (n, levels, h, w), "uint8", per_shard=parallel.SHARD)
        shard = functools.partial(_shard, saliency=saliency, out=location_of(group), cfg=cfg)
        workers: list[str] = []
        run_sharded(shard, n, dask, parallel.SHARD, workers)
        group.attrs["workers"] = sorted(set(workers))

    return build_store(
        settings.storage_root, "cluster", saliency.name, cfg.model_dump(), {"saliency": saliency}, write, mode
    )
