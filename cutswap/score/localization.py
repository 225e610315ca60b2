"""Pixel anomaly maps from a trained classifier: where in a test image the anomaly is.

Inputs are uint8 images (N, S, S, 3) at the working size; every function returns float32 maps (T, S, S),
non-negative, larger = more anomalous, on one scale across images (no per-image normalisation, because
pixel AUROC and AUPRO pool the pixels of all test images).

``patch`` (CutPaste's patch-level variant, the default)
    The trained trunk embeds local crops: ``patch_size`` px squares every ``stride`` px (plus a last row
    and column flush with the far edge, so every pixel is covered), one trunk embedding per position. A
    Gaussian density (Ledoit-Wolf, as for images) is fitted on the crops of the normal training images
    (a fixed random subsample of at most ``max_fit`` crops, positions pooled: one density for the whole
    image), each test crop gets its Mahalanobis distance (``GaussianDensity.score``, the scorer of whole
    images too), and each pixel takes the mean distance of the crops covering it (receptive-field
    upsampling), then a Gaussian blur of ``sigma`` px. CutPaste trains a separate model on patches; here
    the image-level model's trunk is reused, which needs no second training run and keeps one model per
    (method, seed).
``gradcam`` (cheap: one forward and one backward pass per image)
    Grad-CAM (Selvaraju et al. 2017) of the anomaly logit at a trunk stage: ReLU of the channel sum of
    activations weighted by their spatially averaged gradients, bilinearly upsampled to S x S. The anomaly
    logit is ``logsumexp(logits[1:]) - logits[0]``, the log-odds of "any negative class" against normal
    (``logit_1 - logit_0`` for a binary classifier), so 3-way models need no special case.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cutswap.learn.models import TRUNK_STAGES, to_channels_last
from cutswap.score.density import GaussianDensity


def patch_positions(image_size: int, patch_size: int, stride: int) -> np.ndarray:
    """Top-left offsets of the crops along one axis: 0, stride, ..., and ``image_size - patch_size``.

    Raises:
        ValueError: the patch does not fit in the image, or the stride is not positive.
    """
    if not 0 < patch_size <= image_size:
        raise ValueError(
            f"evaluate.patch_size ({patch_size}) must be between 1 and the working image size ({image_size})"
        )
    if stride < 1:
        raise ValueError(f"evaluate.patch_stride must be at least 1, got {stride}")
    last = image_size - patch_size
    return np.unique(np.r_[np.arange(0, last + 1, stride), last])


def _to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255


def _crops(
    images: np.ndarray, which: np.ndarray, offsets: np.ndarray, patch_size: int, batch_size: int
) -> Iterator[np.ndarray]:
    """uint8 crops (B, p, p, 3) for rows ``which`` of (image, row position, column position), batched."""
    span = np.arange(patch_size)
    for start in range(0, len(which), batch_size):
        i, gy, gx = which[start : start + batch_size].T
        rows = offsets[gy][:, None, None] + span[None, :, None]
        cols = offsets[gx][:, None, None] + span[None, None, :]
        yield images[i[:, None, None], rows, cols]


@torch.inference_mode()
def embed_batches(model, batches: Iterable[np.ndarray], device: torch.device) -> np.ndarray:
    """Trunk embeddings (K, width) float64 of uint8 image batches (B, H, W, 3), concatenated.

    Weights and inputs go channels-last: on the CPU that runs EfficientNet-Lite0's depthwise convolutions
    about 6x faster on 16 px crops (ResNet-18 about 1.3x), on CUDA it is the tensor cores' layout; the
    embeddings differ from the default layout's by float rounding only.
    """
    to_channels_last(model)
    out = [
        model.embed(_to_tensor(batch, device).contiguous(memory_format=torch.channels_last))
        .double()
        .cpu()
        .numpy()
        for batch in batches
    ]
    return np.concatenate(out) if out else np.zeros((0, model.width))


def embed_images(model, images: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Trunk embeddings (N, width) float64 of whole uint8 images (N, H, W, 3), batch by batch."""
    return embed_batches(
        model, (images[s : s + batch_size] for s in range(0, len(images), batch_size)), device
    )


def crop_embeddings(
    model,
    images: np.ndarray,
    which: np.ndarray,
    offsets: np.ndarray,
    patch_size: int,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """Trunk embeddings (K, width) float64 of the crops listed in ``which`` (K, 3) = (image, gy, gx)."""
    return embed_batches(model, _crops(images, which, offsets, patch_size, batch_size), device)


def spread_patch_scores(
    scores: np.ndarray, offsets: np.ndarray, patch_size: int, image_size: int
) -> np.ndarray:
    """Receptive-field upsampling: each pixel gets the mean score of the crops that cover it.

    Args:
        scores: (T, G, G) one score per crop position, rows then columns as in ``offsets``.
    """
    total = np.zeros((len(scores), image_size, image_size))
    count = np.zeros((image_size, image_size))
    for gy, y in enumerate(offsets):
        for gx, x in enumerate(offsets):
            total[:, y : y + patch_size, x : x + patch_size] += scores[:, gy, gx, None, None]
            count[y : y + patch_size, x : x + patch_size] += 1
    return total / count


def patch_maps(
    model,
    train_images: np.ndarray,
    test_images: np.ndarray,
    patch_size: int = 32,
    stride: int = 8,
    sigma: float = 4.0,
    max_fit: int = 20000,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    l2_normalize: bool = False,
) -> np.ndarray:
    """Patch-level anomaly maps (T, S, S) float32 of ``test_images`` (module docstring, ``patch``):
    ``fit_patch_density`` on the training images, then ``score_patch_maps`` of the test images."""
    density = fit_patch_density(
        model, train_images, patch_size, stride, max_fit, batch_size, device, seed, l2_normalize
    )
    return score_patch_maps(model, density, test_images, patch_size, stride, sigma, batch_size, device)


def _grid(g: int) -> np.ndarray:
    """(g * g, 2) crop positions (row, column), rows major: the order maps are reshaped in."""
    return np.stack(np.meshgrid(np.arange(g), np.arange(g), indexing="ij"), -1).reshape(-1, 2)


def _every_crop(n: int, grid: np.ndarray) -> np.ndarray:
    """(n * len(grid), 3) rows (image, gy, gx): every crop of every image, image major."""
    return np.concatenate([np.repeat(np.arange(n), len(grid))[:, None], np.tile(grid, (n, 1))], 1)


def fit_patch_density(
    model,
    train_images: np.ndarray,
    patch_size: int = 32,
    stride: int = 8,
    max_fit: int = 20000,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    l2_normalize: bool = False,
) -> GaussianDensity:
    """The Gaussian density of the crop embeddings of normal ``train_images``, positions pooled.

    Kept apart from the scoring so that a loaded detector (``cutswap.score.detector``) scores new images with
    the density the evaluate stage fitted and stored, instead of refitting it from the training images.
    The fitting subsample is drawn before any crop is embedded, so a large training set costs at most
    ``max_fit`` trunk passes; ``seed`` fixes it.
    """
    device = torch.device(device)
    offsets = patch_positions(train_images.shape[1], patch_size, stride)
    fit = _every_crop(len(train_images), _grid(len(offsets)))
    if len(fit) > max_fit:
        fit = fit[np.sort(np.random.default_rng(seed).choice(len(fit), max_fit, replace=False))]
    return GaussianDensity.fit(
        crop_embeddings(model, train_images, fit, offsets, patch_size, batch_size, device), l2_normalize
    )


def score_patch_maps(
    model,
    density: GaussianDensity,
    images: np.ndarray,
    patch_size: int = 32,
    stride: int = 8,
    sigma: float = 4.0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Patch-level anomaly maps (T, S, S) float32 of ``images`` under a fitted crop ``density``."""
    device = torch.device(device)
    size = images.shape[1]
    offsets = patch_positions(size, patch_size, stride)
    g = len(offsets)
    crops = _every_crop(len(images), _grid(g))
    embeddings = crop_embeddings(model, images, crops, offsets, patch_size, batch_size, device)
    scores = density.score(embeddings)
    maps = spread_patch_scores(scores.reshape(len(images), g, g), offsets, patch_size, size)
    if sigma > 0:
        maps = ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode="nearest")
    return maps.astype(np.float32)


def anomaly_logit(logits: torch.Tensor) -> torch.Tensor:
    """Log-odds of any negative class against normal (class 0), (B, C) -> (B,)."""
    return torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]


def gradcam_maps(
    model,
    images: np.ndarray,
    layer: str = "layer4",
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Grad-CAM maps (N, S, S) float32 of the anomaly logit at trunk stage ``layer`` (module docstring).

    The model must be in eval mode: then the samples of a batch do not interact, and the gradient of the
    batch's summed logits is every sample's own gradient.
    """
    if layer not in TRUNK_STAGES:
        raise ValueError(f"gradcam layer must be one of {TRUNK_STAGES}, got {layer!r}")
    device = torch.device(device)
    captured: list[torch.Tensor] = []
    hook = model.stages[layer].register_forward_hook(lambda _m, _i, out: captured.append(out))
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = _to_tensor(images[start : start + batch_size], device)
            captured.clear()
            with torch.enable_grad():
                x.requires_grad_(True)  # a graph even when the weights are frozen
                _, logits = model(x)
                (grads,) = torch.autograd.grad(anomaly_logit(logits).sum(), captured[0])
            weights = grads.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * captured[0]).sum(dim=1, keepdim=True)).detach()
            cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
            out.append(cam[:, 0].float().cpu().numpy())
    finally:
        hook.remove()
    size = images.shape[1:3]
    return np.concatenate(out) if out else np.zeros((0, *size), np.float32)
