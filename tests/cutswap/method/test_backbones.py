"""Saliency backbones: real ImageNet predictions, weights lookup, hash checks and the auto fallback.

No test needs the network or the real ResNet-18 file: a randomly initialised torchvision ResNet-18 is saved
to a temporary file and the expected hash is patched to that file's, which exercises the same code paths
(given path, hub cache, download hook) as the genuine file would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cutswap.errors import SettingsError
from cutswap.method import backbones
from cutswap.method.backbones import Backbone, load_backbone, sha256_file

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def effnet() -> Backbone:
    return load_backbone("efficientnet_lite0")


def test_efficientnet_lite0_predicts_imagenet_classes(effnet: Backbone, photos: np.ndarray) -> None:
    # Also proves the key mapping and the non-contiguous tensors of the shipped file load correctly: a wrong
    # mapping fails load_state_dict(strict=True), and misread strides predict one class for every image.
    x = effnet.normalize(torch.from_numpy(photos).permute(0, 3, 1, 2))
    with torch.no_grad():
        top1 = effnet.model(x).argmax(1).tolist()
    assert top1[0] in CAT_CLASSES
    assert top1[1] == ESPRESSO


def test_efficientnet_lite0_levels_frozen_and_provenance(effnet: Backbone) -> None:
    shapes = {}
    handles = [
        module.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape)))
        for name, module in effnet.levels.items()
    ]
    try:
        with torch.no_grad():
            effnet.model(torch.zeros(1, 3, 224, 224))
    finally:
        for handle in handles:
            handle.remove()
    assert list(effnet.levels) == ["level1", "level2", "level3", "level4"]
    assert shapes == {
        "level1": (1, 24, 56, 56),
        "level2": (1, 40, 28, 28),
        "level3": (1, 112, 14, 14),
        "level4": (1, 1280, 7, 7),
    }
    assert not effnet.model.training
    assert not any(p.requires_grad for p in effnet.model.parameters())
    record = json.loads(json.dumps(effnet.provenance()))
    assert record == {
        "name": "efficientnet_lite0",
        "sha256": backbones.EFFNET_SHA256,
        "source": effnet.weights_source,
        "fallback_reason": None,
    }
    assert Path(effnet.weights_source).name == backbones.EFFNET_FILENAME


def test_normalize_accepts_uint8_and_unit_floats(effnet: Backbone) -> None:
    raw = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    from_uint8 = effnet.normalize(raw)
    from_float = effnet.normalize(raw.float() / 255)
    torch.testing.assert_close(from_uint8, from_float)
    torch.testing.assert_close(from_float[0, :, 0, 0], torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]))


def test_auto_falls_back_to_efficientnet_without_resnet18_weights(
    empty_torch_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cutswap.method.backbones"):
        backbone = load_backbone("auto")
    assert backbone.name == "efficientnet_lite0"
    assert backbone.fallback_reason == (
        "ResNet-18 weights are not in torch's hub cache and download is not allowed"
    )  # no path of this host: saliency keys by it, and another host falling back must share the key
    assert backbone.provenance()["fallback_reason"] == backbone.fallback_reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(empty_torch_home / backbones.RESNET18_FILENAME) in warnings[0]  # the log says where
    assert "weights=" in warnings[0]


def test_resnet18_requested_without_weights_is_an_error(
    empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backbones, "_download_resnet18", _no_network_expected)
    with pytest.raises(SettingsError, match=backbones.RESNET18_FILENAME):
        load_backbone("resnet18")


@pytest.mark.parametrize("name", ["resnet18", "auto", "efficientnet_lite0"])
def test_weights_file_with_wrong_hash_is_rejected_naming_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / "suspicious.pth"
    path.write_bytes(b"not a weights file")
    actual = hashlib.sha256(b"not a weights file").hexdigest()
    with pytest.raises(SettingsError) as excinfo:
        load_backbone(name, weights=path)
    message = str(excinfo.value)
    assert str(path) in message
    assert actual in message
    expected = backbones.EFFNET_SHA256 if name == "efficientnet_lite0" else backbones.RESNET18_SHA256
    assert expected in message


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_missing_weights_file_is_an_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_backbone(name, weights=tmp_path / "absent.pth")


def test_unknown_backbone_name_is_an_error() -> None:
    with pytest.raises(SettingsError, match="unknown saliency backbone 'vgg16'"):
        load_backbone("vgg16")


def test_resnet18_loads_from_given_path(fake_resnet18: tuple[Path, str, torch.nn.Module]) -> None:
    path, digest, reference = fake_resnet18
    backbone = load_backbone("resnet18", weights=path)
    assert backbone.name == "resnet18"
    assert backbone.provenance() == {
        "name": "resnet18",
        "sha256": digest,
        "source": str(path),
        "fallback_reason": None,
    }
    assert backbone.levels == {f"level{i}": getattr(backbone.model, f"layer{i}") for i in range(1, 5)}
    assert backbone.mean == backbones.RESNET18_MEAN
    assert backbone.std == backbones.RESNET18_STD
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(backbone.model.state_dict()[name], tensor, rtol=0, atol=0)


def test_auto_uses_resnet18_from_the_hub_cache(
    empty_torch_home: Path, fake_resnet18: tuple[Path, str, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, digest, _ = fake_resnet18
    empty_torch_home.mkdir(parents=True)
    cached = empty_torch_home / backbones.RESNET18_FILENAME
    shutil.copy(path, cached)
    monkeypatch.setattr(backbones, "_download_resnet18", _no_network_expected)
    backbone = load_backbone("auto")
    assert backbone.provenance() == {
        "name": "resnet18",
        "sha256": digest,
        "source": str(cached),
        "fallback_reason": None,
    }


def test_corrupt_cache_file_falls_back_under_auto_and_fails_when_explicit(empty_torch_home: Path) -> None:
    empty_torch_home.mkdir(parents=True)
    (empty_torch_home / backbones.RESNET18_FILENAME).write_bytes(b"truncated download")
    backbone = load_backbone("auto")
    assert backbone.name == "efficientnet_lite0"
    assert "sha256" in (backbone.fallback_reason or "")
    with pytest.raises(SettingsError, match="sha256"):
        load_backbone("resnet18")


def test_download_is_used_only_when_allowed(
    empty_torch_home: Path, fake_resnet18: tuple[Path, str, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, digest, _ = fake_resnet18
    calls: list[Path] = []

    def fake_download(dest: Path) -> None:
        calls.append(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)

    monkeypatch.setattr(backbones, "_download_resnet18", fake_download)
    assert load_backbone("auto", allow_download=False).name == "efficientnet_lite0"
    assert calls == []
    backbone = load_backbone("auto", allow_download=True)
    assert calls == [empty_torch_home / backbones.RESNET18_FILENAME]
    assert backbone.name == "resnet18"
    assert backbone.weights_sha256 == digest


def test_failed_download_falls_back_under_auto(
    empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(dest: Path) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(backbones, "_download_resnet18", offline)
    backbone = load_backbone("auto", allow_download=True)
    assert backbone.name == "efficientnet_lite0"
    assert backbone.fallback_reason == "downloading ResNet-18 weights failed"  # the same on every host
    with pytest.raises(SettingsError, match="network unreachable"):
        load_backbone("resnet18", allow_download=True)


def test_file_hash_is_cached_per_path_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"a" * 3_000_000)  # several chunks
    first = sha256_file(path)
    assert first == hashlib.sha256(b"a" * 3_000_000).hexdigest()

    def must_not_rehash(*args: object) -> None:
        raise AssertionError("rehashed an unchanged file")

    monkeypatch.setattr(backbones.hashlib, "sha256", must_not_rehash)
    assert sha256_file(path) == first
    monkeypatch.undo()
    path.write_bytes(b"b" * 3_000_000)  # same size: the mtime must tell the change
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert sha256_file(path) == hashlib.sha256(b"b" * 3_000_000).hexdigest()


def _no_network_expected(dest: Path) -> None:
    raise AssertionError(f"tried to download to {dest} although download was not allowed")
