"""Cluster: K centroids of each saliency map's values and its top cluster.

Store layout (``storage/cluster/<category>-<key>/``)::

    centroids  float32 (N, L, K)     ascending; the last one is the top cluster's
    top        bool    (N, L, S, S)  pixels whose hard label is the top cluster
"""

from __future__ import annotations

import numpy as np
import torch

from cutswap.clustering import cluster_maps
from cutswap.settings import Settings
from cutswap.stores import StoreRef, build_store, open_store, write_array

#: Maps clustered per call; bounded so memory stays flat on large categories.
BATCH_MAPS = 512


def cluster_category(settings: Settings, saliency: StoreRef, mode: str = "run") -> tuple[StoreRef, bool]:
    cfg = settings.cluster

    def write(group):
        maps = open_store(saliency)["maps"][:]
        n, levels, h, w = maps.shape
        flat = maps.reshape(n * levels, h, w)
        centroids, tops = [], []
        for start in range(0, flat.shape[0], BATCH_MAPS):
            chunk = torch.from_numpy(flat[start : start + BATCH_MAPS].astype(np.float32))
            c, top = cluster_maps(chunk, cfg.method, cfg.k, cfg.m, cfg.bins, cfg.max_iter, cfg.tol)
            centroids.append(c.cpu().numpy())
            tops.append(top.cpu().numpy())
        centroids_arr = np.concatenate(centroids).reshape(n, levels, cfg.k).astype(np.float32)
        write_array(group, "centroids", centroids_arr)
        write_array(group, "top", np.concatenate(tops).reshape(n, levels, h, w))

    return build_store(
        settings.storage_root, "cluster", saliency.name, cfg.model_dump(), {"saliency": saliency}, write, mode
    )
