"""The classifier trained on normal vs negative images, and what it exposes for scoring.

``ProjectionNet``: a trunk (pooled features, the embedding scored by the density estimator, as in
CutPaste) -> MLP projection head (Linear-BN-ReLU per hidden width) -> linear classifier with one output
per class: 2 for the binary methods, 3 for the 3-way ones (normal, then one class per negative kind,
``cutswap.method.registry.REGISTRY``). The training code converts the model to channels-last on CUDA;
nothing here depends on the memory format.

Trunks (``TRUNKS``), each with its own input normalisation and embedding width:

======================  =====  ============================  ==============================================
trunk                   width  normalisation (on [0, 1])     ImageNet weights (``pretrained=True``)
======================  =====  ============================  ==============================================
``resnet18``            512    mean (0.485, 0.456, 0.406),   torchvision's file, found like the saliency
                               std (0.229, 0.224, 0.225)     backbone's (path by hash, cache, download)
``efficientnet_lite0``  1280   mean = std = 0.5              the file shipped in a PyPI package (offline)
======================  =====  ============================  ==============================================

``stages`` names four trunk modules ``layer1..layer4`` (strides 4, 8, 16, 32) for Grad-CAM localization:
ResNet-18's stages, or EfficientNet-Lite0's levels as the saliency backbone defines them. Each is known by
its module path (``STAGE_PATHS``); ``stage_features`` (PatchCore's ``layer2`` and ``layer3``) matches the
trunk's modules to those paths by name, in eager mode and under ``torch.export``/ONNX tracing alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cutswap.method.backbones import (
    EFFNET_LEVEL_PATHS,
    EFFNET_MEAN,
    EFFNET_STD,
    RESNET18_MEAN,
    RESNET18_STD,
    effnet_architecture,
    effnet_imagenet,
    effnet_weights,
    resnet18_imagenet,
    resnet18_weights,
)

TRUNKS = ("resnet18", "efficientnet_lite0")
#: The four trunk stages, shallow to deep (strides 4, 8, 16, 32), as ``ProjectionNet.stages`` names them.
TRUNK_STAGES = ("layer1", "layer2", "layer3", "layer4")
#: Per trunk, the module path (``nn.Module.get_submodule`` of the trunk) whose output is each stage's map.
STAGE_PATHS: dict[str, dict[str, str]] = {
    "resnet18": {stage: stage for stage in TRUNK_STAGES},
    "efficientnet_lite0": {f"layer{i}": EFFNET_LEVEL_PATHS[f"level{i}"] for i in range(1, 5)},
}


@dataclass(frozen=True)
class TrunkInfo:
    """What a trunk is and how it was initialised: recorded in every train store and report table."""

    name: str
    pretrained: bool
    sha256: str | None = None

    @property
    def label(self) -> str:
        """``resnet18 (scratch)`` or ``efficientnet_lite0 (ImageNet)``: how tables name a trunk."""
        return f"{self.name} ({'ImageNet' if self.pretrained else 'scratch'})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pretrained": self.pretrained, "sha256": self.sha256}


def _check_trunk(name: str) -> None:
    if name not in TRUNKS:
        raise ValueError(f"unknown trunk {name!r}; trunks are {list(TRUNKS)}")


def build_trunk(
    name: str, pretrained: bool = False, weights: str | Path | None = None, allow_download: bool = False
) -> tuple[nn.Module, TrunkInfo]:
    """A trunk whose forward gives pooled features ``(B, width)``, and what it is.

    Args:
        name: one of ``TRUNKS``.
        pretrained: start from ImageNet weights (else a fresh initialisation from torch's RNG).
        weights: a weights file to use instead of the default lookup, checked against its known hash.
        allow_download: let ResNet-18's weights be downloaded into torch's hub cache when missing.

    Raises:
        ValueError: unknown trunk.
        cutswap.errors.SettingsError: ImageNet weights asked for but not obtainable (the message says how).
    """
    _check_trunk(name)
    sha256 = None
    if name == "resnet18":
        from torchvision.models import resnet18

        if pretrained:
            path, sha256 = resnet18_weights(weights, allow_download)
            trunk = resnet18_imagenet(path)
        else:
            trunk = resnet18(weights=None)
        trunk.fc = nn.Identity()
    else:
        if pretrained:
            path, sha256 = effnet_weights(weights)
            trunk = effnet_imagenet(path)
        else:
            trunk = effnet_architecture()
        trunk.reset_classifier(0)
    return trunk, TrunkInfo(name, pretrained, sha256)


class ProjectionNet(nn.Module):
    """Trunk + projection head + classifier; ``embed`` gives the features used for scoring.

    Args:
        head_dims: hidden widths of the projection head.
        num_classes: classifier outputs.
        trunk_name: which of ``TRUNKS`` (sets the normalisation, the width and ``stages``).
        trunk: the trunk module (from ``build_trunk``); default a fresh one of ``trunk_name``.
        trunk_info: what the trunk is and how it was initialised (recorded by the train stage).
    """

    def __init__(
        self,
        head_dims: list[int],
        num_classes: int = 2,
        trunk_name: str = "resnet18",
        trunk: nn.Module | None = None,
        trunk_info: TrunkInfo | None = None,
    ) -> None:
        super().__init__()
        _check_trunk(trunk_name)
        self.trunk_name = trunk_name
        self.trunk_info = trunk_info or TrunkInfo(trunk_name, pretrained=False)
        self.trunk = trunk if trunk is not None else build_trunk(trunk_name)[0]
        self.width = 512 if trunk_name == "resnet18" else 1280
        mean, std = (RESNET18_MEAN, RESNET18_STD) if trunk_name == "resnet18" else (EFFNET_MEAN, EFFNET_STD)
        layers: list[nn.Module] = []
        width = self.width
        for dim in head_dims:
            layers += [nn.Linear(width, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True)]
            width = dim
        self.head = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    @property
    def stages(self) -> dict[str, nn.Module]:
        """``layer1..layer4`` of the trunk, shallow to deep (Grad-CAM reads their outputs)."""
        return {name: self.trunk.get_submodule(path) for name, path in STAGE_PATHS[self.trunk_name].items()}

    def trunk_steps(self) -> list[tuple[str, nn.Module]]:
        """The trunk's feature extractor as (module path, module) in forward order, up to the last feature
        map (before pooling): calling them in turn on normalised images is the trunk's forward.

        The paths are built from the module tree's names (``named_children``), never compared by module
        identity: under ``torch.export`` a module shared by two parents (``ExportedDetector`` holds the
        model and its PatchCore graph holds it again) is handed out as a new proxy object at every access,
        so a lookup keyed by module objects finds nothing, while names stay the same.
        """
        t = self.trunk
        if self.trunk_name == "resnet18":
            names = ("conv1", "bn1", "relu", "maxpool", *TRUNK_STAGES)
            return [(name, getattr(t, name)) for name in names]
        blocks = [
            (f"blocks.{i}.{j}", block)
            for i, stage in t.blocks.named_children()
            for j, block in stage.named_children()
        ]
        return [
            ("conv_stem", t.conv_stem),
            ("bn1", t.bn1),
            *blocks,
            ("conv_head", t.conv_head),
            ("bn2", t.bn2),
        ]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features of images in [0, 1], (B, 3, H, W) -> (B, width)."""
        return self.trunk((images - self.mean) / self.std)

    def stage_features(self, images: torch.Tensor, names: tuple[str, ...]) -> list[torch.Tensor]:
        """The feature maps of the named ``stages`` for images in [0, 1], shallow to deep, running the trunk
        only as deep as the deepest one (PatchCore reads ``layer2`` and ``layer3``).

        Written out as plain module calls (``trunk_steps``) rather than forward hooks, and the stages found
        by their paths (``STAGE_PATHS``), so eager evaluation, ``torch.export`` and ONNX run this one code
        path and see the same maps.

        Raises:
            ValueError: ``names`` is empty or names something other than ``TRUNK_STAGES``.
        """
        unknown = sorted(set(names) - set(TRUNK_STAGES))
        if unknown or not names:
            raise ValueError(f"stages must be a non-empty subset of {list(TRUNK_STAGES)}, got {list(names)}")
        paths = STAGE_PATHS[self.trunk_name]
        wanted = {paths[name]: name for name in names}
        found: dict[str, torch.Tensor] = {}
        x = (images - self.mean) / self.std
        for path, module in self.trunk_steps():
            x = module(x)
            if path in wanted:
                found[wanted[path]] = x
                if len(found) == len(wanted):
                    break
        if len(found) != len(wanted):  # STAGE_PATHS names a module that trunk_steps does not pass through
            missing = sorted(path for path, name in wanted.items() if name not in found)
            raise RuntimeError(f"{self.trunk_name}: no trunk step is the stage module {missing}")
        return [found[name] for name in sorted(names)]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.embed(images)
        return features, self.classifier(self.head(features))


def to_channels_last(model: nn.Module) -> nn.Module:
    """The model's weights in the channels-last layout, converted outside inference mode even when called
    inside it: weights made there could never take part in a backward pass again (Grad-CAM needs one)."""
    with torch.inference_mode(False), torch.no_grad():
        return model.to(memory_format=torch.channels_last)


def build_model(
    head_dims: list[int],
    pretrained: bool = False,
    num_classes: int = 2,
    trunk: str = "resnet18",
    weights: str | Path | None = None,
    allow_download: bool = False,
) -> ProjectionNet:
    """A fresh classifier on the named trunk, from scratch or from ImageNet weights (``build_trunk``)."""
    module, info = build_trunk(trunk, pretrained, weights, allow_download)
    return ProjectionNet(head_dims, num_classes, trunk, module, info)
