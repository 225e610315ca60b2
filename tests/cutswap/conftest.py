"""Fixtures shared by the library tests: tiny striped images and the ingest store a train run reads;
scikit-image's photographs and a stand-in ResNet-18 weights file for the ImageNet tests; a tiny benchmark
run on disk for the detector, predict and export tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from cutswap.method import backbones
from cutswap.pipeline.stores import StoreRef, build_store, write_array
from tests.support.runs import TinyRun, build_run, stand_in_resnet18


@pytest.fixture
def make_stripes() -> Callable[..., np.ndarray]:
    """``make(size, n)``: n noisy copies of a horizontal ramp, uint8 (n, size, size, 3); learnable in a few
    steps, and 16 px is the smallest size where ResNet-18 still ends at 1x1."""

    def make(size: int = 16, n: int = 12) -> np.ndarray:
        rng = np.random.default_rng(0)
        base = np.linspace(0, 255, size, dtype=np.float32)
        plane = np.broadcast_to(base[None, :, None], (size, size, 3))
        noisy = [np.clip(plane + rng.normal(0, 8, plane.shape), 0, 255) for _ in range(n)]
        return np.stack(noisy).astype(np.uint8)

    return make


@pytest.fixture
def ingest_store() -> Callable[[Path, np.ndarray], StoreRef]:
    """``make(root, images)``: a minimal ingest store holding the images, all normal training images."""

    def make(root: Path, images: np.ndarray) -> StoreRef:
        def write(group):
            write_array(group, "images", images)
            write_array(group, "masks", np.zeros(images.shape[:3], bool))
            group.attrs["samples"] = [
                {
                    "split": "train",
                    "label": 0,
                    "defect_type": "good",
                    "image_path": f"{i}.png",
                    "mask_path": None,
                }
                for i in range(len(images))
            ]

        return build_store(root, "ingest", "stripes", {"n": len(images)}, {}, write)[0]

    return make


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize (antialiased) to ``size``: uint8 (size, size, 3)."""
    h, w, _ = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = torch.from_numpy(image[top : top + side, left : left + side]).permute(2, 0, 1)[None].float()
    resized = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


@pytest.fixture(scope="session")
def photos() -> np.ndarray:
    """scikit-image's bundled chelsea (a cat) and coffee (an espresso), uint8 (2, 224, 224, 3)."""
    return np.stack([_square(skdata.chelsea(), 224), _square(skdata.coffee(), 224)])


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TORCH_HOME with nothing in it, so that no real cached weights can leak into a test."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    hub = Path(torch.hub.get_dir())
    assert hub.is_relative_to(home), f"torch.hub.set_dir() was called elsewhere; hub dir is {hub}"
    return hub / "checkpoints"


@pytest.fixture
def fake_resnet18(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str, torch.nn.Module]:
    """A random ResNet-18 state dict on disk, with the module's expected hash patched to match it.

    No test needs the network or the real file: this exercises the same code paths (given path, hub
    cache, download hook) as the genuine file would.
    """
    path, digest, model = stand_in_resnet18(tmp_path / "weights")
    monkeypatch.setattr(backbones, "RESNET18_SHA256", digest)
    return path, digest, model


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """The demo's pipeline at toy scale: the embedded ``textures`` dataset (brick, 20 normal training
    images, 4 normal and 4 defective test images at 32 px), CutPaste trained for 2 steps and the untrained
    ``imagenet-gde`` and ``patchcore`` baselines, evaluated by the real stages (the patch route; PatchCore's
    own maps); the report rows are
    written from the evaluate stores (the saliency stages that the full report also reads are not needed
    by a detector). About 10 s on 2 cores."""
    return build_run(
        tmp_path_factory.mktemp("tiny-run"),
        "tiny",
        categories=["brick"],
        methods=["cutpaste", "imagenet-gde", "patchcore"],
        train={"baseline_trunk": "efficientnet_lite0"},
    )


@pytest.fixture(scope="session")
def swapped_run(tmp_path_factory) -> TinyRun:
    """``demo_run`` with its trunks swapped: the classifiers on EfficientNet-Lite0, the no-training rows on
    an ImageNet ResNet-18 (a stand-in weights file, found where a user's would be: torch's hub cache, with
    the expected hash patched to its own). With ``demo_run`` it puts every exportable row on both trunks;
    brick only, about 15 s on 2 cores."""
    base = tmp_path_factory.mktemp("swapped-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(base / "torch_home"))
        hub = Path(torch.hub.get_dir())
        assert hub.is_relative_to(base), f"torch.hub.set_dir() was called elsewhere; hub dir is {hub}"
        _, digest, _ = stand_in_resnet18(hub / "checkpoints")
        patch.setattr(backbones, "RESNET18_SHA256", digest)
        return build_run(
            base,
            "swapped",
            categories=["brick"],
            methods=["cutswap", "random-swap", "cutpaste", "imagenet-gde", "patchcore"],
            train={"trunk": "efficientnet_lite0", "baseline_trunk": "resnet18"},
        )


@pytest.fixture
def storage(tmp_path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def kit():
    """The dataset builders of ``tests.support.layouts`` (``kit.make_visa(root)``, ``kit.write_bomb(path)``,
    ...), for the layout readers' and the ingest stage's tests."""
    from tests.support import layouts

    return layouts
