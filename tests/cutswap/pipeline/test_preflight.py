"""``check_environment``: what a run needs from the machine is refused in one line before anything starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cutswap.errors import SettingsError
from cutswap.method import backbones
from cutswap.pipeline import preflight
from cutswap.pipeline.preflight import check_environment
from cutswap.pipeline.settings import load_settings

DEMO = Path(__file__).parents[3] / "configs" / "demo.yaml"


def _settings(tmp_path: Path, **overrides):
    roots = {"storage_root": str(tmp_path / "storage"), "reports_root": str(tmp_path / "reports")}
    return load_settings(DEMO, {**roots, **overrides})


def test_the_demo_passes_offline(tmp_path: Path, empty_torch_home: Path):
    check_environment(_settings(tmp_path))
    assert (tmp_path / "storage").is_dir() and (tmp_path / "reports").is_dir()


def test_the_weights_file_and_cache_are_the_ones_the_backbone_reads(empty_torch_home: Path):
    # preflight avoids importing torch; its copy of the name and the cache rule must match the loader's.
    assert preflight.RESNET18_FILENAME == backbones.RESNET18_FILENAME
    assert preflight._hub_checkpoints() == empty_torch_home


@pytest.mark.parametrize("where", ["/proc/cutswap-storage", "a-file"])
def test_a_root_that_cannot_be_written_is_named(tmp_path: Path, where: str):
    target = tmp_path / where if where == "a-file" else Path(where)
    if where == "a-file":
        target.write_text("not a folder")
    with pytest.raises(
        SettingsError, match=rf"^storage_root {target}: cannot write there .*choose a writable"
    ):
        check_environment(_settings(tmp_path, storage_root=str(target)))


def test_a_scheduler_that_does_not_answer_is_refused(tmp_path: Path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(
        SettingsError, match=rf"parallel.address tcp://127.0.0.1:{port}: no scheduler answers"
    ):
        check_environment(_settings(tmp_path, **{"parallel.address": f"tcp://127.0.0.1:{port}"}))


def test_a_scheduler_that_answers_passes(tmp_path: Path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_environment(_settings(tmp_path, **{"parallel.address": f"127.0.0.1:{server.getsockname()[1]}"}))


@pytest.mark.parametrize(
    ("overrides", "setting", "fix"),
    [
        ({"saliency.backbone": "resnet18"}, "saliency.backbone", "set saliency.backbone=efficientnet_lite0"),
        ({"train.pretrained": "true"}, "train.trunk", "set train.pretrained=false"),
        # The issue's case: imagenet-gde without baseline_trunk takes the classifiers' trunk, ResNet-18.
        (
            {"train.baseline_trunk": "null"},
            "train.baseline_trunk",
            "set train.baseline_trunk=efficientnet_lite0",
        ),
    ],
)
def test_resnet18_weights_not_at_hand_are_refused_before_the_run(
    tmp_path: Path, empty_torch_home: Path, overrides, setting, fix
):
    with pytest.raises(SettingsError, match=rf"^{setting} needs ResNet-18's ImageNet weights.*{fix}"):
        check_environment(_settings(tmp_path, **overrides))


@pytest.mark.parametrize("how", ["cache", "download", "path"])
def test_resnet18_weights_at_hand_pass(tmp_path: Path, empty_torch_home: Path, how: str):
    weights = tmp_path / "w.pth"
    overrides = {"saliency.backbone": "resnet18"}
    if how == "cache":
        empty_torch_home.mkdir(parents=True)
        (empty_torch_home / backbones.RESNET18_FILENAME).write_bytes(b"")
    elif how == "download":
        overrides["saliency.allow_download"] = "true"
    else:
        weights.write_bytes(b"")
        overrides["saliency.weights"] = str(weights)
    check_environment(_settings(tmp_path, **overrides))


def test_a_weights_path_that_does_not_exist_is_named(tmp_path: Path, empty_torch_home: Path):
    missing = tmp_path / "nope.pth"
    overrides = {"saliency.backbone": "resnet18", "saliency.weights": str(missing)}
    with pytest.raises(SettingsError, match=rf"the weights file {missing} does not exist"):
        check_environment(_settings(tmp_path, **overrides))
