"""Tests of the counted textures build (``build_counted_textures``) and MVTec AD's shape
(``cutswap.data.builtin.mvtec_counts``): the counts land in the layout, the demo's build is the counted
build's special case, and the table adds up to the published totals."""

from pathlib import Path

import numpy as np
import pytest

from cutswap.data.builtin.mvtec_counts import MVTEC_AD, build_mvtec_shaped, scaled
from cutswap.data.builtin.textures import (
    CATEGORIES,
    DEFECT_KINDS,
    MARKER,
    CategoryCounts,
    build_counted_textures,
    build_textures,
)
from cutswap.data.images import read_mask
from cutswap.data.layouts.mvtec import scan_mvtec


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


COUNTS = {
    "bottle": CategoryCounts(4, 2, {"broken_large": 2, "contamination": 1}),
    "toothbrush": CategoryCounts(3, 1, {"defective": 2}),
    "carpet": CategoryCounts(2, 0, {"hole": 1, "cut": 1, "color": 1, "thread": 1, "glue": 1}, validation=2),
    "grid": CategoryCounts(2, 1),
}


@pytest.fixture(scope="module")
def counted(tmp_path_factory) -> Path:
    return build_counted_textures(tmp_path_factory.mktemp("counted") / "c", COUNTS, seed=5, image_size=48)


def test_counts_land_in_the_layout(counted):
    frame = scan_mvtec(counted)
    for name, c in COUNTS.items():
        rows = frame[frame["category"] == name]
        assert (rows["split"] == "train").sum() == c.train
        assert (rows["split"] == "val").sum() == c.validation
        test = rows[rows["split"] == "test"]
        assert (test["label"] == 0).sum() == c.test_good
        assert test[test["label"] == 1]["defect_type"].value_counts().to_dict() == dict(c.defects)
        assert test.loc[test["label"] == 1, "mask_path"].notna().all()
    assert not (counted / "bottle" / "validation").exists()  # 0 validation images: no folder, as MVTec AD
    mask = read_mask(counted / "toothbrush" / "ground_truth" / "defective" / "000_mask.png")
    assert mask.shape == (48, 48) and 0 < mask.sum() < mask.size


def test_readme_names_photographs_and_drawers(counted):
    readme = (counted / "README.md").read_text()
    # Photographs in turn; a defect folder named like a drawer gets it, others the drawers by position.
    assert "| bottle | brick | 4 | 0 | 2 | broken_large 2 (crack), contamination 1 (hole) |" in readme
    assert "| toothbrush | grass |" in readme and "| grid | brick |" in readme
    assert "hole 1 (hole), cut 1 (hole), color 1 (scratch), thread 1 (stain), glue 1 (crack)" in readme
    assert "11 training and 14 test images" in readme


def test_deterministic_and_reused(tmp_path, counted):
    again = build_counted_textures(tmp_path / "again", COUNTS, seed=5, image_size=48)
    assert files_of(again) == files_of(counted)
    stamp = (again / MARKER).stat().st_mtime_ns
    assert build_counted_textures(again, COUNTS, seed=5, image_size=48) == again
    assert (again / MARKER).stat().st_mtime_ns == stamp
    # Another order of the defects renumbers their streams: a rebuild, not a reuse.
    reordered = {**COUNTS, "bottle": CategoryCounts(4, 2, {"contamination": 1, "broken_large": 2})}
    build_counted_textures(again, reordered, seed=5, image_size=48)
    assert (
        files_of(again)["bottle/test/contamination/000.png"]
        != files_of(counted)["bottle/test/contamination/000.png"]
    )


def test_demo_build_is_the_counted_build_with_its_counts(tmp_path):
    """build_textures and build_counted_textures share one writer: the same counts give the same images."""
    small = {"image_size": 40, "n_train": 2, "n_test_good": 1, "n_test_defect": 1, "n_validation": 1}
    demo = files_of(build_textures(tmp_path / "demo", seed=2, **small))
    same = {name: CategoryCounts(2, 1, dict.fromkeys(DEFECT_KINDS, 1), validation=1) for name in CATEGORIES}
    counted = files_of(build_counted_textures(tmp_path / "counted", same, seed=2, image_size=40))
    images = [k for k in demo if k.endswith(".png")]
    assert len(images) == 3 * (2 + 1 + 1 + 2 * len(DEFECT_KINDS))
    assert set(images) == {k for k in counted if k.endswith(".png")}
    assert all(demo[k] == counted[k] for k in images)


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({}, "no category"),
        ({"a": CategoryCounts(0, 1)}, "needs training images and test images"),
        ({"a": CategoryCounts(1, 0)}, "needs training images and test images"),
        ({"a": CategoryCounts(1, 1, {"good": 1})}, "not a usable folder name"),
        ({"a/b": CategoryCounts(1, 1)}, "not a usable folder name"),
        ({"a": CategoryCounts(1, -1, {"x": 2})}, "integer >= 0"),
        ({"a": (1, 1)}, "expected CategoryCounts"),
    ],
)
def test_bad_counts_are_refused(tmp_path, counts, message):
    with pytest.raises(ValueError, match=message):
        build_counted_textures(tmp_path / "x", counts)
    assert not (tmp_path / "x").exists()


def test_mvtec_table_matches_the_published_totals():
    assert len(MVTEC_AD) == 15
    assert sum(c.train for c in MVTEC_AD.values()) == 3629
    assert sum(c.test_good + sum(c.defects.values()) for c in MVTEC_AD.values()) == 1725
    assert MVTEC_AD["bottle"].train == 209
    assert MVTEC_AD["bottle"].test_good + sum(MVTEC_AD["bottle"].defects.values()) == 83
    assert sum(len(c.defects) for c in MVTEC_AD.values()) == 73  # "over 70 different types of defects"
    assert all(c.validation == 0 for c in MVTEC_AD.values())


def test_scaled_rounds_keeps_folders_and_a_batch():
    bottle = MVTEC_AD["bottle"]
    half = scaled(bottle, 0.5)
    assert (half.train, half.test_good, dict(half.defects)) == (
        105,
        10,
        {"broken_large": 10, "broken_small": 11, "contamination": 11},
    )
    tiny = scaled(bottle, 0.01, min_train=32)
    assert tiny.train == 32 and tiny.test_good == 1 and set(tiny.defects.values()) == {1}
    assert scaled(MVTEC_AD["toothbrush"], 0.1, min_train=100).train == 60  # never more than it has
    assert scaled(bottle, 1.0) == bottle
    with pytest.raises(ValueError, match="fraction"):
        scaled(bottle, 0)


def test_build_mvtec_shaped_subset(tmp_path):
    root = build_mvtec_shaped(tmp_path / "m", ["toothbrush", "bottle"], fraction=0.05, image_size=32)
    frame = scan_mvtec(root)
    assert set(frame["category"]) == {"bottle", "toothbrush"}
    sizes = frame.groupby(["category", "split"]).size().to_dict()
    assert sizes[("toothbrush", "train")] == 3 and sizes[("bottle", "train")] == 10
    assert np.array_equal(
        sorted(frame.loc[frame["category"] == "bottle", "defect_type"].unique()),
        sorted(["good", *MVTEC_AD["bottle"].defects]),
    )
    with pytest.raises(ValueError, match="not MVTec AD categories"):
        build_mvtec_shaped(tmp_path / "n", ["brick"])
