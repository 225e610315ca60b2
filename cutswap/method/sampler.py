"""A method's negatives and a training step's batch, built on the device from one generator.

A step's batch (``draw_batch``)::

    rows [c * B, (c + 1) * B)   class c: 0 = normal, 1.. = one per negative kind of the method
                                (``cutswap.method.registry.REGISTRY``)

``B = batch_size``; the images of every row are drawn at random from the normal images, negatives are made
from theirs, then all rows get the same light colour jitter (as CutPaste, so colour alone never separates
the classes).
"""

from __future__ import annotations

import torch

from cutswap.method.ops import CUTPASTE_AREA, CUTPASTE_ASPECT, color_jitter
from cutswap.method.registry import get_method
from cutswap.method.transforms import CutPaste, CutSwap, Scar


class NegativeSampler:
    """Builds the negatives of one method from normal images, one block per negative kind.

    Args:
        method: a method of ``cutswap.method.registry.REGISTRY``.
        bank: (N, L, D, 6) or (N, D, 6) int pair draws, for the swap methods (moved to the images' device
            on first use).
        swaps: CutSwap's ``swaps`` (``one`` or ``per-level``).
        area, aspect: CutPaste's patch-size ranges.
    """

    def __init__(
        self,
        method: str,
        bank: torch.Tensor | None = None,
        swaps: str = "one",
        area: tuple[float, float] = CUTPASTE_AREA,
        aspect: tuple[float, float] = CUTPASTE_ASPECT,
    ) -> None:
        self.method = method
        self.kinds = get_method(method).kinds
        self.transforms: dict[str, CutSwap | CutPaste | Scar] = {}
        for kind in self.kinds:
            if kind == "swap":
                if bank is None:
                    raise ValueError(f"{method} needs a pair bank")
                self.transforms[kind] = CutSwap(bank, swaps)
            elif kind == "cutpaste":
                self.transforms[kind] = CutPaste(area, aspect)
            else:
                self.transforms[kind] = Scar()

    @property
    def num_classes(self) -> int:
        return 1 + len(self.kinds)

    def negative(
        self, kind: str, images: torch.Tensor, index: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Negatives of one kind from images (B, C, H, W) in [0, 1] whose bank rows are ``index`` (B,)."""
        transform = self.transforms[kind]
        if isinstance(transform, CutSwap):
            return transform(images, index, generator)
        return transform(images, generator)

    def __call__(self, images: torch.Tensor, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Negatives for ``len(kinds)`` equal blocks of ``images``, block k made by kind k."""
        blocks = zip(self.kinds, images.chunk(len(self.kinds)), index.chunk(len(self.kinds)), strict=True)
        out = [self.negative(kind, imgs, idx, generator) for kind, imgs, idx in blocks]
        return out[0] if len(out) == 1 else torch.cat(out)


def draw_batch(
    data: torch.Tensor, sampler: NegativeSampler, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's inputs (C * B, 3, H, W) float in [0, 1] and labels (C * B,), C classes (module docstring).

    Args:
        data: uint8 (N, 3, H, W) normal images on the device.
        sampler: the method's negatives.
        batch_size: B, images per class.
        generator: the training generator; all randomness of the batch comes from it.
    """
    b, classes = batch_size, sampler.num_classes
    idx = torch.randint(data.shape[0], (classes * b,), device=data.device, generator=generator)
    batch = data[idx].float().div_(255)
    negatives = sampler(batch[b:], idx[b:], generator)
    inputs = color_jitter(torch.cat([batch[:b], negatives]), generator, 0.1, around="mean")
    labels = torch.arange(classes, device=data.device).repeat_interleave(b)
    return inputs, labels
