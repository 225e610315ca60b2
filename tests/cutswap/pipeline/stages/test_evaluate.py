"""The evaluate stage on hand-built ingest and train stores: what it stores, the metrics it records, and
which settings recompute it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cutswap.errors import StoreError
from cutswap.learn import checkpoint as ckpt
from cutswap.learn.models import ProjectionNet
from cutswap.pipeline.readers import load_detector
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.evaluate import evaluate_run
from cutswap.pipeline.stores import build_store, open_store, put_file, write_array
from cutswap.score.metrics import f1_max, image_auroc, pixel_metrics

SIZE = 32


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return _make_stores(tmp_path_factory.mktemp("evaluate"))


def _make_stores(root, with_masks: bool = True):
    """An ingest store (8 train, 3 normal + 3 defective test images) and a train store holding a
    random-init classifier, written through ``build_store`` as the real stages write them.
    ``with_masks=False``: the defective images have no ground-truth mask file (image-level data)."""
    rng = np.random.default_rng(0)
    n_train, n_good, n_bad = 8, 3, 3
    n = n_train + n_good + n_bad
    noise = ndimage.gaussian_filter(rng.normal(size=(n, SIZE, SIZE, 3)), sigma=(0, 1.5, 1.5, 0))
    images = np.clip(128 + 400 * noise, 0, 255).astype(np.uint8)
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n - n_bad, n):
        y, x = rng.integers(2, SIZE - 10, 2)
        masks[i, y : y + 8, x : x + 8] = True
    images[masks] = 255
    split = ["train"] * n_train + ["test"] * (n_good + n_bad)
    label = [0] * (n_train + n_good) + [1] * n_bad
    table = [
        {
            "split": s,
            "label": y,
            "defect_type": "spot" if y else "good",
            "image_path": f"{i}.png",
            "mask_path": f"{i}_mask.png" if y and with_masks else None,
        }
        for i, (s, y) in enumerate(zip(split, label, strict=True))
    ]

    def write_ingest(group):
        write_array(group, "images", images)
        write_array(group, "masks", masks)
        group.attrs["samples"] = table

    ingest, _ = build_store(root, "ingest", "brick", {"size": SIZE}, {}, write_ingest)

    def write_train(group):
        torch.manual_seed(0)
        model = ProjectionNet([16], 2)
        payload = {"model": model.state_dict(), "head_dims": [16], "num_classes": 2}
        put_file(group, "checkpoint.pt", ckpt.to_bytes(payload))

    train, _ = build_store(
        root,
        "train",
        "brick-cutswap-s0",
        {"seed": 0},
        {"ingest": ingest},
        write_train,
        extra_attrs={"method": "cutswap", "seed": 0},
    )
    return root, ingest, train, masks[n_train:]


def _settings(root, **evaluate) -> Settings:
    # 8 training images x 9 crops, of which a fixed random 40 fit the patch density.
    base = {"patch_size": 16, "patch_stride": 8, "sigma": 2.0, "max_fit_patches": 40}
    return Settings(storage_root=root, train={"device": "cpu"}, evaluate={**base, **evaluate})


def test_patch_run_stores_maps_and_every_metric(stores):
    root, ingest, train, masks = stores
    ref, computed = evaluate_run(_settings(root), ingest, train)
    assert computed
    group = open_store(ref)
    attrs = group.attrs
    scores, labels = group["scores"][:], group["labels"][:]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1] and group["index"][:].tolist() == list(range(8, 14))

    maps = group["maps"]
    assert maps.dtype == np.float16 and maps.shape == (6, SIZE, SIZE)
    assert maps.chunks == (1, SIZE, SIZE) and maps.shards == (6, SIZE, SIZE)
    stored = maps[:].astype(np.float32)
    assert stored.min() >= 0 and stored.max() == pytest.approx(1.0)
    assert attrs["map_scale"] > 0

    metrics = attrs["metrics"]
    assert set(metrics) == {"image_AUROC", "image_F1Max", "pixel_AUROC", "pixel_AUPRO", "pixel_F1Max"}
    assert metrics["image_AUROC"] == pytest.approx(image_auroc(scores, labels))
    assert metrics["image_F1Max"] == pytest.approx(f1_max(scores, labels))
    assert all(0 <= v <= 1 for v in metrics.values())
    # The stored float16 maps reproduce the pixel metrics up to the ties their rounding creates.
    again = pixel_metrics(stored * attrs["map_scale"], masks)
    for name in ("pixel_AUROC", "pixel_AUPRO", "pixel_F1Max"):
        assert again[name] == pytest.approx(metrics[name], abs=5e-3)
    assert set(attrs["metric_definitions"]) == set(metrics)
    assert attrs["metric_resolution"] == [SIZE, SIZE] and attrs["fpr_limit"] == 0.3
    assert attrs["localization"] == {
        "localization": "patch",
        "patch_size": 16,
        "patch_stride": 8,
        "sigma": 2.0,
        "max_fit_patches": 40,
        "pixel_bins": None,
    }
    # Exactly what the key hashes: the route's settings and the threshold's.
    assert attrs["settings"] == {**attrs["localization"], "threshold_holdout": 0.1, "threshold_fpr": 0.01}
    # One of the 8 normal training images (10 %, rounded) is held out of the fits for the threshold.
    assert attrs["method"] == "cutswap" and attrs["n_test"] == 6
    assert (attrs["n_train"], attrs["n_holdout"]) == (7, 1)


def test_key_follows_result_settings_not_batch_sizes(stores):
    root, ingest, train, _ = stores
    first, _ = evaluate_run(_settings(root), ingest, train)
    same, computed = evaluate_run(_settings(root, batch_size=3, patch_batch_size=7), ingest, train)
    assert same.key == first.key and not computed
    with pytest.raises(StoreError, match="no complete output"):  # a new key: nothing to reuse
        evaluate_run(_settings(root, sigma=3.0), ingest, train, mode="reuse")
    gradcam = _settings(root, localization="gradcam", gradcam_layer="layer3")
    ref, _ = evaluate_run(gradcam, ingest, train)
    # Patch settings do not key a Grad-CAM run.
    other_patches = _settings(root, localization="gradcam", gradcam_layer="layer3", patch_size=24)
    again, computed = evaluate_run(other_patches, ingest, train)
    assert again.key == ref.key and not computed
    assert open_store(ref).attrs["localization"] == {
        "localization": "gradcam",
        "gradcam_layer": "layer3",
        "pixel_bins": None,
    }
    assert open_store(ref)["maps"].shape == (6, SIZE, SIZE)


def test_l2_normalisation_is_keyed_only_when_on_and_stored_with_the_density(stores):
    root, ingest, train, _ = stores
    plain, _ = evaluate_run(_settings(root), ingest, train)
    assert "l2_normalize" not in open_store(plain).attrs["settings"]  # stores from before it stay valid
    unit, computed = evaluate_run(_settings(root, l2_normalize=True), ingest, train)
    assert computed and unit.key != plain.key
    attrs = open_store(unit).attrs
    assert attrs["settings"]["l2_normalize"] is True and attrs["l2_normalize"] is True
    detector = load_detector(unit)
    assert detector.density.l2_normalize and detector.patch_density.l2_normalize
    assert not load_detector(plain).density.l2_normalize


def test_auto_normalises_imagenet_trunks_only(tiny_run):
    """The tiny run evaluates with the default ``auto``: the frozen ImageNet baseline on the unit sphere,
    the classifier trained from scratch as it is, each keyed by what it resolved to."""
    baseline = open_store(tiny_run.evaluations["imagenet-gde"]).attrs
    scratch = open_store(tiny_run.evaluations["cutpaste"]).attrs
    assert baseline["l2_normalize"] is True and baseline["settings"]["l2_normalize"] is True
    assert scratch["l2_normalize"] is False and "l2_normalize" not in scratch["settings"]
    assert load_detector(tiny_run.evaluations["imagenet-gde"]).density.l2_normalize


def test_no_localization_stores_no_maps_and_nan_pixel_metrics(stores):
    root, ingest, train, _ = stores
    ref, _ = evaluate_run(_settings(root, localization="none"), ingest, train)
    group = open_store(ref)
    assert "maps" not in group
    metrics = group.attrs["metrics"]
    assert np.isnan(metrics["pixel_AUROC"]) and np.isnan(metrics["pixel_AUPRO"])
    assert 0 <= metrics["image_AUROC"] <= 1
    with_maps, _ = evaluate_run(_settings(root), ingest, train)
    assert with_maps.key != ref.key
    assert open_store(with_maps)["scores"][:] == pytest.approx(group["scores"][:])


def test_anomalous_images_without_masks_give_nan_pixel_metrics(tmp_path):
    root, ingest, train, _ = _make_stores(tmp_path, with_masks=False)
    group = open_store(evaluate_run(_settings(root), ingest, train)[0])
    metrics = group.attrs["metrics"]
    assert group.attrs["anomalous_without_mask"] == 3
    assert all(np.isnan(metrics[k]) for k in ("pixel_AUROC", "pixel_AUPRO", "pixel_F1Max"))
    assert 0 <= metrics["image_AUROC"] <= 1
    assert group["maps"].shape[0] == 6, "the maps are still stored for the figures"
