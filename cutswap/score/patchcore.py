"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022): the
strongest detector that trains nothing, as a method row beside the Gaussian density of pooled features.

Inputs are uint8 images (N, S, S, 3) at the working size and a frozen ImageNet trunk
(``cutswap.learn.models.ProjectionNet``); nothing is trained.

Patch features (``patch_features``)
    The trunk's mid-level stages ``LAYERS`` (``layer2`` and ``layer3``: strides 8 and 16; ResNet-18's
    stages, or EfficientNet-Lite0's levels 2 and 3), each averaged over its 3 x 3 neighbourhood (stride 1,
    so every position keeps its own vector but sees its surroundings, the paper's local aggregation; the
    zero padding at the border counts, as in the authors' code and anomalib's), the
    deeper one bilinearly upsampled to the shallower grid, and concatenated: (N, h, w, D) with
    ``h = w = S / 8`` and D = 128 + 256 (ResNet-18) or 40 + 112 (EfficientNet-Lite0). Deep stages are left
    out because they are ImageNet-specific and coarse; the paper's projection of each stage to a common
    width is not needed at these widths.
Memory bank (``greedy_coreset``)
    The patch features of all normal training images, reduced to a ``fraction`` by greedy k-center
    selection: start from one patch, repeatedly add the patch farthest from those chosen. Distances are
    measured after a fixed Gaussian random projection to ``PROJECTION_DIM`` dimensions (Johnson-
    Lindenstrauss), as the paper does to make the selection cheap; the bank keeps the full features.
Scores (``PatchCore``)
    Each test patch's Euclidean distance to its nearest neighbour in the bank; the image score is the
    largest patch score (the paper's reweighting by the neighbour's own neighbourhood, a second search per
    image, is left out). Maps: the (h, w) patch scores bilinearly upsampled to
    S x S, then a Gaussian blur of ``sigma`` px (scipy's ``mode="nearest"``, as the ``patch`` route).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cutswap.learn.models import to_channels_last

#: The trunk stages whose features PatchCore uses (mid-level: local, and not ImageNet-specific).
LAYERS = ("layer2", "layer3")
#: Dimensions of the random projection the coreset selection measures distances in.
PROJECTION_DIM = 128
#: How neighbourhoods are aggregated; part of a PatchCore store's key (it changes every feature).
AGGREGATION = "3x3 mean, zero padding counted"
#: Test patches per nearest-neighbour block: bounds the (block, bank) distance matrix in memory.
SEARCH_BLOCK = 4096
#: Farthest patches whose distances the coreset selection computes together (``greedy_coreset``): 32
#: served 1228 greedy steps with 55 matrix products on 122,880 patches of MVTec-sized images.
CORESET_BLOCK = 32


def aggregate(stage_maps: list[torch.Tensor]) -> torch.Tensor:
    """(B, h, w, D) patch features from stage feature maps (B, C_i, h_i, w_i), shallow first: each
    averaged over its 3 x 3 neighbourhood, upsampled to the first one's grid, concatenated."""
    size = stage_maps[0].shape[-2:]
    out = []
    for x in stage_maps:
        x = F.avg_pool2d(x.float(), 3, stride=1, padding=1)  # zero padding counted, as the reference code
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out.append(x)
    return torch.cat(out, dim=1).permute(0, 2, 3, 1)


@torch.inference_mode()
def patch_features(model, images: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
    """(N, h, w, D) float32 patch features of uint8 (N, S, S, 3) images, on ``device``."""
    to_channels_last(model)  # as ``cutswap.score.localization.embed_batches``
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
        x = (batch.permute(0, 3, 1, 2).float() / 255).contiguous(memory_format=torch.channels_last)
        out.append(aggregate(model.stage_features(x, LAYERS)))
    return torch.cat(out)


def random_projection(dim: int, seed: int = 0) -> torch.Tensor:
    """(dim, PROJECTION_DIM) Gaussian projection scaled to keep distances on average (identity when
    ``dim`` is already small); fixed by ``seed`` so a coreset is the same on every run."""
    if dim <= PROJECTION_DIM:
        return torch.eye(dim)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(dim, PROJECTION_DIM, generator=g) / PROJECTION_DIM**0.5


def greedy_coreset(features: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices (K,) of the greedy k-center coreset of (M, D) ``features``, K = ceil(fraction * M).

    Starts at a patch drawn with ``seed``; each step adds the patch whose distance to the chosen set (in
    the projected space) is largest, as squared distances (the same order, no square root).

    Why in blocks: a step needs every patch's distance to the patch just chosen, and computed one step at
    a time that is a matrix-vector product which reads all M projected patches for 2 M flops, so the
    selection waits on memory (53 s per MVTec AD category at 256 px on 2 CPU cores). The next picks are
    almost always among the patches now farthest from the chosen set, so the distances to the
    ``CORESET_BLOCK`` farthest are computed together, in one matrix product (compute-bound), and the
    greedy steps then take their columns as long as each pick is one of them; a pick outside the block
    starts a new one. The selection is the same greedy one; a column from a matrix product may differ
    from a matrix-vector product's in the last bit, so an exact tie can be broken the other way
    (``tests/cutswap/score/test_patchcore.py`` checks the picks against a plain NumPy greedy;
    ``benchmarks/bench_patchcore.py`` times both and counts the equal picks).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"evaluate.coreset_fraction must be in (0, 1], got {fraction}")
    m = len(features)
    k = max(1, int(np.ceil(fraction * m)))
    if k >= m:
        return torch.arange(m, device=features.device)
    z = features.float() @ random_projection(features.shape[1], seed).to(features.device)
    norms = (z * z).sum(1)

    def squared_distances(rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), M): |c - z|^2 = |c|^2 - 2 c.z + |z|^2 in one matrix product; a row per candidate,
        so that a step reads its distances contiguously."""
        return (norms[rows, None] - 2 * (z[rows] @ z.T) + norms).clamp_min_(0)

    chosen = torch.empty(k, dtype=torch.long, device=features.device)
    chosen[0] = int(torch.randint(m, (1,), generator=torch.Generator().manual_seed(seed)))
    nearest = squared_distances(chosen[:1])[0]
    columns: dict[int, int] = {}
    block = None
    for i in range(1, k):
        pick = int(torch.argmax(nearest))
        chosen[i] = pick
        if pick not in columns:
            candidates = torch.topk(nearest, min(CORESET_BLOCK, m)).indices
            block = squared_distances(candidates)
            columns = {int(c): j for j, c in enumerate(candidates.tolist())}
        torch.minimum(nearest, block[columns[pick]], out=nearest)
    return chosen


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(Q,) Euclidean distance of each (Q, D) query to its nearest row of (K, D) ``bank``.

    Blocks of ``SEARCH_BLOCK`` queries; squared distances expanded as ``|q|^2 - 2 q.b + |b|^2`` (one matrix
    product per block), clamped at 0 against rounding.
    """
    bank = bank.float()
    out = [nearest_block(queries[s : s + SEARCH_BLOCK], bank) for s in range(0, len(queries), SEARCH_BLOCK)]
    return torch.cat(out) if out else torch.zeros(0, device=queries.device)


def nearest_block(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """``nearest_distances`` of one block in one matrix product: what the exported graph runs, where the
    batch size is symbolic and a Python loop over it cannot be traced."""
    q = queries.float()
    d2 = (q * q).sum(1, keepdim=True) - 2 * q @ bank.T + (bank * bank).sum(1)
    return d2.min(dim=1).values.clamp_min(0).sqrt()


@dataclass(frozen=True)
class PatchCore:
    """A fitted PatchCore scorer: the memory bank and how maps are made.

    Attributes:
        memory_bank: (K, D) float32 coreset of the normal training patches' features.
        sigma: the maps' Gaussian blur in pixels (0: none).
        fraction: the coreset fraction it was built with (recorded, not used to score).
    """

    memory_bank: np.ndarray
    sigma: float = 4.0
    fraction: float = 0.1

    @classmethod
    def fit(
        cls,
        model,
        images: np.ndarray,
        fraction: float,
        sigma: float,
        batch_size: int,
        device: torch.device,
        seed: int = 0,
    ) -> PatchCore:
        """The memory bank of normal ``images`` (module docstring)."""
        features = patch_features(model, images, batch_size, device)
        flat = features.reshape(-1, features.shape[-1])
        bank = flat[greedy_coreset(flat, fraction, seed)]
        return cls(bank.cpu().numpy().astype(np.float32), sigma, fraction)

    def patch_scores(self, model, images: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
        """(N, h, w) float32 nearest-neighbour distance of each patch of uint8 (N, S, S, 3) images."""
        features = patch_features(model, images, batch_size, device)
        n, h, w, d = features.shape
        bank = torch.from_numpy(self.memory_bank).to(device)
        return nearest_distances(features.reshape(-1, d), bank).reshape(n, h, w).cpu().numpy()

    def image_scores(self, patch_scores: np.ndarray) -> np.ndarray:
        """(N,) float64: each image's largest patch score."""
        return patch_scores.reshape(len(patch_scores), -1).max(axis=1).astype(np.float64)

    def maps(self, patch_scores: np.ndarray, image_size: int) -> np.ndarray:
        """(N, S, S) float32 maps: patch scores upsampled (bilinear) and blurred by ``sigma``."""
        up = (
            F.interpolate(
                torch.from_numpy(np.asarray(patch_scores, np.float32))[:, None],
                size=(image_size, image_size),
                mode="bilinear",
                align_corners=False,
            )[:, 0]
            .double()
            .numpy()
        )
        if self.sigma > 0:
            up = ndimage.gaussian_filter(up, sigma=(0, self.sigma, self.sigma), mode="nearest")
        return up.astype(np.float32)
