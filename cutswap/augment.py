"""Negative samples built on the device with tensor operations, no per-sample Python.

Images are float tensors (B, C, H, W). A patch pair is given per sample as an int tensor (B, 6) of
``(h, w, y1, x1, y2, x2)``: one patch size and the top-left corners of the two patches, the layout of the
pair bank (``cutswap.pairs``). Every operation is a single gather over a source-coordinate grid, so a
batch of 64 negatives costs about as much as one.

Methods:
    cutswap      swap two same-size patches whose centres come from the saliency top cluster (pair bank)
    random-swap  the same swap at uniformly random non-overlapping locations (the control); its bank
                 comes from ``cutswap.pairs.random_pair_bank``
    cutpaste     copy a patch to another location of the same image, colour-jittered (Li et al. 2021)
"""

from __future__ import annotations

import math

import torch


def sample_patch_sizes(
    n: int,
    height: int,
    width: int,
    area: tuple[float, float],
    aspect: tuple[float, float],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch heights and widths: area ~ U[area] of the image, aspect ratio log-uniform (as CutPaste)."""
    frac = torch.empty(n, device=device).uniform_(area[0], area[1], generator=generator)
    log_ratio = torch.empty(n, device=device).uniform_(
        math.log(aspect[0]), math.log(aspect[1]), generator=generator
    )
    ratio = log_ratio.exp()
    pixels = frac * height * width
    h = (pixels * ratio).sqrt().round().clamp(1, height).long()
    w = (pixels / ratio).sqrt().round().clamp(1, width).long()
    return h, w


def _uniform_corner(size: torch.Tensor, limit: int, generator: torch.Generator) -> torch.Tensor:
    span = (limit - size + 1).float()
    return (torch.rand(size.shape, device=size.device, generator=generator) * span).floor().long()


def _grid(b: int, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(height, device=device).view(1, height, 1).expand(b, height, width)
    xs = torch.arange(width, device=device).view(1, 1, width).expand(b, height, width)
    return ys, xs


def _inside(
    ys: torch.Tensor, xs: torch.Tensor, y: torch.Tensor, x: torch.Tensor, h: torch.Tensor, w: torch.Tensor
):
    y, x, h, w = (t.view(-1, 1, 1) for t in (y, x, h, w))
    return (ys >= y) & (ys < y + h) & (xs >= x) & (xs < x + w)


def _gather(images: torch.Tensor, src_y: torch.Tensor, src_x: torch.Tensor) -> torch.Tensor:
    b, c, height, width = images.shape
    flat = (src_y * width + src_x).view(b, 1, height * width).expand(b, c, height * width)
    return images.reshape(b, c, height * width).gather(2, flat).view(b, c, height, width)


def swap_patches(images: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Swap the two patches of each pair; patches must not overlap (the pair bank guarantees it)."""
    b, _, height, width = images.shape
    h, w, y1, x1, y2, x2 = pairs.to(images.device).long().unbind(1)
    ys, xs = _grid(b, height, width, images.device)
    in1 = _inside(ys, xs, y1, x1, h, w)
    in2 = _inside(ys, xs, y2, x2, h, w)
    dy, dx = (y2 - y1).view(-1, 1, 1), (x2 - x1).view(-1, 1, 1)
    src_y = torch.where(in1, ys + dy, torch.where(in2, ys - dy, ys))
    src_x = torch.where(in1, xs + dx, torch.where(in2, xs - dx, xs))
    return _gather(images, src_y, src_x)


def cut_paste(
    images: torch.Tensor,
    area: tuple[float, float],
    aspect: tuple[float, float],
    generator: torch.Generator,
    jitter: float = 0.1,
) -> torch.Tensor:
    """CutPaste (normal variant): copy a patch to a random location, with brightness/contrast jitter.

    Images are expected in [0, 1]; the jittered patch is clamped to that range.
    """
    b, _, height, width = images.shape
    dev = images.device
    h, w = sample_patch_sizes(b, height, width, area, aspect, generator, dev)
    sy, sx = _uniform_corner(h, height, generator), _uniform_corner(w, width, generator)
    dy_, dx_ = _uniform_corner(h, height, generator), _uniform_corner(w, width, generator)
    ys, xs = _grid(b, height, width, dev)
    inside = _inside(ys, xs, dy_, dx_, h, w)
    src_y = torch.where(inside, ys + (sy - dy_).view(-1, 1, 1), ys)
    src_x = torch.where(inside, xs + (sx - dx_).view(-1, 1, 1), xs)
    moved = _gather(images, src_y, src_x)
    gain = 1 + torch.empty(b, 1, 1, 1, device=dev).uniform_(-jitter, jitter, generator=generator)
    shift = torch.empty(b, 1, 1, 1, device=dev).uniform_(-jitter, jitter, generator=generator)
    jittered = ((moved - 0.5) * gain + 0.5 + shift).clamp(0, 1)
    return torch.where(inside.unsqueeze(1), jittered, moved)
