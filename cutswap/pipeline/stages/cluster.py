"""Cluster: K centroids of each saliency map's values, its anchor pixels and every pixel's rank.

Store layout (``storage/cluster/<category>-<key>/``)::

    centroids  float32 (N, L, K)     ascending; the last one is the top cluster's. NaN under
                                     ``anchor: threshold``, which does not cluster.
    top        bool    (N, L, S, S)  the anchor pixels under ``cluster.anchor`` (``top``: the pixels whose
                                     hard label is the top cluster)
    rank       uint8   (N, L, S, S)  the ladder's nearness to the anchor, 0 = ``top`` exactly; 255
                                     (``UNRANKED``) on constant maps. ``top``: the pixel's cluster counted
                                     from the top by distinct centroid (0 top, 1 next, ...); ``random``:
                                     ``|rank - chosen rank|`` (1 = the chosen cluster's neighbours);
                                     ``threshold``: 0 at >= threshold, 1 at >= threshold / 2, 2 elsewhere.
                                     The pairs stage falls back to ranks <= 1 when the anchor fails.
    attrs      anchor                the rule (``top``, ``random`` or ``threshold``)

Anchor rules (``cluster.anchor``, :mod:`cutswap.method.clustering`): ``top`` is CutSwap's; ``random`` (a
cluster drawn per map, from ``cluster.seed`` and the map's index ``n * L + l`` in the store, so shards agree
with one call) and ``threshold`` (the pixels at or above ``cluster.threshold``, no clustering) are ablations.
Under every rule a constant map has an empty anchor and ``UNRANKED`` ranks (the ladder then places its pairs
at random, as it always has for ``top``); the pairs stage reads ``top`` and ``rank`` only, whatever the rule.

Key (:func:`cluster_key`): under ``top`` the settings of earlier runs (``anchor``, ``threshold`` and ``seed``
left out, so existing stores keep their keys); otherwise ``anchor`` plus the one setting the rule reads.

Computed in shard-sized ranges of images (all their levels at once), one task per range.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from cutswap.method.clustering import (
    cluster_maps,
    cluster_ranks,
    random_cluster_choice,
    random_cluster_mask,
    random_cluster_ranks,
    threshold_mask,
    threshold_ranks,
)
from cutswap.pipeline import parallel
from cutswap.pipeline.parallel import DaskPool, run_sharded
from cutswap.pipeline.settings import ClusterSettings, Settings
from cutswap.pipeline.stores import (
    StoreRef,
    build_store,
    empty_array,
    location_of,
    open_store,
    record_digests,
)
from cutswap.pipeline.stores.shards import open_for_shards


def cluster_key(cfg: ClusterSettings) -> dict:
    """The settings a cluster store is keyed by.

    ``anchor``, ``threshold`` and ``seed`` came after stores were made: under ``top`` (their default rule)
    they are left out, so the keys of existing stores stay what they were. ``random`` is keyed with its
    ``seed`` and ``threshold`` with its threshold; the setting the rule does not read is left out, so it
    cannot split identical stores. Under ``threshold`` the clustering settings (method, k, m, bins, max_iter,
    tol) do not change ``top`` or ``rank``, but they stay in the key: ``k`` sets the shape of the (NaN)
    centroids array, and one key layout for every rule is simpler than a saving of a recomputed store.
    """
    exclude = {"anchor", "threshold", "seed"}
    if cfg.anchor == "random":
        exclude -= {"anchor", "seed"}
    elif cfg.anchor == "threshold":
        exclude -= {"anchor", "threshold"}
    return cfg.model_dump(exclude=exclude)


def _anchor(
    flat: torch.Tensor, cfg: ClusterSettings, index_offset: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(centroids (B, K), top (B, H, W) bool, rank (B, H, W) uint8)`` of maps ``(B, H, W)`` under the rule;
    map 0 is map ``index_offset`` of the store (the ``random`` rule's draws depend on it)."""
    if cfg.anchor == "threshold":
        centroids = torch.full((flat.shape[0], cfg.k), torch.nan, dtype=torch.float64)
        return centroids, threshold_mask(flat, cfg.threshold), threshold_ranks(flat, cfg.threshold)
    centroids, top = cluster_maps(flat, cfg.method, cfg.k, cfg.m, cfg.bins, cfg.max_iter, cfg.tol)
    ranks = cluster_ranks(flat, centroids)
    if cfg.anchor == "random":
        chosen = random_cluster_choice(centroids, cfg.seed, index_offset)
        return centroids, random_cluster_mask(ranks, chosen), random_cluster_ranks(ranks, chosen)
    return centroids, top, ranks


def _shard(start: int, stop: int, *, saliency: StoreRef, out: str, cfg: ClusterSettings) -> dict[str, str]:
    """Clusters the maps of images ``start:stop`` and writes their shards; returns the digests of what it
    wrote (``open_for_shards``), so that the store's commit reads nothing back."""
    maps = open_store(saliency)["maps"][start:stop]
    n, levels, h, w = maps.shape
    flat = torch.from_numpy(maps.reshape(n * levels, h, w).astype(np.float32))
    centroids, top, rank = _anchor(flat, cfg, start * levels)
    group, digests = open_for_shards(out)
    group["centroids"][start:stop] = centroids.cpu().numpy().reshape(n, levels, cfg.k).astype(np.float32)
    group["top"][start:stop] = top.cpu().numpy().reshape(n, levels, h, w)
    group["rank"][start:stop] = rank.cpu().numpy().reshape(n, levels, h, w)
    return digests


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
        for digests in run_sharded(shard, n, dask, parallel.SHARD, workers):
            record_digests(group, digests)
        group.attrs["workers"] = sorted(set(workers))

    return build_store(
        settings.storage_root,
        "cluster",
        saliency.name,
        cluster_key(cfg),
        {"saliency": saliency},
        write,
        mode,
        {"anchor": cfg.anchor},
    )
