"""Tests of cutswap.data.layouts.mvtec: the MVTec AD layout scan, mask pairing, and every validation error."""

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cutswap.data.layouts.mvtec import COLUMNS, scan_mvtec
from cutswap.errors import DatasetError


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png_bytes()


def touch(root: Path, *relative: str) -> None:
    """Create small valid image files (the scan never decodes them, but ingest would)."""
    for rel in relative:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PNG)


def make_category(root: Path, name: str = "bottle") -> None:
    """A complete category: 3 train, 2 test/good, 2 test/broken (``_mask`` masks),
    1 test/crack (bare masks)."""
    touch(
        root,
        *(f"{name}/train/good/{i:03d}.png" for i in range(3)),
        *(f"{name}/test/good/{i:03d}.png" for i in range(2)),
        f"{name}/test/broken/000.png",
        f"{name}/test/broken/001.png",
        f"{name}/ground_truth/broken/000_mask.png",
        f"{name}/ground_truth/broken/001_mask.png",
        f"{name}/test/crack/000.png",
        f"{name}/ground_truth/crack/000.png",  # BTAD-style: mask named like the image
    )


def problems_of(root: Path, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        scan_mvtec(root, **kwargs)
    return str(info.value)


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "MVTecAD"
    make_category(root, "bottle")
    touch(
        root,
        "carpet/train/good/a.JPG",
        "carpet/train/good/b.PNG",
        "carpet/train/good/c.bmp",
        "carpet/test/good/x.jpg",
        "carpet/test/hole/1.png",
        "carpet/test/hole/11.png",
        "carpet/ground_truth/hole/11_mask.png",  # "1" is contained in "11_mask": exact matches must win
        "carpet/ground_truth/hole/1_mask.png",
    )
    (root / "readme.txt").write_text("MVTec AD\n")  # files at the root are not categories
    (root / "bottle" / "train" / "good" / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
    (root / "__MACOSX").mkdir()  # neither are archive leftovers
    return root


def test_happy_path(dataset):
    frame = scan_mvtec(dataset)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 8 + 6
    counts = frame.groupby(["category", "split", "defect_type"]).size().to_dict()
    assert counts == {
        ("bottle", "test", "broken"): 2,
        ("bottle", "test", "crack"): 1,
        ("bottle", "test", "good"): 2,
        ("bottle", "train", "good"): 3,
        ("carpet", "test", "good"): 1,
        ("carpet", "test", "hole"): 2,
        ("carpet", "train", "good"): 3,
    }
    assert (frame["label"] == (frame["defect_type"] != "good").astype(int)).all()
    assert frame["label"].dtype == np.int64
    normal = frame[frame["label"] == 0]
    assert normal["mask_path"].isna().all() and all(m is None for m in normal["mask_path"])
    sorted_frame = frame.sort_values(["category", "split", "defect_type", "image_path"], kind="mergesort")
    pd.testing.assert_frame_equal(frame, sorted_frame.reset_index(drop=True))
    assert set(frame["image_path"].str.split("/").str[0]) == {"bottle", "carpet"}


def test_mask_pairing_both_naming_styles(dataset):
    frame = scan_mvtec(dataset).set_index("image_path")
    assert frame.loc["bottle/test/broken/001.png", "mask_path"] == "bottle/ground_truth/broken/001_mask.png"
    assert frame.loc["bottle/test/crack/000.png", "mask_path"] == "bottle/ground_truth/crack/000.png"
    assert frame.loc["carpet/test/hole/1.png", "mask_path"] == "carpet/ground_truth/hole/1_mask.png"
    assert frame.loc["carpet/test/hole/11.png", "mask_path"] == "carpet/ground_truth/hole/11_mask.png"
    for rel in frame["mask_path"].dropna():
        assert (dataset / rel).is_file()
    for rel in frame.index:
        assert (dataset / rel).is_file() and "\\" not in rel


def test_stem_containment_fallback(tmp_path):
    make_category(tmp_path)
    touch(tmp_path, "bottle/test/scratch/007.png", "bottle/ground_truth/scratch/007_scratch_mask.png")
    frame = scan_mvtec(tmp_path).set_index("image_path")
    assert (
        frame.loc["bottle/test/scratch/007.png", "mask_path"]
        == "bottle/ground_truth/scratch/007_scratch_mask.png"
    )


def test_extension_letter_case(dataset):
    frame = scan_mvtec(dataset, categories=["carpet"])
    assert sorted(frame.loc[frame["split"] == "train", "image_path"]) == [
        "carpet/train/good/a.JPG",
        "carpet/train/good/b.PNG",
        "carpet/train/good/c.bmp",
    ]


def test_category_selection(dataset):
    frame = scan_mvtec(dataset, categories=["carpet"])
    assert set(frame["category"]) == {"carpet"}
    message = problems_of(dataset, categories=["carpet", "toothbrush", "zipper"])
    assert "'toothbrush' not found" in message and "'zipper' not found" in message
    assert "available categories: bottle, carpet" in message
    assert str(dataset / "toothbrush") in message


def test_root_missing(tmp_path):
    message = problems_of(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in message and "does not exist" in message


def test_root_without_categories(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "misc").mkdir()
    message = problems_of(tmp_path)
    assert "no category folder found" in message
    assert "<root>/<category>/train/good/*.png" in message  # says which layout was expected


def test_root_pointing_at_a_category(tmp_path):
    make_category(tmp_path)
    message = problems_of(tmp_path / "bottle")
    assert "pass its parent folder" in message


def test_category_missing_train_good_and_test(tmp_path):
    make_category(tmp_path, "bottle")
    touch(tmp_path, "cable/test/good/000.png")  # no train/good
    touch(tmp_path, "screw/train/good/000.png")  # no test
    (tmp_path / "zipper").mkdir()  # empty
    message = problems_of(tmp_path)
    assert f"{tmp_path / 'cable' / 'train' / 'good'}: missing" in message
    assert f"{tmp_path / 'screw' / 'test'}: missing" in message
    assert f"{tmp_path / 'zipper'}: category 'zipper' is empty" in message
    assert "3 problems found" in message
    assert "bottle" not in message


def test_category_without_images(tmp_path):
    make_category(tmp_path, "bottle")
    (tmp_path / "cable" / "train" / "good").mkdir(parents=True)
    (tmp_path / "cable" / "test" / "good").mkdir(parents=True)
    message = problems_of(tmp_path)
    assert f"{tmp_path / 'cable'}: category 'cable' holds no images" in message


def test_anomalous_image_without_mask(tmp_path):
    make_category(tmp_path)
    touch(tmp_path, "bottle/test/broken/002.png")
    message = problems_of(tmp_path)
    assert f"{tmp_path / 'bottle/test/broken/002.png'}: anomalous image has no mask" in message
    assert "002_mask.png" in message  # says what file to add


def test_missing_ground_truth_folder(tmp_path):
    make_category(tmp_path)
    touch(tmp_path, "bottle/test/contamination/000.png", "bottle/test/contamination/001.png")
    message = problems_of(tmp_path)
    assert f"{tmp_path / 'bottle/ground_truth/contamination'}: missing" in message
    assert "no masks for the 2 images in test/contamination" in message


def test_mask_matching_no_image(tmp_path):
    make_category(tmp_path)
    touch(tmp_path, "bottle/ground_truth/broken/005_mask.png", "bottle/ground_truth/squeezed/000_mask.png")
    message = problems_of(tmp_path)
    assert f"{tmp_path / 'bottle/ground_truth/broken/005_mask.png'}: mask matches no image" in message
    assert f"{tmp_path / 'bottle/ground_truth/squeezed'}: masks for defect 'squeezed'" in message


def test_every_problem_is_listed_at_once(tmp_path):
    make_category(tmp_path, "bottle")
    make_category(tmp_path, "cable")
    touch(
        tmp_path,
        "bottle/test/broken/009.png",
        "cable/ground_truth/broken/042_mask.png",
        "cable/test/bad.tif",
        "cable/test/good/001.tiff",
    )
    (tmp_path / "cable" / "test" / "good" / "000.png").unlink()
    message = problems_of(tmp_path)
    assert "4 problems found" in message
    assert str(tmp_path / "bottle/test/broken/009.png") in message
    assert f"{tmp_path / 'cable/test/bad.tif'}: image directly in test/" in message
    assert str(tmp_path / "cable/ground_truth/broken/042_mask.png") in message
    assert f"{tmp_path / 'cable/test/good/001.tiff'}: unsupported image format" in message


def test_unexpected_training_folder(tmp_path):
    make_category(tmp_path)
    touch(tmp_path, "bottle/train/broken/000.png")
    assert f"{tmp_path / 'bottle/train/broken'}: unexpected folder" in problems_of(tmp_path)


def test_ambiguous_masks(tmp_path):
    make_category(tmp_path)
    touch(tmp_path, "bottle/ground_truth/broken/000.png")  # both 000.png and 000_mask.png exist
    message = problems_of(tmp_path)
    assert f"{tmp_path / 'bottle/test/broken/000.png'}: several masks match it" in message


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_escaping_root(tmp_path):
    outside = tmp_path / "elsewhere"
    touch(outside, "secret.png", "other/train/good/000.png", "other/test/good/000.png")
    root = tmp_path / "data"
    make_category(root)
    (root / "bottle/train/good/evil.png").symlink_to(outside / "secret.png")
    (root / "other").symlink_to(outside / "other", target_is_directory=True)
    (root / "bottle/test/good/dangling.png").symlink_to(tmp_path / "missing.png")
    message = problems_of(root)
    assert f"{root / 'bottle/train/good/evil.png'}: symlink points outside the dataset root" in message
    assert f"{root / 'other'}: symlink points outside the dataset root" in message
    assert f"{root / 'bottle/test/good/dangling.png'}: broken symlink" in message
    assert "not found" not in message


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_inside_root_is_fine(tmp_path):
    make_category(tmp_path / "data")
    (tmp_path / "data/bottle/train/good/link.png").symlink_to(tmp_path / "data/bottle/test/good/000.png")
    # The root itself may be reached through a symlink, too.
    (tmp_path / "alias").symlink_to(tmp_path / "data", target_is_directory=True)
    frame = scan_mvtec(tmp_path / "alias")
    assert "bottle/train/good/link.png" in set(frame["image_path"])


def test_scan_does_not_read_pixels(tmp_path):
    make_category(tmp_path)
    (tmp_path / "bottle/train/good/000.png").write_bytes(b"")  # broken, but that is ingest's business
    assert len(scan_mvtec(tmp_path)) == 8
