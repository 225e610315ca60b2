"""Tests of cutswap.data.builtin.textures: the embedded dataset is deterministic, atomic,
reusable and readable."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.signal import find_peaks

from cutswap.data.builtin import textures
from cutswap.data.builtin.textures import (
    CATEGORIES,
    DEFECT_KINDS,
    MARKER,
    VISIBLE_CHANGE,
    add_defect,
    build_textures,
)
from cutswap.data.images import read_mask, read_rgb
from cutswap.data.layouts.mvtec import scan_mvtec
from cutswap.errors import DatasetError

SMALL = {"image_size": 64, "n_train": 3, "n_test_good": 2, "n_test_defect": 2, "n_validation": 2}


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_build(tmp_path_factory) -> Path:
    return build_textures(tmp_path_factory.mktemp("textures") / "textures", seed=3, **SMALL)


def test_layout_is_readable_by_scan_mvtec(small_build):
    frame = scan_mvtec(small_build)
    assert sorted(frame["category"].unique()) == sorted(CATEGORIES) == ["brick", "grass", "gravel"]
    per_category = 3 + 2 + 2 + 2 * len(DEFECT_KINDS)
    assert len(frame) == 3 * per_category
    validation = frame[frame["split"] == "val"]
    assert len(validation) == 3 * 2 and (validation["label"] == 0).all()
    assert validation["image_path"].str.contains("/validation/good/").all()
    assert set(frame["defect_type"]) == {"good", *DEFECT_KINDS}
    anomalous = frame[frame["label"] == 1]
    assert len(anomalous) == 3 * 2 * len(DEFECT_KINDS)
    assert anomalous["mask_path"].notna().all()
    assert anomalous["mask_path"].str.endswith("_mask.png").all()
    assert frame.loc[frame["label"] == 0, "mask_path"].isna().all()


def test_images_and_masks(small_build):
    frame = scan_mvtec(small_build)
    for row in frame.itertuples():
        image = read_rgb(small_build / row.image_path)
        assert image.shape == (64, 64, 3)
        if row.label == 0:
            continue
        mask = read_mask(small_build / row.mask_path)
        assert mask.shape == (64, 64)
        assert 0 < mask.sum() < 0.25 * mask.size, row.image_path
        # Inside the image: the defect never touches the border.
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()), row.image_path
        raw = np.unique(np.asarray(Image.open(small_build / row.mask_path)))
        assert set(raw.tolist()) <= {0, 255}


def test_readme_and_marker(small_build):
    readme = (small_build / "README.md").read_text()
    for needle in (
        "CC0",
        "scikit-image",
        "skimage.data.brick()",
        "synthetic",
        "Seed: 3.",
        "64 x 64",
        "Bricks25",
    ):
        assert needle in readme or needle.lower() in readme.lower(), needle
    assert f"generator version {textures.GENERATOR_VERSION}" in readme
    marker = json.loads((small_build / MARKER).read_text())
    assert marker["seed"] == 3 and marker["n_train"] == 3 and marker["version"] == textures.GENERATOR_VERSION


def test_deterministic_byte_identical(tmp_path, small_build):
    again = build_textures(tmp_path / "again", seed=3, **SMALL)
    assert files_of(again) == files_of(small_build)


def test_seed_changes_images(tmp_path, small_build):
    other = files_of(build_textures(tmp_path / "other", seed=4, **SMALL))
    reference = files_of(small_build)
    assert other.keys() == reference.keys()
    assert other["grass/train/good/000.png"] != reference["grass/train/good/000.png"]


def test_reuse_does_not_rebuild(tmp_path):
    root = build_textures(tmp_path / "t", seed=1, **SMALL)
    probe = root / "gravel" / "test" / "crack" / "000.png"
    before = (root.stat().st_ino, root.stat().st_mtime_ns, probe.stat().st_mtime_ns, probe.stat().st_ino)
    assert build_textures(tmp_path / "t", seed=1, **SMALL) == root
    after = (root.stat().st_ino, root.stat().st_mtime_ns, probe.stat().st_mtime_ns, probe.stat().st_ino)
    assert before == after


def test_different_parameters_rebuild_in_place(tmp_path):
    root = build_textures(tmp_path / "t", seed=1, **SMALL)
    build_textures(root, seed=1, **{**SMALL, "n_train": 2, "n_test_defect": 0})
    frame = scan_mvtec(root)
    assert (frame["split"] == "train").sum() == 3 * 2
    assert set(frame["defect_type"]) == {"good"}
    assert not (root / "brick" / "ground_truth").exists()
    assert json.loads((root / MARKER).read_text())["n_train"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]  # no temporary or old folders left


def test_failed_build_leaves_nothing_and_keeps_old_build(tmp_path, monkeypatch):
    real_save = textures._save_png
    calls = {"n": 0}

    def failing_save(path, array):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(28, "No space left on device")
        real_save(path, array)

    monkeypatch.setattr(textures, "_save_png", failing_save)
    with pytest.raises(OSError, match="No space"):
        build_textures(tmp_path / "fresh", **SMALL)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(textures, "_save_png", real_save)
    root = build_textures(tmp_path / "kept", seed=1, **SMALL)
    before = files_of(root)
    calls["n"] = 0
    monkeypatch.setattr(textures, "_save_png", failing_save)
    with pytest.raises(OSError):
        build_textures(root, seed=2, **SMALL)
    assert files_of(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_refuses_to_replace_foreign_folder(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(DatasetError, match="not an earlier textures build") as info:
        build_textures(precious, **SMALL)
    assert str(precious) in str(info.value)
    assert (precious / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        build_textures(tmp_path / "file", **SMALL)
    (tmp_path / "empty").mkdir()
    assert (build_textures(tmp_path / "empty", **SMALL) / MARKER).is_file()


@pytest.mark.parametrize(
    "bad", [{"image_size": 16}, {"n_train": 0}, {"seed": -1}, {"n_test_good": 0, "n_test_defect": 0}]
)
def test_bad_parameters(tmp_path, bad):
    with pytest.raises(ValueError):
        build_textures(tmp_path / "t", **{**SMALL, **bad})


def test_default_size_images(tmp_path):
    root = build_textures(tmp_path / "t", n_train=1, n_test_good=1, n_test_defect=1)
    assert read_rgb(root / "brick" / "test" / "hole" / "000.png").shape == (256, 256, 3)
    assert read_mask(root / "grass" / "ground_truth" / "stain" / "000_mask.png").any()


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_mask_covers_every_visible_change(kind):
    rng = np.random.default_rng(7)
    base = ndimage.gaussian_filter(rng.uniform(40, 200, (128, 128)), 1.5).astype(np.float32)
    for _ in range(3):
        image, mask = add_defect(base, kind, rng)
        change = np.abs(image.astype(float) - np.rint(base))
        assert change[~mask].max() < VISIBLE_CHANGE  # outside the mask nothing visibly changed
        assert (change[mask] >= VISIBLE_CHANGE).mean() > 0.5  # inside, most pixels visibly changed
    with pytest.raises(ValueError, match="unknown defect kind"):
        add_defect(base, "smudge", rng)


def test_train_and_test_regions_are_disjoint():
    photo = np.zeros((512, 512), np.float32)
    cropper = textures._Cropper(photo, rotations=True, image_size=64)
    assert cropper.train_max_x + cropper.crop <= cropper.test_x
    assert cropper.test_x + cropper.crop == 512


def test_validation_crops_are_cut_like_normal_test_crops_from_their_own_streams(tmp_path, small_build):
    """The calibration crops (cut by ``_Cropper.test``, as the normal test crops are) are other crops than the
    test ones, from streams of their own: a build without them holds exactly the same other files."""
    for category in CATEGORIES:
        validation = sorted((small_build / category / "validation" / "good").glob("*.png"))
        test = sorted((small_build / category / "test" / "good").glob("*.png"))
        assert len(validation) == 2
        assert {p.read_bytes() for p in validation}.isdisjoint({p.read_bytes() for p in test})
    without = build_textures(tmp_path / "without", seed=3, **{**SMALL, "n_validation": 0})
    assert not any(without.glob("*/validation"))
    kept = {k: v for k, v in files_of(small_build).items() if "/validation/" not in k and k != "README.md"}
    assert {k: v for k, v in files_of(without).items() if k != "README.md"} == {
        **kept,
        MARKER: (without / MARKER).read_bytes(),
    }


def test_brick_rectification_makes_courses_uniform():
    import skimage.data

    photo = textures._rectify(skimage.data.brick().astype(np.float32), CATEGORIES["brick"].vanishing_point)
    spacings, first_lines = [], []
    for top in (0, photo.shape[0] - 40):
        profile = ndimage.gaussian_filter1d(photo[top : top + 32].mean(axis=0), 1.5)
        peaks, _ = find_peaks(profile, distance=15, prominence=8)
        spacings.append(np.median(np.diff(peaks)))
        first_lines.append(peaks[np.argmin(np.abs(peaks - 100))])
    # In the raw photo the spacing goes from 30 to 41 px and this mortar line moves by ~12 px.
    assert abs(spacings[0] - spacings[1]) <= 1.5
    assert abs(int(first_lines[0]) - int(first_lines[1])) <= 2
