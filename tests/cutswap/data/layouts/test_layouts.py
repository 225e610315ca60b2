"""Tests of the layout readers beyond MVTec AD (BTAD, MVTec LOCO, VisA, Folder) and the registry: each lists
the same table, and each bad layout is refused with every problem named by file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cutswap.data.datasets import LAYOUTS
from cutswap.data.layouts.btad import scan_btad
from cutswap.data.layouts.common import COLUMNS
from cutswap.data.layouts.folder import scan_folder
from cutswap.data.layouts.loco import scan_loco
from cutswap.data.layouts.visa import scan_visa
from cutswap.errors import DatasetError, SettingsError
from cutswap.pipeline.run_dataset import resolve_dataset
from cutswap.pipeline.settings import DatasetSettings


def problems_of(scan, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        scan(*args, **kwargs)
    return str(info.value)


def test_registry_covers_every_layout_name():
    names = set(DatasetSettings.model_fields["name"].annotation.__args__)
    assert set(LAYOUTS) == names


@pytest.mark.parametrize("name", ["mvtec", "btad", "loco", "visa", "folder"])
def test_every_layout_gives_the_same_table(tmp_path, kit, name):
    root = kit.BUILDERS[name](tmp_path / "data")
    _, frame = resolve_dataset(kit.settings_for(name, root, tmp_path / "storage"))
    assert list(frame.columns) == COLUMNS
    assert set(frame["split"]) <= {"train", "test", "val"}
    assert (frame["label"] == (frame["defect_type"] != "good").astype(int)).all()
    anomalous = frame[frame["label"] == 1]
    assert len(anomalous) >= 2 and anomalous["mask_path"].notna().all()
    assert frame.loc[frame["label"] == 0, "mask_path"].isna().all()
    assert (frame.loc[frame["split"] == "train", "label"] == 0).all()
    for rel in [*frame["image_path"], *frame["mask_path"].dropna()]:
        assert not rel.startswith("/") and ".." not in rel and (root.resolve() / rel).exists()


def test_dataset_root_is_required(tmp_path):
    from cutswap.pipeline.settings import load_settings

    with pytest.raises(SettingsError, match="dataset.root is not set.*VisA"):
        resolve_dataset(load_settings(None, {"dataset.name": "visa"}))


# --- BTAD ------------------------------------------------------------------------------------------------


def test_btad_reads_ok_ko_and_bare_mask_names(tmp_path, kit):
    root = kit.make_btad(tmp_path)
    frame = scan_btad(root).set_index("image_path")
    assert frame.loc["01/test/ko/0001.bmp", "mask_path"] == "01/ground_truth/ko/0001.png"
    assert frame.loc["01/test/ok/0000.bmp", "defect_type"] == "good"
    assert frame.loc["01/test/ko/0000.bmp", "defect_type"] == "ko"


def test_btad_problems_are_all_named(tmp_path, kit):
    root = kit.make_btad(tmp_path)
    (root / "01/ground_truth/ko/0001.png").unlink()  # anomalous image without mask
    kit.write_mask(root / "01/ground_truth/ko/0042.png")  # mask without image
    kit.write_image(root / "02/train/ok/0000.bmp")  # category without test/
    message = problems_of(scan_btad, root)
    assert message.startswith(f"BTAD dataset at {root}: 3 problems found")
    assert f"{root / '01/test/ko/0001.bmp'}: anomalous image has no mask" in message
    assert "0001.png" in message and "0001_mask.png" not in message  # BTAD's own naming in the hint
    assert f"{root / '01/ground_truth/ko/0042.png'}: mask matches no image" in message
    assert f"{root / '02/test'}: missing" in message


# --- MVTec LOCO ------------------------------------------------------------------------------------------


def test_loco_mask_folders_and_validation_split(tmp_path, kit):
    root = kit.make_loco(tmp_path)
    frame = scan_loco(root).set_index("image_path")
    assert frame.loc["breakfast_box/validation/good/000.png", "split"] == "val"
    assert (
        frame.loc["breakfast_box/test/logical_anomalies/000.png", "mask_path"]
        == "breakfast_box/ground_truth/logical_anomalies/000"
    )
    assert (
        frame.loc["breakfast_box/test/structural_anomalies/000.png", "defect_type"] == "structural_anomalies"
    )


def test_loco_problems_are_all_named(tmp_path, kit):
    root = kit.make_loco(tmp_path)
    cat = root / "breakfast_box"
    kit.write_image(cat / "test/logical_anomalies/001.png")  # no mask folder
    (cat / "ground_truth/logical_anomalies/007").mkdir()  # folder matching no image (and empty)
    kit.write_mask(cat / "ground_truth/logical_anomalies/009/000.png")  # folder matching no image
    for f in (cat / "ground_truth/structural_anomalies/000").iterdir():
        f.unlink()  # an image whose mask folder holds no mask
    kit.write_mask(cat / "ground_truth/logical_anomalies/stray.png")  # a file where folders belong
    (root / "juice_bottle").mkdir()  # an empty category
    message = problems_of(scan_loco, root)
    assert "MVTec LOCO dataset at" in message
    assert f"{cat / 'test/logical_anomalies/001.png'}: anomalous image has no mask folder" in message
    assert f"{cat / 'ground_truth/logical_anomalies/009'}: mask folder matches no image" in message
    assert f"{cat / 'ground_truth/logical_anomalies/007'}: mask folder matches no image" in message
    assert f"{cat / 'ground_truth/structural_anomalies/000'}: mask folder holds no mask" in message
    assert f"{cat / 'ground_truth/logical_anomalies/stray.png'}: mask file directly in" in message
    assert f"{root / 'juice_bottle'}: category 'juice_bottle' is empty" in message


def test_loco_missing_train(tmp_path, kit):
    root = kit.make_loco(tmp_path)
    for f in (root / "breakfast_box/train/good").iterdir():
        f.unlink()
    (root / "breakfast_box/train/good").rmdir()
    assert f"{root / 'breakfast_box/train/good'}: missing" in problems_of(scan_loco, root)


# --- VisA ------------------------------------------------------------------------------------------------


def test_visa_reads_the_split_file_and_defect_names(tmp_path, kit):
    root = kit.make_visa(tmp_path)
    kit.make_visa(tmp_path, "pcb1")
    frame = scan_visa(root, ["candle"]).set_index("image_path")
    assert set(frame["category"]) == {"candle"}
    assert (frame["split"] == "train").sum() == 3
    assert frame.loc["candle/Data/Images/Anomaly/000.JPG", "mask_path"] == "candle/Data/Masks/Anomaly/000.png"
    assert frame.loc["candle/Data/Images/Anomaly/001.JPG", "defect_type"] == "melt, scratch"
    assert frame.loc["candle/Data/Images/Normal/0003.JPG", "split"] == "test"


def test_visa_without_split_file(tmp_path, kit):
    root = kit.make_visa(tmp_path)
    (root / "split_csv/1cls.csv").unlink()
    message = problems_of(scan_visa, root)
    assert f"{root / 'split_csv/1cls.csv'}: missing" in message and "object,split,label,image,mask" in message


def test_visa_bad_header(tmp_path, kit):
    root = kit.make_visa(tmp_path)
    csv = root / "split_csv/1cls.csv"
    csv.write_text("image,label\n" + csv.read_text().split("\n", 1)[1])
    assert f"{csv}, line 1: expected the header" in problems_of(scan_visa, root)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_visa_row_problems_name_line_and_file(tmp_path, kit):
    root = kit.make_visa(tmp_path / "VisA")
    outside = kit.write_image(tmp_path / "secret.JPG")
    (root / "candle/Data/Images/Normal/link.JPG").symlink_to(outside)
    csv = root / "split_csv/1cls.csv"
    extra = [
        "candle,test,anomaly,candle/Data/Images/Normal/0003.JPG,",  # listed twice (line 8)
        "candle,train,normal,../secret.JPG,",  # climbs out of the root (line 9)
        f"candle,train,normal,{outside},",  # absolute (line 10)
        "candle,train,normal,candle/Data/Images/Normal/link.JPG,",  # symlink outside (line 11)
        "candle,train,normal,candle/Data/Images/Normal/gone.JPG,",  # missing file (line 12)
        "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG",  # anomaly without mask (13; dup too)
        "candle,valid,abnormal,candle/Data/Images/Normal/0000.JPG,",  # unknown split and label (line 14)
        "candle,train,normal,candle/notes.txt,",  # not an image (line 15)
    ]
    (root / "candle/notes.txt").write_text("hello\n")
    csv.write_text(csv.read_text() + "\n".join(extra) + "\n")
    message = problems_of(scan_visa, root)
    assert (
        f"{csv}, line 8: {root / 'candle/Data/Images/Normal/0003.JPG'} is already listed on line 5" in message
    )
    assert f"{csv}, line 9: image: '../secret.JPG' climbs out of the dataset root" in message
    assert f"{csv}, line 10: image: '{outside}' is an absolute path" in message
    assert (
        f"{csv}, line 11: image: {root / 'candle/Data/Images/Normal/link.JPG'} is a symlink pointing outside"
        in message
    )
    assert f"{csv}, line 12: image: {root / 'candle/Data/Images/Normal/gone.JPG'} does not exist" in message
    assert f"{csv}, line 14: split 'valid' is not one of train, test" in message
    assert f"{csv}, line 14: label 'abnormal' is not one of normal, anomaly" in message
    assert f"{csv}, line 15: image: {root / 'candle/notes.txt'} has an unsupported format" in message


def test_visa_anomaly_without_mask_and_unknown_category(tmp_path, kit):
    root = kit.make_visa(tmp_path)
    csv = root / "split_csv/1cls.csv"
    csv.write_text(csv.read_text().replace(",candle/Data/Masks/Anomaly/001.png", ","))
    message = problems_of(scan_visa, root, ["candle", "pcb9"])
    assert f"{root / 'candle/Data/Images/Anomaly/001.JPG'} has no mask" in message
    assert f"{root / 'pcb9'}: category 'pcb9' not found; available categories: candle" in message


# --- Folder ----------------------------------------------------------------------------------------------


def test_folder_defects_masks_and_held_out_normals(tmp_path, kit):
    root = kit.make_folder(tmp_path / "parts")
    frame = scan_folder(root, **kit.FOLDER_OPTIONS).set_index("image_path")
    assert set(frame["category"]) == {"parts"}
    assert frame.loc["bad/scratch/01.png", "defect_type"] == "scratch"
    assert frame.loc["bad/scratch/01.png", "mask_path"] == "masks/scratch/01_mask.png"
    assert frame.loc["bad/stray.png", "defect_type"] == "bad"
    assert frame.loc["bad/stray.png", "mask_path"] == "masks/stray.png"
    normal = frame[frame["label"] == 0]
    assert (normal["split"] == "test").sum() == 1 and (normal["split"] == "train").sum() == 4
    # The held-out normal image depends on its path only: the same on every scan.
    again = scan_folder(root, **kit.FOLDER_OPTIONS).set_index("image_path")
    assert (again["split"] == frame["split"]).all()


def test_folder_with_normal_test_dir_and_without_masks(tmp_path, kit):
    root = kit.make_folder(tmp_path / "parts")
    kit.write_image(root / "good_test/a.png")
    frame = scan_folder(
        root, normal_dir="good", abnormal_dir="bad", normal_test_dir="good_test", category="x"
    )
    assert set(frame["category"]) == {"x"}
    assert frame.loc[frame["split"] == "test", "image_path"].str.startswith(("bad/", "good_test/")).all()
    assert frame["mask_path"].isna().all()  # image-level only without mask_dir


def test_folder_problems_are_all_named(tmp_path, kit):
    root = kit.make_folder(tmp_path / "parts")
    (root / "masks/scratch/01_mask.png").unlink()
    kit.write_mask(root / "masks/scratch/77.png")
    kit.write_mask(root / "masks/dent/00.png")
    message = problems_of(scan_folder, root, ["other"], **{**kit.FOLDER_OPTIONS, "normal_test_dir": "../x"})
    assert "Folder dataset at" in message
    assert f"{root / 'bad/scratch/01.png'}: anomalous image has no mask" in message
    assert f"{root / 'masks/scratch/77.png'}: mask matches no image" in message
    assert f"{root / 'masks/dent'}: masks for 'dent' but abnormal_dir has no such sub-folder" in message
    assert "dataset.folder.normal_test_dir: '../x' climbs out of the dataset root" in message
    assert "category 'other' not found; a Folder dataset has one category, 'parts'" in message


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
@pytest.mark.parametrize("target", ["..", "../..", "."])
def test_folder_symlink_loop_is_refused_not_followed(tmp_path, kit, target):
    # The case: normal/loop -> ../normal listed 35 files as 1,235 images, 40 levels deep.
    root = kit.make_folder(tmp_path / "parts")
    (root / "good/sub").mkdir()
    (root / "good/sub/loop").symlink_to(target, target_is_directory=True)
    message = problems_of(scan_folder, root, **kit.FOLDER_OPTIONS)
    assert f"{root / 'good/sub/loop'}: symlink loop" in message
    assert message.count("symlink loop") == 1


def test_a_file_name_that_is_not_utf8_is_named(tmp_path, kit):
    root = kit.make_folder(tmp_path / "parts")
    os.rename(root / "good/00.png", os.fsencode(root / "good") + b"/caf\xe9.png")
    message = problems_of(scan_folder, root, **kit.FOLDER_OPTIONS)
    assert f"{root / 'good'}/caf\\xe9.png: file name is not UTF-8; rename it" in message


def test_folder_missing_empty_and_overlapping_folders(tmp_path, kit):
    root = tmp_path / "parts"
    (root / "good").mkdir(parents=True)
    message = problems_of(scan_folder, root, normal_dir="good", abnormal_dir="bad", mask_dir="good")
    assert f"{root / 'bad'}: missing (dataset.folder.abnormal_dir='bad')" in message
    assert f"{root / 'good'}: no images (dataset.folder.normal_dir" in message
    assert "dataset.folder.normal_dir and dataset.folder.mask_dir" in message and "overlap" in message


def test_folder_without_normal_test_images(tmp_path, kit):
    root = kit.make_folder(tmp_path / "parts")
    message = problems_of(scan_folder, root, **kit.FOLDER_OPTIONS, normal_split=0.0)
    assert "the test split has no normal images" in message


def test_folder_settings_reach_the_reader(tmp_path, kit):
    root = kit.make_folder(tmp_path / "parts")
    settings = kit.settings_for("folder", root, tmp_path / "s", **{"dataset.folder.category": "widgets"})
    _, frame = resolve_dataset(settings)
    assert set(frame["category"]) == {"widgets"}


def test_paths_are_relative_posix(tmp_path, kit):
    root = kit.make_folder(tmp_path / "parts")
    frame = scan_folder(root, **kit.FOLDER_OPTIONS)
    assert all("\\" not in p and not Path(p).is_absolute() for p in frame["image_path"])
