"""Saliency maps to a CutSwap pair bank in one call: cluster each map, then draw patch pairs in its top.

The pipeline does this in two stages (cluster, pairs) with stores between them; this is the same
computation for a researcher's own maps, with the same defaults and the same draws (map ``i * L + l`` of
an ``(N, L, H, W)`` stack is seeded as the pairs stage seeds it), so a bank built here equals the
pipeline's for the same maps and settings::

    maps     float (N, L, H, W) in [0, 1], or (N, H, W) for one level (``cutswap.LayerCAM``)
    returns  one ``PairBank`` per level (boxes (N, D, 6) = h, w, y1, x1, y2, x2; step (N, D)),
             or one ``PairBank`` for (N, H, W) maps
"""

from __future__ import annotations

import numpy as np
import torch

from cutswap.method.clustering import cluster_maps, cluster_ranks
from cutswap.method.pairs import PairBank, sample_pair_bank
from cutswap.method.transforms import CUTPASTE_AREA, CUTPASTE_ASPECT


def build_pair_bank(
    maps: np.ndarray | torch.Tensor,
    draws: int = 64,
    area: tuple[float, float] = CUTPASTE_AREA,
    aspect: tuple[float, float] = CUTPASTE_ASPECT,
    *,
    method: str = "fcm",
    k: int = 3,
    m: float = 2.0,
    bins: int | None = 1024,
    max_iter: int = 100,
    tol: float = 1e-5,
    max_tries: int = 20,
    seed: int = 0,
) -> PairBank | list[PairBank]:
    """Cluster saliency maps and draw ``draws`` patch pairs per map (``docs/method.md``).

    Args:
        maps: see the module docstring; finite values.
        draws: pairs per map.
        area, aspect: patch-size ranges (CutPaste's by default).
        method, k, m, bins, max_iter, tol: the clustering (``cutswap.method.clustering.cluster_maps``).
        max_tries, seed: the pair sampler (``cutswap.method.pairs.sample_pair_bank``).

    Raises:
        ValueError: maps of the wrong shape or non-finite, or a setting out of range.
    """
    t = torch.from_numpy(np.asarray(maps)) if not isinstance(maps, torch.Tensor) else maps.detach().cpu()
    if t.dim() not in (3, 4):
        raise ValueError(f"maps must be (N, L, H, W) or (N, H, W), got shape {tuple(t.shape)}")
    single = t.dim() == 3
    if single:
        t = t.unsqueeze(1)
    n, levels, h, w = t.shape
    flat = t.reshape(n * levels, h, w).float()
    centroids, top = cluster_maps(flat, method, k, m, bins, max_iter, tol)
    ranks = cluster_ranks(flat, centroids)
    bank = sample_pair_bank(
        top.numpy(), draws, tuple(area), tuple(aspect), max_tries, seed, ranks=ranks.numpy()
    )
    boxes = bank.boxes.reshape(n, levels, draws, 6)
    step = bank.step.reshape(n, levels, draws)
    per_level = [
        PairBank(np.ascontiguousarray(boxes[:, lv]), np.ascontiguousarray(step[:, lv]))
        for lv in range(levels)
    ]
    return per_level[0] if single else per_level
