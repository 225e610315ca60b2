"""Negative samples built on the device with tensor operations, no per-sample Python.

Images are float tensors (B, C, H, W) in [0, 1]. A patch pair is given per sample as an int tensor (B, 6)
of ``(h, w, y1, x1, y2, x2)``: one patch size and the top-left corners of the two patches, the layout of
the pair bank (``cutswap.method.pairs``); several swaps per sample are (B, S, 6), applied in order. Every
operation builds a source-coordinate map for the whole batch and ends in a single gather, so a batch of 64
negatives costs about as much as one, and several swaps cost one gather (their maps are composed first).

Augmentations (the methods that use them are in ``cutswap.method.registry.REGISTRY``):
    swap_patches   swap two same-size patches: CutSwap (pairs anchored in the saliency top cluster) and the
                   random-swap control (pairs at uniformly random places,
                   ``cutswap.method.pairs.random_pair_bank``)
    cut_paste      copy a rectangle to another place of the same image, colour-jittered (Li et al. 2021)
    cut_paste_scar copy a thin rectangle, rotate it and paste it through its rotated mask, colour-jittered
                   (CutPaste-Scar: width [2, 16] px, height [10, 25] px, rotation [-45, 45] degrees at 256 px)
"""

from __future__ import annotations

import math

import torch

#: CutPaste's patch-size ranges (Li et al. 2021): area as a fraction of the image, height/width ratio.
CUTPASTE_AREA = (0.02, 0.15)
CUTPASTE_ASPECT = (0.3, 3.3)

#: CutPaste-Scar geometry of Li et al. (2021) and of ``Runinho/pytorch-cutpaste``, in pixels at this size.
SCAR_REFERENCE_SIZE = 256
SCAR_WIDTH = (2.0, 16.0)
SCAR_HEIGHT = (10.0, 25.0)
SCAR_ROTATION = (-45.0, 45.0)


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


def _uniform(n: int, low, high, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` uniforms in [low, high); the bounds may be numbers or (n,) tensors."""
    return low + torch.rand(n, device=device, generator=generator) * (high - low)


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
    _, width = images.shape[-2:]
    return _gather_flat(images, src_y * width + src_x)


def _gather_flat(images: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``out[b, c, p] = images[b, c, flat[b, p]]`` for flat pixel indices ``flat`` (B, H, W) or (B, H*W)."""
    b, c, height, width = images.shape
    index = flat.reshape(b, 1, height * width).expand(b, c, height * width)
    return images.reshape(b, c, height * width).gather(2, index).view(b, c, height, width)


def color_jitter(
    values: torch.Tensor, generator: torch.Generator, strength: float = 0.1, around: str = "half"
) -> torch.Tensor:
    """Per-sample brightness and contrast jitter in [-strength, strength], clamped to [0, 1].

    Contrast scales the values about ``around``: ``half`` (0.5, for a pasted patch, as CutPaste) or
    ``mean`` (each sample's own mean, for whole training images, so the jitter keeps their brightness
    centred). Gain is drawn before shift, one of each per sample, from ``generator``.
    """
    b = values.shape[0]
    gain = 1 + torch.empty(b, 1, 1, 1, device=values.device).uniform_(
        -strength, strength, generator=generator
    )
    shift = torch.empty(b, 1, 1, 1, device=values.device).uniform_(-strength, strength, generator=generator)
    if around == "half":
        centre: torch.Tensor | float = 0.5
    elif around == "mean":
        centre = values.mean(dim=(1, 2, 3), keepdim=True)
    else:
        raise ValueError(f"around must be 'half' or 'mean', got {around!r}")
    return ((values - centre) * gain + centre + shift).clamp(0, 1)


def _swap_source(pairs: torch.Tensor, b: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Flat source index (B, H*W) of one swap per sample: where each output pixel reads from."""
    h, w, y1, x1, y2, x2 = pairs.long().unbind(1)
    ys, xs = _grid(b, height, width, device)
    in1 = _inside(ys, xs, y1, x1, h, w)
    in2 = _inside(ys, xs, y2, x2, h, w)
    dy, dx = (y2 - y1).view(-1, 1, 1), (x2 - x1).view(-1, 1, 1)
    src_y = torch.where(in1, ys + dy, torch.where(in2, ys - dy, ys))
    src_x = torch.where(in1, xs + dx, torch.where(in2, xs - dx, xs))
    return (src_y * width + src_x).view(b, height * width)


def swap_patches(images: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Swap the two patches of each pair; the two patches of a pair must not overlap (the banks ensure it).

    Args:
        images: (B, C, H, W).
        pairs: (B, 6) one swap per sample, or (B, S, 6) S swaps per sample applied in order (later swaps
            act on the result of earlier ones, so swaps of different pairs may overlap each other).

    Returns:
        The swapped images; one gather whatever S is, since the swaps' index maps are composed first
        (``img_s = img_{s-1}[f_s] = img_0[src[f_s]]``).
    """
    b, _, height, width = images.shape
    pairs = pairs.to(images.device)
    if pairs.dim() == 2:
        pairs = pairs.unsqueeze(1)
    source = None
    for s in range(pairs.shape[1]):
        step = _swap_source(pairs[:, s], b, height, width, images.device)
        source = step if source is None else source.gather(1, step)
    assert source is not None, "pairs must hold at least one swap"
    return _gather_flat(images, source)


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
    return torch.where(inside.unsqueeze(1), color_jitter(moved, generator, jitter), moved)


def cut_paste_scar(
    images: torch.Tensor,
    generator: torch.Generator,
    width: tuple[float, float] = SCAR_WIDTH,
    height: tuple[float, float] = SCAR_HEIGHT,
    rotation: tuple[float, float] = SCAR_ROTATION,
    jitter: float = 0.1,
    reference_size: int = SCAR_REFERENCE_SIZE,
) -> torch.Tensor:
    """CutPaste-Scar: a thin rectangle cut from the image, rotated, pasted elsewhere through its mask.

    Sizes are in pixels at ``reference_size`` and scaled to the working size, so a scar covers the same
    fraction of the image as in the 256 px protocol of the paper (a 64 px demo gets 0.5-4 x 2.5-6 px scars,
    never thinner than one pixel). The source rectangle is axis-aligned and inside the image; the rotated
    scar's bounding box is inside the image too. Output pixel ``p`` is in the scar when its offset from the
    scar centre, rotated back by the scar's angle, lies inside the rectangle; it then reads the source pixel
    at that offset from the source centre (nearest neighbour, as PIL's default ``rotate``), jittered.

    Args:
        images: (B, C, H, W) in [0, 1].
        generator: the training generator (on the images' device).
        width, height: scar side ranges in pixels at ``reference_size``, each drawn uniformly.
        rotation: angle range in degrees, drawn uniformly.
        jitter: brightness/contrast jitter strength of the pasted scar.
        reference_size: the image size the pixel ranges refer to.

    Returns:
        (B, C, H, W): every sample with one scar.
    """
    b, _, img_h, img_w = images.shape
    dev = images.device
    scale = min(img_h, img_w) / reference_size
    sw = _uniform(b, width[0], width[1], generator, dev).mul_(scale).clamp_(1, img_w)
    sh = _uniform(b, height[0], height[1], generator, dev).mul_(scale).clamp_(1, img_h)
    theta = _uniform(b, rotation[0], rotation[1], generator, dev).deg2rad_()
    cos, sin = theta.cos(), theta.sin()
    # Centres: the source rectangle and the rotated scar's bounding box both inside the image.
    cy_s = _uniform(b, sh / 2, img_h - sh / 2, generator, dev)
    cx_s = _uniform(b, sw / 2, img_w - sw / 2, generator, dev)
    ext_y = ((sw * sin).abs() + (sh * cos).abs()).div(2).clamp(max=img_h / 2)
    ext_x = ((sw * cos).abs() + (sh * sin).abs()).div(2).clamp(max=img_w / 2)
    cy_d = _uniform(b, ext_y, img_h - ext_y, generator, dev)
    cx_d = _uniform(b, ext_x, img_w - ext_x, generator, dev)

    ys, xs = _grid(b, img_h, img_w, dev)
    view = lambda t: t.view(-1, 1, 1)  # noqa: E731
    dy = ys + 0.5 - view(cy_d)
    dx = xs + 0.5 - view(cx_d)
    u = view(cos) * dx + view(sin) * dy  # along the scar's width
    v = view(cos) * dy - view(sin) * dx  # along its height
    inside = (u.abs() < view(sw) / 2) & (v.abs() < view(sh) / 2)
    src_y = (view(cy_s) + v).floor().long().clamp_(0, img_h - 1)
    src_x = (view(cx_s) + u).floor().long().clamp_(0, img_w - 1)
    moved = _gather(images, torch.where(inside, src_y, ys), torch.where(inside, src_x, xs))
    return torch.where(inside.unsqueeze(1), color_jitter(moved, generator, jitter), moved)
