"""Negative-making transforms over batch tensors, for your own training loop (as timm's ``RandomErasing``).

Every transform takes float images ``(B, C, H, W)`` in [0, 1] on any device and returns new ones of the
same shape, built with tensor operations and one gather (``cutswap.method.ops``). Randomness comes from the
``generator`` given to the call, else the one given to the constructor, else torch's global generator, so
a training loop can keep every draw reproducible from one seed::

    bank = cutswap.build_pair_bank(maps)              # (N, L, H, W) saliency maps of your N images
    swap = cutswap.CutSwap(bank)
    negatives = swap(images, index)                   # index: (B,) bank row of each image

``CutSwap`` needs to know which image each row of the batch is (``index``), because its pairs were drawn
on that image's saliency map; ``CutPaste`` and ``Scar`` need nothing but the images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cutswap.method.ops import (
    CUTPASTE_AREA,
    CUTPASTE_ASPECT,
    SCAR_HEIGHT,
    SCAR_ROTATION,
    SCAR_WIDTH,
    cut_paste,
    cut_paste_scar,
    swap_patches,
)
from cutswap.method.pairs import PairBank


def _bank_tensor(bank: PairBank | np.ndarray | torch.Tensor | Sequence[PairBank]) -> torch.Tensor:
    """A bank as an int64 tensor (N, L, D, 6): one ``PairBank`` per level, a bank array, or a tensor."""
    if isinstance(bank, PairBank):
        boxes = bank.boxes[:, None]
    elif isinstance(bank, Sequence) and bank and all(isinstance(b, PairBank) for b in bank):
        boxes = np.stack([b.boxes for b in bank], axis=1)
    else:
        boxes = bank
    t = boxes if isinstance(boxes, torch.Tensor) else torch.from_numpy(np.asarray(boxes))
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.dim() != 4 or t.shape[-1] != 6:
        raise ValueError(f"a pair bank must be (N, L, D, 6) or (N, D, 6), got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"a pair bank holds integer pixel coordinates, got dtype {t.dtype}")
    return t.long()


class _Transform:
    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def _gen(self, generator: torch.Generator | None) -> torch.Generator | None:
        return generator if generator is not None else self.generator

    @staticmethod
    def _check(images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
            raise TypeError(
                "images must be a float tensor (B, C, H, W) in [0, 1]; got "
                f"{type(images).__name__} {getattr(images, 'dtype', '')} "
                f"{tuple(getattr(images, 'shape', ()))}"
            )


class CutSwap(_Transform):
    """Swap two same-size patches of each image, at a pair drawn from its saliency-guided bank.

    Args:
        bank: the pair bank of the images (``build_pair_bank``): a ``PairBank`` (one level), a list of
            them (one per saliency level), or an int array/tensor (N, L, D, 6) or (N, D, 6).
        swaps: ``one`` (each negative swaps one draw of one level, chosen uniformly) or ``per-level`` (one
            draw of every level, swapped in level order on the same image).
        generator: default source of randomness (see the module docstring).
    """

    def __init__(
        self,
        bank: PairBank | np.ndarray | torch.Tensor | Sequence[PairBank],
        swaps: str = "one",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(generator)
        if swaps not in ("one", "per-level"):
            raise ValueError(f"swaps must be 'one' or 'per-level', got {swaps!r}")
        self.bank = _bank_tensor(bank)
        self.swaps = swaps

    def to(self, device: torch.device | str) -> CutSwap:
        """Move the bank to the images' device once, rather than on every call."""
        self.bank = self.bank.to(device)
        return self

    def __call__(
        self,
        images: torch.Tensor,
        index: torch.Tensor | Sequence[int],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Negatives of ``images``, whose rows are the bank's images ``index`` (B,)."""
        self._check(images)
        gen, dev = self._gen(generator), images.device
        n, levels, draws, _ = self.bank.shape
        if not (isinstance(index, torch.Tensor) and index.device.type == "cuda"):  # no GPU sync per step
            index = torch.as_tensor(index, dtype=torch.long)
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
                raise ValueError(f"index must lie in [0, {n}), the bank's images")
        index = index.to(dev, torch.long)
        if index.shape != (images.shape[0],):
            raise ValueError(f"index must be (B,) = ({images.shape[0]},), got {tuple(index.shape)}")
        bank = self.bank if self.bank.device == dev else self.bank.to(dev)
        b = images.shape[0]
        if self.swaps == "one":
            draw = torch.randint(levels * draws, (b,), device=dev, generator=gen)
            return swap_patches(images, bank.view(n, levels * draws, 6)[index, draw])
        draw = torch.randint(draws, (b, levels), device=dev, generator=gen)
        level = torch.arange(levels, device=dev).expand(b, levels)
        return swap_patches(images, bank[index.view(b, 1), level, draw])  # (B, L, 6)


class CutPaste(_Transform):
    """CutPaste (normal variant): a rectangle copied elsewhere in the same image, colour-jittered.

    Args:
        area: patch area range as a fraction of the image (uniform).
        aspect: patch height/width ratio range (log-uniform).
        jitter: brightness/contrast jitter strength of the pasted patch.
        generator: default source of randomness.
    """

    def __init__(
        self,
        area: tuple[float, float] = CUTPASTE_AREA,
        aspect: tuple[float, float] = CUTPASTE_ASPECT,
        jitter: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(generator)
        if not 0 < area[0] <= area[1] <= 1:
            raise ValueError(
                f"area must be (low, high) image fractions with 0 < low <= high <= 1, got {area}"
            )
        if not 0 < aspect[0] <= aspect[1]:
            raise ValueError(f"aspect must be (low, high) ratios with 0 < low <= high, got {aspect}")
        self.area, self.aspect, self.jitter = tuple(area), tuple(aspect), jitter

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        self._check(images)
        return cut_paste(images, self.area, self.aspect, self._gen(generator), self.jitter)


class Scar(_Transform):
    """CutPaste-Scar: a thin rotated stripe cut and pasted elsewhere (sizes in px at 256 px, rescaled).

    Args:
        width, height: stripe side ranges in pixels at 256 px.
        rotation: angle range in degrees.
        jitter: brightness/contrast jitter strength of the pasted stripe.
        generator: default source of randomness.
    """

    def __init__(
        self,
        width: tuple[float, float] = SCAR_WIDTH,
        height: tuple[float, float] = SCAR_HEIGHT,
        rotation: tuple[float, float] = SCAR_ROTATION,
        jitter: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(generator)
        self.width, self.height, self.rotation, self.jitter = width, height, rotation, jitter

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        self._check(images)
        return cut_paste_scar(
            images, self._gen(generator), self.width, self.height, self.rotation, self.jitter
        )
