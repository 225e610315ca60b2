"""``saliency.cam``, ``cluster.anchor`` (``threshold``, ``seed``): existing keys stay, the ablations key.

The dicts below are what the saliency and cluster stages keyed by default before these settings existed
(read off ``saliency_category`` and ``cluster_category`` on the defaults, before the change): at the
defaults the stages must key exactly them, in the same order, so every existing store keeps its key.
Then the cluster stage end to end under each ablation rule (what it stores, shards, the pairs stage on it),
and the saliency stage under Grad-CAM (what it records and computes).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cutswap.data.builtin.textures import build_textures
from cutswap.data.layouts.mvtec import scan_mvtec
from cutswap.method.backbones import load_backbone
from cutswap.method.clustering import (
    UNRANKED,
    cluster_maps,
    cluster_ranks,
    random_cluster_choice,
    threshold_mask,
    threshold_ranks,
)
from cutswap.method.pairs import STEPS
from cutswap.method.saliency import SaliencyExtractor
from cutswap.pipeline import parallel
from cutswap.pipeline.readers import train_indices
from cutswap.pipeline.settings import ClusterSettings, SaliencySettings, Settings
from cutswap.pipeline.stages import cluster as cluster_stage
from cutswap.pipeline.stages import saliency as saliency_stage
from cutswap.pipeline.stages.cluster import cluster_category, cluster_key
from cutswap.pipeline.stages.ingest import ingest_category
from cutswap.pipeline.stages.pairs import pairs_category
from cutswap.pipeline.stages.saliency import saliency_category, saliency_key
from cutswap.pipeline.stores import StoreRef, build_store, open_store, write_array

PROVENANCE = {
    "name": "efficientnet_lite0",
    "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "source": "/somewhere/efficientnet-lite0-57934424.pth",
    "fallback_reason": "ResNet-18 weights are not in torch's hub cache",
}

#: The saliency stage's keyed dict at default settings before ``cam`` (with the provenance above).
SALIENCY_KEY_BEFORE = {
    "levels": ["level1", "level2", "level3", "level4"],
    "target_class": None,
    "shallow_tanh": False,
    "input_size": 224,
    "backbone": {
        "name": "efficientnet_lite0",
        "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "fallback_reason": "ResNet-18 weights are not in torch's hub cache",
    },
}

#: The cluster stage's keyed dict at default settings before ``anchor``, ``threshold`` and ``seed``.
CLUSTER_KEY_BEFORE = {"method": "fcm", "k": 3, "m": 2.0, "bins": 1024, "max_iter": 100, "tol": 1e-05}


def _same_bytes(a: dict, b: dict) -> bool:
    """Equal, in the same order and with the same types (what ``json.dumps`` without sorting shows)."""
    return a == b and json.dumps(a) == json.dumps(b)


class _FakeBackbone:
    def provenance(self) -> dict:
        return dict(PROVENANCE)


@pytest.fixture
def keyed_by_stages(monkeypatch: pytest.MonkeyPatch) -> dict:
    """``stage -> (keyed settings, extra attrs)`` as the stages hand them to ``build_store``."""
    seen: dict = {}

    def build_store(root, stage, name, keyed, inputs, write, mode="run", extra=None):
        seen[stage] = (keyed, extra)
        return StoreRef(stage, name, "0" * 16, str(root)), False

    monkeypatch.setattr(saliency_stage, "build_store", build_store)
    monkeypatch.setattr(cluster_stage, "build_store", build_store)
    monkeypatch.setattr(saliency_stage, "_backbone", lambda *args: _FakeBackbone())
    return seen


def _stage_keys(seen: dict, settings: Settings, tmp_path) -> tuple[dict, dict]:
    ref = StoreRef("ingest", "brick", "0" * 16, str(tmp_path))
    saliency_category(settings, ref)
    cluster_category(settings, ref)
    return seen["saliency"], seen["cluster"]


def test_default_keys_are_the_keys_of_existing_stores(keyed_by_stages: dict, tmp_path) -> None:
    (sal, sal_extra), (clu, clu_extra) = _stage_keys(
        keyed_by_stages, Settings(storage_root=tmp_path), tmp_path
    )
    assert _same_bytes(sal, SALIENCY_KEY_BEFORE)
    assert _same_bytes(clu, CLUSTER_KEY_BEFORE)
    # ... while the attrs record the settings always
    assert sal_extra["cam"] == "layercam" and clu_extra == {"anchor": "top"}
    assert _same_bytes(saliency_key(SaliencySettings(), PROVENANCE), SALIENCY_KEY_BEFORE)
    assert _same_bytes(cluster_key(ClusterSettings()), CLUSTER_KEY_BEFORE)


def test_ablation_settings_are_keyed(keyed_by_stages: dict, tmp_path) -> None:
    settings = Settings(
        storage_root=tmp_path,
        saliency=SaliencySettings(cam="gradcam"),
        cluster=ClusterSettings(anchor="random", seed=3),
    )
    (sal, sal_extra), (clu, clu_extra) = _stage_keys(keyed_by_stages, settings, tmp_path)
    assert sal == {**SALIENCY_KEY_BEFORE, "cam": "gradcam"}
    assert sal_extra["cam"] == "gradcam"
    assert clu == {**CLUSTER_KEY_BEFORE, "anchor": "random", "seed": 3}
    assert clu_extra == {"anchor": "random"}


def test_each_rule_keys_the_settings_it_reads_only() -> None:
    threshold = {**CLUSTER_KEY_BEFORE, "anchor": "threshold", "threshold": 0.5}
    assert cluster_key(ClusterSettings(anchor="threshold")) == threshold
    seven = cluster_key(ClusterSettings(anchor="threshold", threshold=0.7, seed=9))
    assert seven == {**threshold, "threshold": 0.7}
    random = {**CLUSTER_KEY_BEFORE, "anchor": "random", "seed": 0}
    assert cluster_key(ClusterSettings(anchor="random")) == random
    assert cluster_key(ClusterSettings(anchor="random", threshold=0.7))["seed"] == 0
    # the top rule reads neither: they cannot split its stores
    assert _same_bytes(cluster_key(ClusterSettings(threshold=0.7, seed=9)), CLUSTER_KEY_BEFORE)
    # and the other settings keep changing the key as before
    assert cluster_key(ClusterSettings(k=4)) == {**CLUSTER_KEY_BEFORE, "k": 4}
    assert saliency_key(SaliencySettings(input_size=None), PROVENANCE)["input_size"] is None
    assert "cam" not in saliency_key(SaliencySettings(cam="layercam", batch_size=4), PROVENANCE)


def test_bad_ablation_settings_are_refused() -> None:
    for bad in ({"anchor": "bottom"}, {"threshold": 0.0}, {"threshold": 1.0}, {"seed": -1}):
        with pytest.raises(ValueError):
            ClusterSettings(**bad)


# The cluster stage under the ablation rules, on stored maps.

LEVELS = ["level1", "level4"]


def _maps(n: int, size: int = 24) -> np.ndarray:
    """(n, 2, size, size) float16 normalised maps: a blob of random place and width plus noise; map (0, 1)
    is constant (all zero)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    out = np.empty((n, len(LEVELS), size, size))
    for i in range(n):
        for level in range(len(LEVELS)):
            cy, cx, sigma = rng.uniform(5, size - 5, 2).tolist() + [rng.uniform(1.5, 5.0)]
            m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)) + rng.uniform(
                0, 0.1, (size, size)
            )
            out[i, level] = (m - m.min()) / (m.max() - m.min())
    out[0, 1] = 0.0
    return out.astype(np.float16)


@pytest.fixture
def saliency_store(tmp_path) -> tuple[np.ndarray, StoreRef]:
    maps = _maps(10)
    ref, _ = build_store(
        tmp_path, "saliency", "blobs", {"n": 10}, {}, lambda g: write_array(g, "maps", maps),
        extra_attrs={"levels": LEVELS},
    )  # fmt: skip
    return maps, ref


def _cluster(tmp_path, saliency: StoreRef, **cluster: object) -> tuple[Settings, StoreRef]:
    settings = Settings(storage_root=tmp_path, cluster=ClusterSettings(**cluster))
    ref, _ = cluster_category(settings, saliency)
    return settings, ref


def test_threshold_store_has_nan_centroids_and_pairs_run_on_it(saliency_store, tmp_path) -> None:
    maps, saliency = saliency_store
    settings, ref = _cluster(tmp_path, saliency, anchor="threshold", threshold=0.6)
    group = open_store(ref)
    assert group.attrs["anchor"] == "threshold"
    assert group["centroids"].shape == (10, 2, 3) and np.isnan(group["centroids"][:]).all()
    flat = torch.from_numpy(maps.reshape(20, 24, 24).astype(np.float32))
    top, rank = group["top"][:], group["rank"][:]
    np.testing.assert_array_equal(top, threshold_mask(flat, 0.6).numpy().reshape(maps.shape))
    np.testing.assert_array_equal(rank, threshold_ranks(flat, 0.6).numpy().reshape(maps.shape))
    np.testing.assert_array_equal(rank == 0, top)
    assert not top[0, 1].any() and (rank[0, 1] == UNRANKED).all()  # the constant map
    # the pairs stage reads top and rank only: the constant map falls back, the others are guided
    pairs, _ = pairs_category(settings, ref)
    step = open_store(pairs)["step"][:]
    assert (step[0, 1] == STEPS.index("random")).all()
    assert (np.delete(step.reshape(20, -1), 1, axis=0) != STEPS.index("random")).mean() > 0.9


def test_random_store_matches_one_library_call_whatever_the_shards(
    saliency_store, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    maps, saliency = saliency_store
    monkeypatch.setattr(parallel, "SHARD", 3)  # four ranges of images: map offsets 0, 6, 12, 18
    _, ref = _cluster(tmp_path, saliency, anchor="random", seed=4)
    group = open_store(ref)
    assert group.attrs["anchor"] == "random"
    flat = torch.from_numpy(maps.reshape(20, 24, 24).astype(np.float32))
    centroids, top = cluster_maps(flat)
    ranks = cluster_ranks(flat, centroids)
    chosen = random_cluster_choice(centroids, seed=4)  # one call over the whole stack
    np.testing.assert_allclose(group["centroids"][:].reshape(20, 3), centroids.numpy(), rtol=1e-6)
    expected_top = (ranks == chosen[:, None, None]).numpy()
    np.testing.assert_array_equal(group["top"][:].reshape(20, 24, 24), expected_top)
    near = np.abs(ranks.numpy().astype(int) - chosen.numpy()[:, None, None])
    expected_rank = np.where(ranks.numpy() == UNRANKED, UNRANKED, near)
    np.testing.assert_array_equal(group["rank"][:].reshape(20, 24, 24), expected_rank)
    assert (chosen > 0).any()  # not the top rule in disguise
    assert not np.array_equal(group["top"][:].reshape(20, 24, 24), top.numpy())
    assert not group["top"][0, 1].any() and (group["rank"][0, 1] == UNRANKED).all()


def test_top_store_is_keyed_as_before(saliency_store, tmp_path) -> None:
    _, saliency = saliency_store
    _, ref = _cluster(tmp_path, saliency)
    group = open_store(ref)
    assert group.attrs["anchor"] == "top"
    assert group.attrs["settings"] == CLUSTER_KEY_BEFORE  # attrs store JSON with sorted keys
    _, other = _cluster(tmp_path, saliency, anchor="threshold")
    assert other.key != ref.key


# The saliency stage under Grad-CAM.


@pytest.fixture
def ingest(tmp_path) -> tuple[Settings, StoreRef]:
    root = build_textures(tmp_path / "data", seed=1, image_size=32, n_train=4, n_test_good=1, n_test_defect=1)
    settings = Settings.model_validate(
        {
            "storage_root": tmp_path / "storage",
            "dataset": {"name": "mvtec", "root": root, "image_size": 32},
            "saliency": {"backbone": "efficientnet_lite0", "batch_size": 4, "input_size": 64},
            "train": {"device": "cpu"},
        }
    )
    ref, _ = ingest_category(settings, root, "brick", scan_mvtec(root, ["brick"]))
    return settings, ref


def test_saliency_stage_computes_and_records_gradcam(ingest) -> None:
    settings, ingest_ref = ingest
    layercam, _ = saliency_category(settings, ingest_ref)
    gradcam_saliency = settings.saliency.model_copy(update={"cam": "gradcam"})
    gradcam_settings = settings.model_copy(update={"saliency": gradcam_saliency})
    gradcam, _ = saliency_category(gradcam_settings, ingest_ref)
    assert gradcam.key != layercam.key
    assert open_store(layercam).attrs["cam"] == "layercam" and open_store(gradcam).attrs["cam"] == "gradcam"
    assert open_store(gradcam).attrs["settings"]["cam"] == "gradcam"
    assert "cam" not in open_store(layercam).attrs["settings"]
    source = open_store(ingest_ref)
    images = source["images"].get_orthogonal_selection((train_indices(source),))
    with SaliencyExtractor(load_backbone("efficientnet_lite0"), input_size=64, cam="gradcam") as extractor:
        expected, _ = extractor(torch.from_numpy(images))
    stored = open_store(gradcam)["maps"][:].astype(np.float32)
    np.testing.assert_allclose(stored, expected.numpy(), rtol=0, atol=2e-3)  # float16 steps, thread counts
    assert np.abs(stored - open_store(layercam)["maps"][:].astype(np.float32)).max() > 0.1
