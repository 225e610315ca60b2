"""PatchCore's coreset and nearest-neighbour search against a brute-force ``torch.cdist`` search over every
normal training patch, on the same features.

Run: ``.venv/bin/python benchmarks/bench_patchcore.py [--size 64 --train 200 --test 100 --fraction 0.1
--trunk efficientnet_lite0 --device cpu --repeats 3]``; ``--size 256 --train 240 --test 20 --fraction
0.01`` is an MVTec AD category at its working size with the MVTec preset's coreset.

Features are the frozen ImageNet trunk's PatchCore features (``cutswap.score.patchcore.patch_features``) of
smooth random images, so their width and spread are the real ones. Printed, each the median of
``--repeats`` runs after a warm-up:

- ``coreset``: the greedy k-center selection (``greedy_coreset``, in blocks of the farthest patches) over
  all training patches, against the same selection one matrix-vector product per step (``_stepwise``, the
  code before issue 35), with their ratio and the share of equal picks;
- ``search (coreset)``: every test patch's nearest distance in the coreset (``nearest_distances``);
- ``search (brute force)``: ``torch.cdist`` of every test patch to every training patch, then the minimum,
  in blocks of 4,096 test patches (what a user without a coreset would run);

- ``evaluation``: the test images' scores and maps as the evaluate stage gets them, from one pass of patch
  features and distances (``PatchCore.patch_scores`` once, what ``Detector.score`` does), against the two
  passes it made before issue 35 (scores, then maps, each computing every patch feature);

then the ratios brute force / coreset search and brute force / (coreset + search), and what the speed
costs: the coreset's patch distances relative to the exact ones (never smaller, by construction) and the
Spearman correlation of the image scores (largest patch distance) of the two.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import spearmanr
from timing import timed

from cutswap.learn.models import build_model
from cutswap.score.patchcore import (
    PatchCore,
    greedy_coreset,
    nearest_distances,
    patch_features,
    random_projection,
)


def smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 (n, size, size, 3) images: bicubic-upsampled random fields, textures of no particular kind."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 12, 12, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    noise = 0.05 * torch.randn(n, 3, size, size, generator=g)
    return ((fine + noise).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _stepwise(features: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """The greedy k-center selection one step at a time: each pick's distances to every patch in one
    matrix-vector product (memory-bound), as ``greedy_coreset`` did before issue 35. The baseline."""
    m = len(features)
    k = max(1, int(np.ceil(fraction * m)))
    z = features.float() @ random_projection(features.shape[1], seed).to(features.device)
    norms = (z * z).sum(1)
    chosen = torch.empty(k, dtype=torch.long, device=features.device)
    chosen[0] = int(torch.randint(m, (1,), generator=torch.Generator().manual_seed(seed)))
    nearest = (norms - 2 * (z @ z[chosen[0]]) + norms[chosen[0]]).clamp_min_(0)
    for i in range(1, k):
        chosen[i] = torch.argmax(nearest)
        torch.minimum(nearest, (norms - 2 * (z @ z[chosen[i]]) + norms[chosen[i]]).clamp_min_(0), out=nearest)
    return chosen


def brute_force(queries: torch.Tensor, bank: torch.Tensor, block: int = 4096) -> torch.Tensor:
    return torch.cat(
        [torch.cdist(queries[s : s + block], bank).min(dim=1).values for s in range(0, len(queries), block)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--trunk", default="efficientnet_lite0", choices=["efficientnet_lite0", "resnet18"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = build_model([8], True, 1, args.trunk).eval().to(device)
    train = patch_features(model, smooth_images(args.train, args.size, 0), 16, device)
    test = patch_features(model, smooth_images(args.test, args.size, 1), 16, device)
    bank = train.reshape(-1, train.shape[-1])
    queries = test.reshape(-1, test.shape[-1])
    print(
        f"{args.trunk} at {args.size} px on {device}: {len(bank):,} training patches, {len(queries):,} test "
        f"patches, {bank.shape[1]} dims; coreset fraction {args.fraction}"
    )
    t_core, chosen = timed(lambda: greedy_coreset(bank, args.fraction), args.repeats, sync)
    t_step, stepwise = timed(lambda: _stepwise(bank, args.fraction), args.repeats, sync)
    equal = float((chosen == stepwise).float().mean())
    core = bank[chosen]
    t_search, near = timed(lambda: nearest_distances(queries, core), args.repeats, sync)
    t_brute, exact = timed(lambda: brute_force(queries, bank), args.repeats, sync)
    print(f"coreset ({len(core):,} patches)        {t_core:8.3f} s")
    print(f"coreset, one step at a time     {t_step:8.3f} s")
    print(f"ratio stepwise / blocked coreset             {t_step / t_core:6.1f}x  ({equal:.1%} equal picks)")
    print(f"search (coreset)                {t_search:8.3f} s")
    scorer = PatchCore(core.cpu().numpy(), sigma=4.0, fraction=args.fraction)
    images = smooth_images(args.test, args.size, 1)

    def passes(n: int) -> None:
        for _ in range(n):  # before issue 35: image_scores, then anomaly_maps, each from the images
            patches = scorer.patch_scores(model, images, 16, device)
        scorer.image_scores(patches), scorer.maps(patches, args.size)

    t_one, _ = timed(lambda: passes(1), args.repeats, sync)
    t_two, _ = timed(lambda: passes(2), args.repeats, sync)
    print(
        f"evaluation, one feature pass    {t_one:8.3f} s  (two passes: {t_two:.3f} s, {t_two / t_one:.2f}x)"
    )
    print(f"search (brute force, cdist)     {t_brute:8.3f} s")
    print(f"ratio brute force / coreset search            {t_brute / t_search:6.1f}x")
    print(f"ratio brute force / (coreset + search)        {t_brute / (t_core + t_search):6.1f}x")
    near, exact = near.cpu().numpy(), exact.cpu().numpy()
    ratio = near / np.maximum(exact, 1e-12)
    images_near = near.reshape(args.test, -1).max(1)
    images_exact = exact.reshape(args.test, -1).max(1)
    print(
        f"coreset distance / exact distance: median {np.median(ratio):.3f}, 99th percentile "
        f"{np.percentile(ratio, 99):.3f}; image scores' Spearman correlation "
        f"{spearmanr(images_near, images_exact).statistic:.4f}"
    )


if __name__ == "__main__":
    main()
