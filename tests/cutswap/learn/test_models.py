"""Classifier trunks: ImageNet initialisation that really classifies, per-trunk normalisation and width,
the weights lookup shared with the saliency backbone, and the trained model's stages for Grad-CAM and
PatchCore (found by module path, so ``torch.export`` sees them too).

The real ResNet-18 file cannot be had offline: its ImageNet test runs only where torch's hub cache holds
it; the lookup itself is tested with a stand-in file whose expected hash is patched (``fake_resnet18``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cutswap.errors import SettingsError
from cutswap.learn.models import STAGE_PATHS, TRUNK_STAGES, TRUNKS, ProjectionNet, build_model, build_trunk
from cutswap.method import backbones

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def _unit(photos: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255


def _top1(model: ProjectionNet, classifier: tuple[torch.Tensor, torch.Tensor], photos: np.ndarray) -> list:
    """ImageNet top-1 of the model's embedding through the weights file's own 1000-class layer: proves
    the trunk, its ImageNet weights and the model's normalisation together."""
    weight, bias = classifier
    with torch.no_grad():
        features = model.eval().embed(_unit(photos))
    return (features @ weight.T + bias).argmax(1).tolist()


def test_efficientnet_lite0_imagenet_trunk_classifies_chelsea_and_coffee(photos: np.ndarray) -> None:
    model = build_model([32], pretrained=True, num_classes=2, trunk="efficientnet_lite0")
    state = torch.load(backbones.effnet_packaged_weights(), map_location="cpu", weights_only=True)
    top1 = _top1(model, (state["_fc.weight"], state["_fc.bias"]), photos)
    assert top1[0] in CAT_CLASSES and top1[1] == ESPRESSO
    assert model.width == 1280 and model.classifier.in_features == 32
    assert model.trunk_info.to_dict() == {
        "name": "efficientnet_lite0",
        "pretrained": True,
        "sha256": backbones.EFFNET_SHA256,
    }
    assert model.trunk_info.label == "efficientnet_lite0 (ImageNet)"


def test_from_scratch_trunks_do_not_classify(photos: np.ndarray) -> None:
    """Control for the test above: the same code without ImageNet weights gives arbitrary classes."""
    torch.manual_seed(0)
    model = build_model([32], pretrained=False, trunk="efficientnet_lite0")
    state = torch.load(backbones.effnet_packaged_weights(), map_location="cpu", weights_only=True)
    assert _top1(model, (state["_fc.weight"], state["_fc.bias"]), photos) != [281, ESPRESSO]
    assert model.trunk_info.label == "efficientnet_lite0 (scratch)" and model.trunk_info.sha256 is None


@pytest.mark.skipif(
    not (Path(torch.hub.get_dir()) / "checkpoints" / backbones.RESNET18_FILENAME).is_file(),
    reason="torchvision's ResNet-18 ImageNet weights are not in torch's hub cache (no download here)",
)
def test_resnet18_imagenet_trunk_classifies_chelsea_and_coffee(photos: np.ndarray) -> None:
    model = build_model([32], pretrained=True, trunk="resnet18")
    path, _ = backbones.resnet18_weights()
    state = torch.load(path, map_location="cpu", weights_only=True)
    top1 = _top1(model, (state["fc.weight"], state["fc.bias"]), photos)
    assert top1[0] in CAT_CLASSES and top1[1] == ESPRESSO


def test_resnet18_trunk_uses_the_saliency_lookup_checked_by_hash(
    fake_resnet18: tuple[Path, str, torch.nn.Module], empty_torch_home: Path
) -> None:
    path, digest, reference = fake_resnet18
    trunk, info = build_trunk("resnet18", pretrained=True, weights=path)
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    got = trunk.state_dict()
    assert set(got) == set(expected) and all(torch.equal(got[k], v) for k, v in expected.items())
    assert info.to_dict() == {"name": "resnet18", "pretrained": True, "sha256": digest}
    # From torch's hub cache, as the saliency backbone finds it.
    empty_torch_home.mkdir(parents=True)
    (empty_torch_home / backbones.RESNET18_FILENAME).write_bytes(path.read_bytes())
    assert build_trunk("resnet18", pretrained=True)[1].sha256 == digest


def test_resnet18_trunk_without_weights_is_an_error_saying_how(empty_torch_home: Path) -> None:
    with pytest.raises(SettingsError, match="not in torch's hub cache.*efficientnet_lite0"):
        build_trunk("resnet18", pretrained=True)


def test_a_weights_file_with_the_wrong_hash_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "weights.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    for name in TRUNKS:
        with pytest.raises(SettingsError, match=str(bad)):
            build_trunk(name, pretrained=True, weights=bad)


@pytest.mark.parametrize(
    ("trunk", "width", "mean"), [("resnet18", 512, 0.485), ("efficientnet_lite0", 1280, 0.5)]
)
def test_each_trunk_has_its_width_normalisation_and_stages(trunk: str, width: int, mean: float) -> None:
    model = ProjectionNet([16], 3, trunk).eval()
    features, logits = model(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, width) and logits.shape == (2, 3)
    assert model.mean[0, 0, 0, 0].item() == pytest.approx(mean)
    strides = []
    captured = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: captured.append(out)) for m in model.stages.values()]
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    strides = [64 // out.shape[-1] for out in captured]
    assert list(model.stages) == ["layer1", "layer2", "layer3", "layer4"] and strides == [4, 8, 16, 32]


def test_unknown_trunk_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown trunk 'vgg'"):
        build_trunk("vgg")


@pytest.mark.parametrize("trunk", TRUNKS)
def test_trunk_steps_are_the_trunks_forward_through_every_stage(trunk: str) -> None:
    """``stage_features`` runs ``trunk_steps`` and picks stages by path: the steps must be the trunk's own
    modules under those paths, in an order that passes every stage, and together the trunk's forward."""
    torch.manual_seed(0)
    model = ProjectionNet([16], 2, trunk).eval()
    steps = model.trunk_steps()
    paths = [path for path, _ in steps]
    assert all(model.trunk.get_submodule(path) is module for path, module in steps)
    stage_positions = [paths.index(STAGE_PATHS[trunk][name]) for name in TRUNK_STAGES]
    assert stage_positions == sorted(stage_positions)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        y = (x - model.mean) / model.std
        for _, module in steps:
            y = module(y)
        torch.testing.assert_close(y.mean(dim=(2, 3)), model.embed(x), rtol=1e-5, atol=1e-6)


class _Holder(nn.Module):
    """Holds a model a second time, as ``ExportedDetector`` holds its model and again in its PatchCore
    graph: a module shared this way makes ``torch.export`` hand out a new proxy at every submodule access."""

    def __init__(self, model: ProjectionNet) -> None:
        super().__init__()
        self.model = model


class _SharedStages(nn.Module):
    def __init__(self, model: ProjectionNet) -> None:
        super().__init__()
        self.model, self.holder = model, _Holder(model)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.holder.model.stage_features(images, ("layer2", "layer3")))


@pytest.mark.parametrize("trunk", TRUNKS)
def test_stage_features_export_when_the_model_is_shared(trunk: str) -> None:
    """The issue's ``KeyError: 'layer2'``: stages looked up by module object were never found under
    ``torch.export`` once the model was held twice. By path, the program gives the eager maps."""
    torch.manual_seed(0)
    module = _SharedStages(ProjectionNet([16], 2, trunk).eval()).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        program = torch.export.export(module, (x,))
        expected, got = module(x), program.module()(x)
    assert [t.shape[1] for t in got] == ([128, 256] if trunk == "resnet18" else [40, 112])
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6)
