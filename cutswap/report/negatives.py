"""The saliency-and-negatives figure of a category (``<category>.png``): what each method trains on.

What it is drawn from (the first normal training images of the category, read by
``cutswap.pipeline.report_inputs``)::

    SaliencyExamples
        images   uint8 (N, S, S, 3)        normal training images at the working size
        maps     float (N, L, S, S)        their saliency maps, one per level
        tops     bool  (N, L, S, S)        each map's top cluster
        boxes    int   (N, L, D, 6)        their pair bank (the saliency-guided swaps' draws)
        levels   list[str]                 the L saliency levels' names

The negatives are made here, not read: no store keeps them, and making them with each method's own
sampler (``cutswap.method.sampler``) from the same images means a method added to the registry appears in
the figure without a change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cutswap.method.pairs import random_swap_boxes
from cutswap.method.registry import get_method
from cutswap.method.sampler import NegativeSampler
from cutswap.report import figures as plots


@dataclass(frozen=True)
class SaliencyExamples:
    """A few normal training images with their saliency, top clusters and pair bank (module docstring)."""

    images: np.ndarray
    maps: np.ndarray
    tops: np.ndarray
    boxes: np.ndarray
    levels: list[str]


def make_negatives(
    seen: SaliencyExamples,
    methods: Sequence[str],
    swaps: str,
    area: tuple[float, float],
    aspect: tuple[float, float],
    pair_seed: int,
    n_negatives: int = 4,
) -> dict[str, np.ndarray]:
    """``n_negatives`` negatives, uint8 (n, S, S, 3), of every trained method among ``methods``, from the
    same images (cycled) and one fixed generator, so the methods differ only in how they make negatives.

    Args:
        swaps, area, aspect: the run's ``train.swaps`` and ``pairs.area`` / ``pairs.aspect``, as the
            training stage passes them to the sampler.
        pair_seed: the run's ``pairs.seed``, which places the random-swap control's patches.
    """
    banks = {  # the random control's bank: the same patch sizes at random places
        "saliency": seen.boxes,
        "random": random_swap_boxes(seen.boxes, *seen.images.shape[1:3], pair_seed),
    }
    rows = torch.arange(n_negatives) % len(seen.images)
    batch = torch.from_numpy(seen.images[rows.numpy()]).permute(0, 3, 1, 2).float() / 255
    negatives = {}
    for method in methods:
        spec = get_method(method)
        if not spec.trains:
            continue
        bank = torch.from_numpy(banks[spec.bank].astype(np.int64)) if spec.bank else None
        sampler = NegativeSampler(method, bank, swaps, area, aspect)
        made = sampler(batch, rows, torch.Generator().manual_seed(0))
        negatives[method] = (made.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return negatives


def draw_negatives(path: Path, seen: SaliencyExamples, negatives: dict[str, np.ndarray]) -> None:
    """Training images with each saliency level and its top cluster, then each method's negatives."""
    plots.overlay_figure(path, seen.images, seen.maps, seen.tops, negatives, seen.levels)
