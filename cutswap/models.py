"""The classifier trained on normal vs negative images, and what it exposes for scoring.

``ProjectionNet``: ResNet-18 trunk (512-d pooled features, the embedding scored by the density
estimator, as in CutPaste) -> MLP projection head (Linear-BN-ReLU per hidden width) -> linear classifier
with one output per class: 2 for the binary methods, 3 for the 3-way ones (normal, then one class per
negative kind, ``cutswap.training.METHOD_KINDS``). The training code converts the model to channels-last
on CUDA; nothing here depends on the memory format.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ProjectionNet(nn.Module):
    """ResNet-18 + projection head + classifier; ``embed`` gives the features used for scoring."""

    def __init__(self, head_dims: list[int], num_classes: int = 2, trunk: nn.Module | None = None) -> None:
        super().__init__()
        self.trunk = trunk if trunk is not None else resnet18(weights=None)
        self.trunk.fc = nn.Identity()
        layers: list[nn.Module] = []
        width = 512
        for dim in head_dims:
            layers += [nn.Linear(width, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True)]
            width = dim
        self.head = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """512-d pooled trunk features of images in [0, 1], (B, 3, H, W) -> (B, 512)."""
        return self.trunk((images - self.mean) / self.std)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.embed(images)
        return features, self.classifier(self.head(features))


def build_model(head_dims: list[int], pretrained: bool = False, num_classes: int = 2) -> ProjectionNet:
    """A fresh classifier; ``pretrained`` starts the trunk from torchvision's ImageNet weights.

    Pretrained weights come through torchvision's normal loader (its cache or a download), so they are
    only available where that works; from scratch is the default and needs nothing.
    """
    trunk = None
    if pretrained:
        from torchvision.models import ResNet18_Weights

        trunk = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
    return ProjectionNet(head_dims, num_classes, trunk)
