"""Ingest of every layout, and what it does with files that fight back: pixel-level problems collected per
category with nothing published, lenient skipping, leakage and duplicate reports, and fingerprints."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cutswap.errors import DatasetError
from cutswap.pipeline.readers import samples
from cutswap.pipeline.run_dataset import resolve_dataset
from cutswap.pipeline.stages.ingest import ingest_category
from cutswap.pipeline.stores import is_complete, open_store


def ingest_all(settings):
    root, table = resolve_dataset(settings)
    return {c: ingest_category(settings, root, c, table) for c in sorted(table["category"].unique())}


def published(storage: Path) -> list[Path]:
    """Everything under the ingest folder: visible stores and hidden leftovers alike."""
    folder = storage / "ingest"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("name", ["mvtec", "btad", "loco", "visa", "folder"])
def test_every_layout_is_ingested(tmp_path, kit, storage, name):
    root = kit.BUILDERS[name](tmp_path / "data")
    settings = kit.settings_for(name, root, storage)
    [(ref, computed)] = ingest_all(settings).values()
    assert computed and is_complete(ref.path)
    group = open_store(ref)
    table = samples(group)
    images, masks = group["images"][:], group["masks"][:]
    assert images.shape == (len(table), 32, 32, 3) and images.dtype == np.uint8
    assert masks.shape == (len(table), 32, 32) and masks.dtype == bool
    anomalous = (table["label"] == 1).to_numpy()
    assert all(masks[i].any() for i in np.flatnonzero(anomalous))  # non-255 masks are not lost
    assert not masks[~anomalous].any()
    assert group.attrs["skipped"] == [] and group.attrs["leakage"] == []
    assert group.attrs["duplicates"] == {"count": 0, "groups": []}
    assert published(storage) == [Path(ref.path)]  # nothing else left behind


def test_loco_masks_of_one_image_are_ored(tmp_path, kit, storage):
    root = kit.make_loco(tmp_path / "data")
    [(ref, _)] = ingest_all(kit.settings_for("loco", root, storage)).values()
    group = open_store(ref)
    table = samples(group)
    i = int(np.flatnonzero(table["image_path"].str.endswith("logical_anomalies/000.png"))[0])
    mask = group["masks"][i]
    assert mask[0, 0] and mask[-1, -1]  # one defect per file, in opposite corners
    assert not mask[16, 16]


def bad_mvtec(kit, root: Path) -> dict[str, Path]:
    """One category with every pixel-level problem ingest must catch, each in its own file."""
    kit.make_mvtec(root)
    cat = root / "bottle"
    bad = {
        "empty": cat / "train/good/003.png",
        "truncated": kit.truncate(kit.write_image(cat / "train/good/004.png", 64, 64)),
        "not_image": cat / "test/good/002.png",
        "bomb": kit.write_bomb(cat / "test/good/003.png"),
        "mask_size": kit.write_mask(cat / "ground_truth/broken/001_mask.png", 24, 32),
    }
    bad["empty"].write_bytes(b"")
    bad["not_image"].write_text("<html>404 Not Found</html>\n")
    return bad


def test_pixel_problems_are_collected_and_nothing_is_published(tmp_path, kit, storage):
    bad = bad_mvtec(kit, tmp_path / "data")
    settings = kit.settings_for("mvtec", tmp_path / "data", storage)
    with pytest.raises(DatasetError) as info:
        ingest_all(settings)
    message = str(info.value)
    assert (
        message.startswith("ingest of category 'bottle'")
        and "5 problems found; nothing was written" in message
    )
    assert f"{bad['empty']}: file is empty" in message
    assert f"{bad['truncated']}: image data is truncated or corrupt" in message
    assert f"{bad['not_image']}: not an image" in message
    assert (
        f"{bad['bomb']}: image is too large to decode safely" in message and "decompression bomb" in message
    )
    assert f"{bad['mask_size']}: mask is 32x24 px but its image" in message and "20 px" in message
    assert "dataset.lenient=true" in message
    assert published(storage) == []  # no store, no hidden leftover


def test_lenient_skips_and_lists_unreadable_files(tmp_path, kit, storage, caplog):
    bad = bad_mvtec(kit, tmp_path / "data")
    settings = kit.settings_for("mvtec", tmp_path / "data", storage, **{"dataset.lenient": True})
    with caplog.at_level(logging.WARNING, logger="cutswap.pipeline.stages.ingest"):
        [(ref, _)] = ingest_all(settings).values()
    group = open_store(ref)
    skipped = {entry["image_path"]: entry["problem"] for entry in group.attrs["skipped"]}
    rel = {k: v.relative_to((tmp_path / "data").resolve()).as_posix() for k, v in bad.items()}
    assert set(skipped) == {
        rel["empty"],
        rel["truncated"],
        rel["not_image"],
        rel["bomb"],
        "bottle/test/broken/001.png",
    }
    assert "mask is 32x24 px" in skipped["bottle/test/broken/001.png"]
    table = samples(group)
    assert len(table) == group["images"].shape[0] == 9 - 5 + 2  # 9 good files, 2 bad added, 5 skipped
    assert not set(skipped) & set(table["image_path"])
    assert rel["bomb"] in caplog.text


def test_lenient_still_needs_training_images(tmp_path, kit, storage):
    root = kit.make_mvtec(tmp_path / "data")
    for path in (root / "bottle/train/good").iterdir():
        path.write_bytes(b"")
    settings = kit.settings_for("mvtec", root, storage, **{"dataset.lenient": True})
    with pytest.raises(DatasetError, match="no usable train image left after skipping 3"):
        ingest_all(settings)
    assert published(storage) == []


def test_leakage_and_duplicates_are_reported(tmp_path, kit, storage, caplog):
    root = kit.make_mvtec(tmp_path / "data")
    cat = root / "bottle"
    shutil.copy(cat / "train/good/000.png", cat / "test/good/copy.png")  # the same file in train and test
    shutil.copy(cat / "train/good/001.png", cat / "train/good/001_again.png")  # a duplicate within train
    with caplog.at_level(logging.WARNING, logger="cutswap.pipeline.stages.ingest"):
        [(ref, _)] = ingest_all(kit.settings_for("mvtec", root, storage)).values()
    attrs = open_store(ref).attrs
    assert attrs["leakage"] == [
        {"train": "bottle/train/good/000.png", "test": "bottle/test/good/copy.png", "same_bytes": True}
    ]
    assert "bottle/test/good/copy.png" in caplog.text and "bottle/train/good/000.png" in caplog.text
    assert attrs["duplicates"]["count"] == 1
    assert attrs["duplicates"]["groups"] == [
        {"split": "train", "paths": ["bottle/train/good/001.png", "bottle/train/good/001_again.png"]}
    ]


def test_leakage_survives_reencoding(tmp_path, kit, storage):
    from PIL import Image

    root = kit.make_mvtec(tmp_path / "data")
    Image.open(root / "bottle/train/good/002.png").save(root / "bottle/test/good/same.bmp")
    [(ref, _)] = ingest_all(kit.settings_for("mvtec", root, storage)).values()
    [pair] = open_store(ref).attrs["leakage"]
    assert pair["test"] == "bottle/test/good/same.bmp" and pair["same_bytes"] is False


def _key(kit, root, storage, **overrides) -> str:
    [(ref, _)] = ingest_all(kit.settings_for("visa", root, storage, **overrides)).values()
    return ref.key


def test_stat_fingerprint_follows_edits(tmp_path, kit, storage):
    root = kit.make_visa(tmp_path / "data")
    first = _key(kit, root, storage)
    assert _key(kit, root, storage) == first  # untouched: reused
    image = root / "candle/Data/Images/Normal/0000.JPG"
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: re-ingested
    second = _key(kit, root, storage)
    assert second != first
    csv = root / "split_csv/1cls.csv"  # the split changes, not the files: re-ingested too
    csv.write_text(
        csv.read_text().replace(
            "candle,train,normal,candle/Data/Images/Normal/0002",
            "candle,test,normal,candle/Data/Images/Normal/0002",
        )
    )
    assert _key(kit, root, storage) not in (first, second)


def test_content_fingerprint_ignores_times_not_bytes(tmp_path, kit, storage):
    root = kit.make_visa(tmp_path / "data")
    options = {"dataset.fingerprint": "content"}
    first = _key(kit, root, storage, **options)
    mask = root / "candle/Data/Masks/Anomaly/000.png"
    st = mask.stat()
    os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _key(kit, root, storage, **options) == first
    kit.write_mask(mask, value=1, box=(0, 0, 2, 2))
    assert _key(kit, root, storage, **options) != first


def test_lenient_is_part_of_the_key(tmp_path, kit, storage):
    root = kit.make_mvtec(tmp_path / "data")
    strict = _ingest_key(kit, root, storage)
    assert _ingest_key(kit, root, storage, **{"dataset.lenient": True}) != strict


def _ingest_key(kit, root, storage, **overrides) -> str:
    [(ref, _)] = ingest_all(kit.settings_for("mvtec", root, storage, **overrides)).values()
    return ref.key


def test_an_embedded_dataset_rebuilt_elsewhere_keeps_its_ingest_key(tmp_path):
    # A fresh clone rebuilds textures byte-identical but with new file times: its stores must be reused.
    from cutswap.pipeline.settings import load_settings

    def key(storage: Path) -> str:
        overrides = {
            "storage_root": str(storage),
            "dataset.image_size": 32,
            "dataset.categories": ["brick"],
            "dataset.textures": {"n_train": 2, "n_test_good": 1, "n_test_defect": 1},
        }
        [(ref, _)] = ingest_all(load_settings(None, overrides)).values()
        return ref.key

    first = key(tmp_path / "a")
    assert key(tmp_path / "b") == first
