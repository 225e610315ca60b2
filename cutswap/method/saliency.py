"""Multilevel LayerCAM (or Grad-CAM): one saliency map per backbone level, from one forward and one backward.

LayerCAM (Jiang et al., IEEE TIP 2021) weights each activation by its own positive gradient instead of a
channel-wide average, so shallow levels give fine-grained maps. For a level with activations ``A`` of shape
``(B, C, h, w)`` and ``G = d y_t / d A``, the gradient of each sample's target-class logit ``y_t``::

    M = ReLU( sum_k ReLU(G_k) * A_k )                      # (B, h, w), cam="layercam" (the default)
    M = ReLU( sum_k mean_hw(G_k) * A_k )                   # (B, h, w), cam="gradcam"

Grad-CAM (Selvaraju et al., ICCV 2017) is the second line: one weight per channel, the spatial mean of its
gradient (signed, before the final ReLU). It is the ablation of the saliency source (``saliency.cam``):
channel-wide weights cannot single out the locations where a channel matters, which is what makes
LayerCAM's shallow-level maps fine-grained, so Grad-CAM's maps are coarser there (the LayerCAM paper finds
the two alike at the last convolutional layer). Everything else is shared: the levels, the target, the
resampling and normalisation below, and the one backward pass.

Data layout:

* input: ``uint8`` ``(B, H, W, 3)`` RGB (as stored), or ``float`` ``(B, 3, H, W)`` RGB in ``[0, 1]``; on any
  device, moved to the backbone's device.
* ``maps``: ``float32`` ``(B, L, H, W)``, one map per requested level (in the order requested), bilinearly
  resampled (``align_corners=False``) from the level's own ``h x w`` straight to the input ("working") size
  and min-max normalised per map to ``[0, 1]`` (a map that is constant, e.g. all zero, becomes all zero).
* ``targets``: ``int64`` ``(B,)``, the class whose logit was explained (each sample's top-1 by default).
* :func:`saliency_maps` takes and returns numpy arrays: ``uint8 (N, H, W, 3)`` in,
  ``float16 (N, L, H, W)`` maps and ``int64 (N,)`` targets out (float16 halves the store; maps live in
  ``[0, 1]``, where its step is at most 2**-11).

Saliency resolution (``input_size``): with ``input_size=None`` the backbone sees the images at the working
size, so at 64 px its stride-32 deepest level is 2 x 2 cells and at 32 px a single one (a constant map, which
normalises to all zero). With ``input_size=S`` the images are first resized to ``S x S`` (224, the native
input of both backbones, keeps the deep level at 7 x 7), and each level's map is resampled from its
``h x w`` (``S / stride``) straight back to the working size. The resize is bilinear with
``align_corners=False``, antialiased when either side shrinks, done on the backbone's device on the
normalised float image (normalisation is a per-channel affine map and resampling weights sum to one, so
this equals resizing ``[0, 1]`` RGB first, up to float rounding). An image already ``S x S`` is not
resampled, so its maps are bit-identical to ``input_size=None``.

Why one backward serves every sample and every level: the backbone is in ``eval()`` mode (BatchNorm uses its
running statistics), so a sample's logits depend on that sample only and the gradient of the *sum* of the
samples' target logits with respect to a batched activation is, slice by slice, each sample's own gradient.
All levels lie on the one path from the shallowest level to the logits, so ``torch.autograd.grad`` with every
level's activation as an input walks the graph once. The graph starts at the shallowest level's output (a
hook detaches it and marks it as requiring grad); nothing before it is recorded, and no parameter gradient is
ever computed.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cutswap.method.backbones import RESNET18_MEAN, RESNET18_STD, Backbone

logger = logging.getLogger(__name__)


def _make_hook(
    extractor_ref: weakref.ReferenceType[SaliencyExtractor], name: str, is_root: bool
) -> Callable[[nn.Module, Any, Tensor], Tensor | None]:
    """Forward hook recording a level's output while its extractor is capturing.

    The hook holds only a weak reference to the extractor so that a forgotten ``close()`` does not keep the
    extractor alive through the model; outside a capture it does nothing, so the model behaves normally.
    """

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
        extractor = extractor_ref()
        if extractor is None or not extractor._capturing:
            return None
        if is_root:
            # The graph starts here: everything before this level runs without autograd bookkeeping.
            # An inference tensor cannot be marked as requiring grad, so copy it out in that (rare) case.
            output = output.clone() if output.is_inference() else output.detach()
            output.requires_grad_(True)
            extractor._activations[name] = output
            return output
        extractor._activations[name] = output
        return None

    return hook


#: Saliency methods (``saliency.cam``): how a level's activations are weighted by their gradients.
CAMS = ("layercam", "gradcam")


def _check_options(target_class: int | None, input_size: int | None, cam: str) -> None:
    """The extractor's scalar options, checked at construction so that a bad one fails before any image is
    read rather than in the middle of a batch."""
    if target_class is not None and (isinstance(target_class, bool) or target_class < 0):
        raise ValueError(
            f"saliency target_class {target_class!r} (setting target_class) must be a class index >= 0, "
            "or null for each image's top-1 class."
        )
    if input_size is not None and (
        isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1
    ):
        raise ValueError(f"input_size must be a positive integer or None, got {input_size!r}")
    if cam not in CAMS:
        raise ValueError(f"saliency cam {cam!r} (setting cam) is unknown: use one of {', '.join(CAMS)}.")


class SaliencyExtractor:
    """LayerCAM (or Grad-CAM) maps for several levels of a frozen backbone, batched.

    Hooks are registered once, at construction, and removed by :meth:`close` (or by leaving a ``with``
    block). Not thread-safe: one extractor runs one batch at a time.

    Args:
        backbone: the frozen backbone; its ``levels`` name the modules whose outputs are explained.
        levels: which levels to compute, in the order the maps are returned; default all of the backbone's.
        target_class: explain this ImageNet class for every image instead of each image's top-1 class.
        shallow_tanh: rescale each raw map by ``tanh(2 M / max M)`` (at the level's own resolution, before
            resampling and normalisation). The LayerCAM paper uses this for shallow layers, whose maps have a
            few very large values; it lifts the rest. Off by default: CutSwap's abstract does not ask for
            it (``docs/method.md#layercam-saliency-one-map-per-level``).
        input_size: resize images to ``input_size x input_size`` before the backbone, and resample the maps
            back to the working size (see the module docstring). ``None`` (the default here) runs the backbone
            at the working size. Our default (``saliency.input_size``, ``docs/method.md``) is the backbone's
            native 224, which the saliency stage uses: below about 128 px the deep levels otherwise collapse
            to one or two cells.
        cam: ``"layercam"`` (the default, CutSwap's) or ``"gradcam"`` (per-channel weights, the spatial mean
            of the gradient; the ablation of the saliency source, see the module docstring).

    Raises:
        ValueError: ``input_size`` is not a positive integer; ``cam`` is not one of ``CAMS``.
    """

    def __init__(
        self,
        backbone: Backbone,
        levels: list[str] | None = None,
        target_class: int | None = None,
        shallow_tanh: bool = False,
        input_size: int | None = None,
        cam: str = "layercam",
    ) -> None:
        available = list(backbone.levels)
        chosen = list(available if levels is None else levels)
        unknown = [name for name in chosen if name not in backbone.levels]
        if unknown or not chosen or len(set(chosen)) != len(chosen):
            raise ValueError(
                f"saliency levels {chosen!r} (setting levels) are invalid for backbone {backbone.name}: "
                f"give a non-empty list without repeats drawn from {available}."
            )
        _check_options(target_class, input_size, cam)
        self.backbone = backbone
        self.levels = chosen
        self.input_size = input_size
        self.target_class = target_class
        self.shallow_tanh = shallow_tanh
        self.cam = cam
        self._root = min(chosen, key=available.index)  # shallowest requested level
        self._capturing = False
        self._activations: dict[str, Tensor] = {}
        self._interp_cache: dict[tuple[int, int, torch.device], Tensor] = {}
        ref = weakref.ref(self)
        self._handles = [
            backbone.levels[name].register_forward_hook(_make_hook(ref, name, name == self._root))
            for name in chosen
        ]

    def close(self) -> None:
        """Remove the hooks from the backbone (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._activations.clear()

    def __enter__(self) -> SaliencyExtractor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        handles = getattr(self, "_handles", None)
        if handles:
            for handle in handles:
                handle.remove()

    def _model_input(self, images: Tensor) -> Tensor:
        """Bring either input layout to the normalised float ``(B, 3, H, W)`` the backbone expects.

        Both come out channels-last: uint8 NHWC already is after the (free) permute, and float NCHW is
        reordered once. Convolutions then run in that layout throughout; on CPU (oneDNN) this measured about
        25 % faster than contiguous NCHW for EfficientNet-Lite0, forward plus backward. uint8 is converted and
        normalised in one pass.
        """
        device = self.backbone.device
        if images.dtype == torch.uint8:
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"uint8 images must be (B, H, W, 3) RGB, got shape {tuple(images.shape)}")
            return self.backbone.normalize(images.to(device, non_blocking=True).permute(0, 3, 1, 2))
        if not images.is_floating_point() or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1]; got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        x = images.to(device=device, dtype=torch.float32, non_blocking=True)
        return self.backbone.normalize(x.contiguous(memory_format=torch.channels_last))

    def _interpolation(self, size_out: int, size_in: int, device: torch.device) -> Tensor:
        """Matrix ``(size_out, size_in)`` of 1-D bilinear resampling with ``align_corners=False``.

        Bilinear resampling is separable, so a map ``M`` (h, w) resizes as ``R_h @ M @ R_w.T``. Two small
        matrix products write straight into the output, about three times faster on CPU than
        ``F.interpolate`` plus a copy, with the same convention: source coordinate
        ``(i + 0.5) * size_in / size_out - 0.5``, clamped at the borders (as PyTorch and OpenCV do). When a
        level is larger than the working size (level 1 of a 224 px input is 56 x 56, so below 56 px) this
        shrinks it without antialiasing, as ``cv2.resize`` with ``INTER_LINEAR`` in grad-cam does.
        """
        key = (size_out, size_in, device)
        matrix = self._interp_cache.get(key)
        if matrix is None:
            source = (torch.arange(size_out, dtype=torch.float64) + 0.5) * (size_in / size_out) - 0.5
            source = source.clamp(0, size_in - 1)
            low = source.floor().long()
            high = (low + 1).clamp(max=size_in - 1)
            frac = source - low
            rows = torch.arange(size_out)
            matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
            matrix.index_put_((rows, low), 1.0 - frac, accumulate=True)
            matrix.index_put_((rows, high), frac, accumulate=True)
            matrix = self._interp_cache[key] = matrix.to(device=device, dtype=torch.float32)
        return matrix

    def _resize_input(self, x: Tensor) -> Tensor:
        """Resize the normalised batch to ``input_size`` squared (a no-op without it or when already there).

        ``F.interpolate`` keeps the channels-last layout of its input; antialiasing is asked for only when a
        side shrinks, since for enlarging it computes the same bilinear weights (to float rounding) on a
        slower kernel. No autograd graph is recorded: ``x`` does not require grad, and the graph starts at the
        shallowest level's hook.
        """
        size = self.input_size
        height, width = x.shape[-2:]
        if size is None or (height, width) == (size, size):
            return x
        shrinks = size < height or size < width
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinks)
        return x.contiguous(memory_format=torch.channels_last)

    def _raw_map(self, act: Tensor, grad: Tensor) -> Tensor:
        """A level's map at its own resolution, float32 ``(B, h, w)``: the module docstring's formulas."""
        if self.cam == "gradcam":
            cam = torch.einsum("bc,bchw->bhw", grad.mean(dim=(2, 3)), act)
        else:
            cam = torch.einsum("bchw,bchw->bhw", grad.clamp_min(0), act)
        return cam.clamp_min_(0).float()

    @torch.inference_mode(False)
    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Compute the maps for one batch.

        Args:
            images: uint8 ``(B, H, W, 3)`` or float ``(B, 3, H, W)`` in ``[0, 1]``, at the working size.

        Returns:
            ``maps`` float32 ``(B, L, H, W)`` in ``[0, 1]`` at the working size (whatever ``input_size``) and
            ``targets`` int64 ``(B,)``, on the backbone's device.
        """
        if not self._handles:
            raise RuntimeError("this SaliencyExtractor was closed; create a new one")
        x = self._model_input(images)
        batch, _, height, width = x.shape  # the working size: maps come out at this size
        x = self._resize_input(x)
        with torch.enable_grad():
            self._capturing = True
            try:
                logits = self.backbone.model(x)
                activations = [self._activations[name] for name in self.levels]
            finally:
                self._capturing = False
                self._activations.clear()
            if self.target_class is None:
                targets = logits.detach().argmax(dim=1)
            else:
                if self.target_class >= logits.shape[1]:
                    raise ValueError(
                        f"saliency target_class {self.target_class} (setting target_class) is out of range: "
                        f"backbone {self.backbone.name} has {logits.shape[1]} classes."
                    )
                targets = torch.full((batch,), self.target_class, dtype=torch.int64, device=logits.device)
            score = logits.gather(1, targets[:, None]).sum()
            grads = torch.autograd.grad(score, activations)

        with torch.no_grad():
            maps = torch.empty((batch, len(self.levels), height, width), dtype=torch.float32, device=x.device)
            for index, (act, grad) in enumerate(zip(activations, grads, strict=True)):
                cam = self._raw_map(act.detach(), grad)
                if self.shallow_tanh:
                    peak = cam.amax(dim=(1, 2), keepdim=True)
                    cam = torch.where(peak > 0, torch.tanh(2.0 * cam / peak), torch.zeros_like(cam))
                rows = self._interpolation(height, cam.shape[1], x.device)
                cols = self._interpolation(width, cam.shape[2], x.device)
                torch.matmul(rows, cam @ cols.T, out=maps[:, index])
            # Min-max per map; subtract then divide keeps the result exactly inside [0, 1], and a constant
            # map (span 0, e.g. all zero) becomes 0 / tiny = 0 rather than NaN.
            flat = maps.view(batch, len(self.levels), height * width)
            low, high = torch.aminmax(flat, dim=-1, keepdim=True)
            flat.sub_(low).div_((high - low).clamp_min_(torch.finfo(torch.float32).tiny))
        return maps, targets


def saliency_maps(
    extractor: SaliencyExtractor, images: np.ndarray, batch_size: int = 32, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Saliency maps (the extractor's ``cam``) for a whole array of images, batch by batch.

    The backbone is moved to ``device`` if it is elsewhere. Results are written into preallocated arrays and
    converted to float16 on the device, which halves what crosses to the host.

    Args:
        extractor: the extractor (its levels, target and options apply).
        images: uint8 ``(N, H, W, 3)`` RGB.
        batch_size: images per forward/backward pass.
        device: where to compute (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    Returns:
        ``maps`` float16 ``(N, L, H, W)`` in ``[0, 1]`` and ``targets`` int64 ``(N,)``.
    """
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[-1] != 3
    ):
        raise ValueError(
            "images must be a uint8 numpy array (N, H, W, 3); got "
            f"{type(images).__name__} {getattr(images, 'dtype', '?')} {getattr(images, 'shape', '?')}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"saliency batch_size {batch_size!r} (setting batch_size) must be an integer >= 1.")
    target_device = torch.device(device)
    model = extractor.backbone.model
    if extractor.backbone.device != target_device:
        logger.debug("moving saliency backbone %s to %s", extractor.backbone.name, target_device)
        model.to(target_device)
    count, height, width, _ = images.shape
    maps_out = np.empty((count, len(extractor.levels), height, width), dtype=np.float16)
    targets_out = np.empty((count,), dtype=np.int64)
    pin = target_device.type == "cuda"
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        batch = torch.from_numpy(np.ascontiguousarray(images[start:stop]))
        if pin:
            batch = batch.pin_memory()
        maps, targets = extractor(batch.to(target_device, non_blocking=pin))
        maps_out[start:stop] = maps.to(torch.float16).cpu().numpy()
        targets_out[start:stop] = targets.cpu().numpy()
    logger.debug(
        "%s maps for %d images at %dx%d, %d levels",
        extractor.cam,
        count,
        height,
        width,
        len(extractor.levels),
    )
    return maps_out, targets_out


class LayerCAM(SaliencyExtractor):
    """LayerCAM maps of any torch image classifier, at the layers you name (one map per layer).

    The same extractor as the pipeline's, over your own model instead of a packaged backbone::

        model = torchvision.models.resnet50(weights="IMAGENET1K_V2")
        cam = LayerCAM(model, {"layer2": model.layer2, "layer3": model.layer3})
        maps, targets = cam(images)      # uint8 (B, H, W, 3) -> float (B, 2, H, W) in [0, 1], (B,)

    Args:
        model: a classifier mapping normalised ``(B, 3, H, W)`` images to logits; frozen and put in eval
            mode here (batch norm must use its running statistics so one backward pass serves a batch).
        layers: name -> module whose output is explained, in the order the maps are returned.
        mean, std: the model's input normalisation on [0, 1] RGB (ImageNet's by default).
        target_class, shallow_tanh, input_size, cam: as for ``SaliencyExtractor`` (``cam="gradcam"`` gives
            Grad-CAM maps of the same layers, for comparison).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, nn.Module],
        mean: tuple[float, float, float] = RESNET18_MEAN,
        std: tuple[float, float, float] = RESNET18_STD,
        target_class: int | None = None,
        shallow_tanh: bool = False,
        input_size: int | None = None,
        cam: str = "layercam",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not layers or not all(isinstance(m, nn.Module) for m in layers.values()):
            raise ValueError("layers must map at least one name to a module of the model")
        backbone = Backbone(type(model).__name__, model, dict(layers), tuple(mean), tuple(std), "", "")
        super().__init__(backbone, list(layers), target_class, shallow_tanh, input_size, cam)
