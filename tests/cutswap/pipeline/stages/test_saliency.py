"""The saliency stage computes with exactly the backbone its key names, on every worker."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cutswap.data.builtin.textures import build_textures
from cutswap.data.layouts.mvtec import scan_mvtec
from cutswap.errors import SettingsError
from cutswap.method import backbones
from cutswap.pipeline import parallel
from cutswap.pipeline.parallel import dask_pool
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.ingest import ingest_category
from cutswap.pipeline.stages.saliency import saliency_category
from cutswap.pipeline.stores import open_store


def _worker_with_its_own_resnet18(home: str, weights: bytes, digest: str) -> str:
    """Runs on the worker: a torch cache holding a (stand-in) ResNet-18 that this process accepts."""
    hub = Path(home) / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)
    (hub / backbones.RESNET18_FILENAME).write_bytes(weights)
    os.environ["TORCH_HOME"] = home
    backbones.RESNET18_SHA256 = digest
    return backbones.load_backbone("auto").name


@pytest.mark.slow
def test_workers_with_another_torch_cache_compute_with_the_resolved_backbone(
    tmp_path, empty_torch_home, fake_resnet18, monkeypatch
):
    """Here ``auto`` resolves to EfficientNet-Lite0 (no ResNet-18 in this cache); the worker's cache has
    one, so resolving ``auto`` again there would give ResNet-18 maps under an EfficientNet key."""
    path, digest, _ = fake_resnet18
    monkeypatch.setattr(backbones, "RESNET18_SHA256", "0" * 64)  # this process: no usable ResNet-18
    root = build_textures(tmp_path / "data", seed=1, image_size=32, n_train=8, n_test_good=1, n_test_defect=1)
    table = scan_mvtec(root, ["brick"])
    monkeypatch.setattr(parallel, "SHARD", 4)  # two ranges: the cluster really computes them

    def settings(storage: str) -> Settings:
        return Settings.model_validate(
            {
                "storage_root": tmp_path / storage,
                "dataset": {"name": "mvtec", "root": root, "image_size": 32},
                "saliency": {"backbone": "auto", "batch_size": 4, "input_size": 32},
                "train": {"device": "cpu"},
            }
        )

    here = settings("here")
    ingest, _ = ingest_category(here, root, "brick", table)
    reference, _ = saliency_category(here, ingest)
    assert open_store(reference).attrs["backbone"]["name"] == "efficientnet_lite0"

    there = settings("there")
    ingest_there, _ = ingest_category(there, root, "brick", table)
    with dask_pool(workers=1) as dask:
        seen = dask.client.run(
            _worker_with_its_own_resnet18, str(tmp_path / "worker-home"), path.read_bytes(), digest
        )
        assert list(seen.values()) == ["resnet18"]  # the worker alone would pick ResNet-18
        ref, _ = saliency_category(there, ingest_there, dask=dask)
    group = open_store(ref)
    assert ref.key == reference.key and group.attrs["backbone"]["name"] == "efficientnet_lite0"
    # the same maps as in-process, up to float16 rounding of other thread counts
    np.testing.assert_allclose(group["maps"][:], open_store(reference)["maps"][:], atol=2e-3)


def test_a_backbone_with_other_weights_than_resolved_is_refused(tmp_path, empty_torch_home, fake_resnet18):
    path, digest, _ = fake_resnet18
    assert backbones.load_exact_backbone("resnet18", digest, str(path)).name == "resnet18"
    with pytest.raises(SettingsError, match="resolved " + "1" * 64):
        backbones.load_exact_backbone("resnet18", "1" * 64, str(path))
    with pytest.raises(ValueError, match="resolved backbone name"):
        backbones.load_exact_backbone("auto", digest)
