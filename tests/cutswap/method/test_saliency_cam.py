"""Grad-CAM beside LayerCAM (``cam``): the two formulas checked by hand, and Grad-CAM against grad-cam.

The hand-computed case: a model whose target logit is linear in one level's activation. The level is a
1 x 1 convolution of the normalised image, ``A = Wc x + bc`` of shape ``(C, H, W)``, and the head flattens
it into a linear layer, so ``y_t = sum_{c,h,w} Wt[c, h, w] A[c, h, w] + b_t`` and the gradient is
``G = Wt`` whatever the input. Then, per the module docstring::

    Grad-CAM  = ReLU( sum_c mean_hw(Wt_c) * A_c )
    LayerCAM  = ReLU( sum_c ReLU(Wt_c) * A_c )

The level keeps the input's resolution and ``input_size`` is None, so the resampling is the identity (the
half-pixel source coordinate of output pixel ``i`` is ``i``) and only the per-map min-max normalisation
remains; the test applies it to its own numpy maps. float32 against float64 rounding: ``atol=1e-5``.

grad-cam's ``GradCAM`` (weights ``np.mean(grads, axis=(2, 3))``) is the independent reference on a real
network, compared as ``test_saliency.py`` compares its ``LayerCAM`` (same normalisation argument).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAM
from torch import nn

from cutswap.errors import SettingsError
from cutswap.method.backbones import RESNET18_MEAN, RESNET18_STD, Backbone
from cutswap.method.saliency import LayerCAM, SaliencyExtractor, saliency_maps
from cutswap.pipeline.settings import SaliencySettings, load_settings

ATOL = 1e-5
CHANNELS, HEIGHT, WIDTH, CLASSES, TARGET = 4, 5, 7, 3, 1


class LinearHead(nn.Module):
    """1 x 1 convolution (the explained level) then flatten and a linear head: logits linear in ``A``."""

    def __init__(self) -> None:
        super().__init__()
        self.level = nn.Conv2d(3, CHANNELS, 1)
        self.head = nn.Linear(CHANNELS * HEIGHT * WIDTH, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.level(x).flatten(1))


@pytest.fixture
def linear_model() -> LinearHead:
    torch.manual_seed(0)
    return LinearHead()


@pytest.fixture
def images() -> torch.Tensor:
    """Two float images (2, 3, HEIGHT, WIDTH) in [0, 1]."""
    return torch.from_numpy(np.random.default_rng(1).uniform(0, 1, (2, 3, HEIGHT, WIDTH))).float()


def _minmax(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    assert np.all(high - low > 1e-3), "the hand case must not be a constant map"
    return (maps - low) / (high - low)


def _hand_maps(model: LinearHead, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(Grad-CAM, LayerCAM), each (B, H, W) float64, from the weights alone (module docstring)."""
    mean, std = np.asarray(RESNET18_MEAN), np.asarray(RESNET18_STD)
    x = (images.double().numpy() - mean[:, None, None]) / std[:, None, None]
    conv_w = model.level.weight.detach().double().numpy()[:, :, 0, 0]  # (C, 3)
    conv_b = model.level.bias.detach().double().numpy()
    act = np.einsum("oc,bchw->bohw", conv_w, x) + conv_b[:, None, None]
    grad = model.head.weight.detach().double().numpy()[TARGET].reshape(CHANNELS, HEIGHT, WIDTH)
    gradcam = np.maximum(np.einsum("c,bchw->bhw", grad.mean(axis=(1, 2)), act), 0)
    layercam = np.maximum(np.einsum("chw,bchw->bhw", np.maximum(grad, 0), act), 0)
    return _minmax(gradcam), _minmax(layercam)


def _run(model: nn.Module, images: torch.Tensor, cam: str) -> np.ndarray:
    with LayerCAM(model, {"level": model.level}, target_class=TARGET, cam=cam) as extractor:
        maps, targets = extractor(images)
    assert maps.shape == (len(images), 1, HEIGHT, WIDTH)
    assert torch.equal(targets, torch.full((len(images),), TARGET))
    return maps[:, 0].double().numpy()


def test_gradcam_matches_the_hand_computed_formula(linear_model: LinearHead, images: torch.Tensor) -> None:
    expected, _ = _hand_maps(linear_model, images)
    np.testing.assert_allclose(_run(linear_model, images, "gradcam"), expected, rtol=0, atol=ATOL)


def test_layercam_matches_the_hand_computed_formula(linear_model: LinearHead, images: torch.Tensor) -> None:
    _, expected = _hand_maps(linear_model, images)
    np.testing.assert_allclose(_run(linear_model, images, "layercam"), expected, rtol=0, atol=ATOL)
    # the default is LayerCAM
    with LayerCAM(linear_model, {"level": linear_model.level}, target_class=TARGET) as extractor:
        maps, _ = extractor(images)
    np.testing.assert_allclose(maps[:, 0].double().numpy(), expected, rtol=0, atol=ATOL)


def test_gradcam_and_layercam_differ(linear_model: LinearHead, images: torch.Tensor) -> None:
    # Mixed-sign gradients: LayerCAM drops the negative ones pixel by pixel, Grad-CAM averages them.
    assert (linear_model.head.weight[TARGET] < 0).any() and (linear_model.head.weight[TARGET] > 0).any()
    gradcam, layercam = _run(linear_model, images, "gradcam"), _run(linear_model, images, "layercam")
    assert np.abs(gradcam - layercam).max() > 0.1


@pytest.fixture(scope="module")
def random_resnet18() -> Backbone:
    """A random-init torchvision ResNet-18 (the paper's architecture, without its weights)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    return Backbone(
        name="resnet18",
        model=model,
        levels={f"level{i}": getattr(model, f"layer{i}") for i in range(1, 5)},
        mean=RESNET18_MEAN,
        std=RESNET18_STD,
        weights_sha256="",
        weights_source="random init (test)",
    )


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    """Two random uint8 images (2, 64, 96, 3), non-square to catch H/W mix-ups."""
    return np.random.default_rng(0).integers(0, 256, size=(2, 64, 96, 3), dtype=np.uint8)


def _reference_gradcam(backbone: Backbone, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """grad-cam's GradCAM, one object per level (B, L, H, W), on a trainable copy of the frozen backbone."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = copy.deepcopy(backbone.model).requires_grad_(True)
    names = {module: name for name, module in backbone.model.named_modules()}
    x = backbone.normalize(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    wanted = [ClassifierOutputTarget(int(t)) for t in targets]
    maps = []
    for module in backbone.levels.values():
        with GradCAM(model=model, target_layers=[model.get_submodule(names[module])]) as cam:
            maps.append(cam(input_tensor=x, targets=wanted))
    return np.stack(maps, axis=1)


def test_gradcam_matches_the_grad_cam_package(random_resnet18: Backbone, noise: np.ndarray) -> None:
    with SaliencyExtractor(random_resnet18, cam="gradcam") as extractor:
        maps, targets = extractor(torch.from_numpy(noise))
    expected = _reference_gradcam(random_resnet18, noise, targets.numpy())
    assert maps.shape == expected.shape == (2, 4, 64, 96)
    np.testing.assert_allclose(maps.numpy(), expected, rtol=0, atol=ATOL)


def test_gradcam_through_saliency_maps(random_resnet18: Backbone, noise: np.ndarray) -> None:
    with (
        SaliencyExtractor(random_resnet18, cam="gradcam") as gradcam,
        SaliencyExtractor(random_resnet18) as layercam,
    ):
        direct, _ = gradcam(torch.from_numpy(noise))
        stored, _ = saliency_maps(gradcam, noise, batch_size=1)
        other, _ = saliency_maps(layercam, noise, batch_size=2)
    assert stored.dtype == np.float16
    np.testing.assert_allclose(stored, direct.numpy(), rtol=0, atol=1e-3)  # float16 steps in [0, 1]
    # a random network's shallow levels: LayerCAM and Grad-CAM maps are not the same maps
    assert np.abs(stored.astype(np.float32) - other.astype(np.float32))[:, 0].max() > 0.1


@pytest.mark.parametrize("cam", ["GradCAM", "scorecam", "", None])
def test_an_unknown_cam_is_refused(random_resnet18: Backbone, linear_model: LinearHead, cam: object) -> None:
    with pytest.raises(ValueError, match="cam"):
        SaliencyExtractor(random_resnet18, cam=cam)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layercam, gradcam"):
        LayerCAM(linear_model, {"level": linear_model.level}, cam=cam)  # type: ignore[arg-type]


def test_the_cam_setting_defaults_to_layercam_and_is_checked() -> None:
    assert SaliencySettings().cam == "layercam"
    assert load_settings(overrides={"saliency.cam": "gradcam"}).saliency.cam == "gradcam"
    with pytest.raises(SettingsError, match="cam"):
        load_settings(overrides={"saliency.cam": "scorecam"})
