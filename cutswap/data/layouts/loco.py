"""Scan MVTec LOCO AD into the common sample table, validating the layout on the way.

Layout, as the archive unpacks (``mvtec_loco_anomaly_detection/``)::

    <root>/
      breakfast_box/ juice_bottle/ pushpins/ screw_bag/ splicing_connectors/    # categories
        train/good/*.png                         # normal training images
        validation/good/*.png                    # normal validation images  -> split "val"
        test/good/*.png                          # normal test images
        test/logical_anomalies/*.png             # anomalous test images, one folder per anomaly kind
        test/structural_anomalies/*.png
        ground_truth/<kind>/<stem>/000.png ...   # a FOLDER per anomalous image, one file per defect
        defects_config.json, license.txt, ...    # files beside the folders are ignored

Two things differ from MVTec AD and both are pitfalls in other tools:

- ground truth is a folder per image, whose files are ORed into one mask. The table's ``mask_path`` is
  that folder (relative to the root); ingest ORs the image files it holds.
- mask values are not 255 (``screw_bag`` uses 236-255, ``defects_config.json`` lists them), so masks are
  binarised with ``!= 0`` (``cutswap.data.images.read_mask``), never by dividing by 255.

Validation images are kept with ``split="val"``: training never sees them and the test metrics never count
them; the evaluate stage chooses the decision threshold on them (``cutswap.score.detector``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cutswap.data.layouts.common import (
    GOOD,
    Problems,
    Row,
    extensions_hint,
    images_in,
    is_stray_image,
    scandir,
    select_categories,
    to_frame,
)

__all__ = ["scan_loco"]

_LAYOUT = (
    "expected the MVTec LOCO layout: <root>/<category>/train/good/*.png, "
    "<root>/<category>/validation/good/*.png, <root>/<category>/test/{good,<anomaly kind>}/*.png and "
    "<root>/<category>/ground_truth/<anomaly kind>/<stem>/000.png"
)


def scan_loco(root: Path, categories: list[str] | None = None) -> pd.DataFrame:
    """List the samples of an MVTec LOCO dataset and check the layout.

    Raises:
        DatasetError: Listing every problem found: the root is missing or has no category folder; a
            requested category does not exist; a category lacks ``train/good`` or ``test`` or holds no
            images; an anomalous image has no mask folder, or its folder no mask; a mask folder matches no
            image; a symlink points outside the root; an image has an unsupported format.
    """
    root = Path(root)
    problems = Problems(root, "MVTec LOCO")
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        problems.add(f"{root}: dataset root {what}; check the path ({_LAYOUT}).")
        problems.raise_if_any()
    real_root = root.resolve()
    candidates = [e for e in scandir(root, real_root, problems) if e.is_dir]
    if not any((e.path / "train").is_dir() or (e.path / "test").is_dir() for e in candidates):
        hint = ""
        if (root / "train").is_dir() or (root / "test").is_dir():
            hint = f" {root} looks like a single category; pass its parent folder as the root."
        problems.add(f"{root}: no category folder found; {_LAYOUT}.{hint}")
        problems.raise_if_any()
    available = sorted(e.name for e in candidates)
    rows: list[Row] = []
    for name in select_categories(available, categories, root, problems):
        rows.extend(_scan_category(root, real_root, name, problems))
    problems.raise_if_any()
    return to_frame(rows)


def _scan_category(root: Path, real_root: Path, category: str, problems: Problems) -> list[Row]:
    cat_dir = root / category
    subdirs = {e.name for e in scandir(cat_dir, real_root, problems) if e.is_dir}
    if not subdirs:
        problems.add(f"{cat_dir}: category {category!r} is empty; {_LAYOUT}. Copy it again or remove it.")
        return []
    rows: list[Row] = []
    for folder, split in (("train", "train"), ("validation", "val")):
        rows += _normal_rows(cat_dir, real_root, category, folder, split, subdirs, problems)
    test, kinds = _test_rows(cat_dir, real_root, category, subdirs, problems)
    _check_ground_truth(cat_dir, real_root, kinds, subdirs, problems)
    return rows + test


def _normal_rows(
    cat_dir: Path,
    real_root: Path,
    category: str,
    folder: str,
    split: str,
    subdirs: set[str],
    problems: Problems,
) -> list[Row]:
    """The normal images of ``train/good`` or ``validation/good`` (the first is required)."""
    if folder not in subdirs:
        if folder == "train":
            problems.add(f"{cat_dir / 'train' / GOOD}: missing; put the normal training images there.")
        return []
    for entry in scandir(cat_dir / folder, real_root, problems):
        if entry.is_dir and entry.name != GOOD:
            problems.add(f"{entry.path}: unexpected folder; {folder} images must all be normal, in good/.")
        elif is_stray_image(entry):
            problems.add(f"{entry.path}: image outside {folder}/good; move it into {folder}/good.")
    good = cat_dir / folder / GOOD
    if not good.is_dir():
        if folder == "train":
            problems.add(f"{good}: missing; put the normal training images there.")
        return []
    images = images_in(good, real_root, problems)
    if not images:
        problems.add(f"{good}: no images ({extensions_hint()}).")
    return [(category, split, 0, GOOD, f"{category}/{folder}/{GOOD}/{e.name}", None) for e in images]


def _test_rows(
    cat_dir: Path, real_root: Path, category: str, subdirs: set[str], problems: Problems
) -> tuple[list[Row], set[str]]:
    """The test images of every kind with their mask folders; the kinds seen."""
    if "test" not in subdirs:
        problems.add(f"{cat_dir / 'test'}: missing; put test images in test/good and test/<anomaly kind>.")
        return [], set()
    rows: list[Row] = []
    kinds: set[str] = set()
    for entry in scandir(cat_dir / "test", real_root, problems):
        if is_stray_image(entry):
            problems.add(f"{entry.path}: image directly in test/; move it into test/good or test/<kind>.")
        if not entry.is_dir:
            continue
        kind = entry.name
        kinds.add(kind)
        images = images_in(entry.path, real_root, problems)
        masks = {} if kind == GOOD else _mask_folders(cat_dir, real_root, kind, images, problems)
        for image in images:
            mask = masks.get(image.name)
            mask_rel = f"{category}/ground_truth/{kind}/{mask}" if mask else None
            rows.append(
                (category, "test", int(kind != GOOD), kind, f"{category}/test/{kind}/{image.name}", mask_rel)
            )
    if not rows:
        problems.add(f"{cat_dir / 'test'}: no test images ({extensions_hint()}).")
    return rows, kinds


def _check_ground_truth(
    cat_dir: Path, real_root: Path, kinds: set[str], subdirs: set[str], problems: Problems
) -> None:
    """Mask folders without anomalous test images, and masks outside a per-image folder."""
    if "ground_truth" not in subdirs:
        return
    for entry in scandir(cat_dir / "ground_truth", real_root, problems):
        if entry.is_dir and (entry.name not in kinds or entry.name == GOOD):
            problems.add(
                f"{entry.path}: masks for {entry.name!r} but no anomalous test/{entry.name} folder; "
                "restore the test images or remove the folder."
            )
        elif is_stray_image(entry):
            problems.add(f"{entry.path}: mask directly in ground_truth/; LOCO keeps one folder per image.")


def _mask_folders(
    cat_dir: Path, real_root: Path, kind: str, images: list, problems: Problems
) -> dict[str, str]:
    """Image name -> name of its mask folder in ``ground_truth/<kind>/``; reports every mismatch."""
    gt = cat_dir / "ground_truth" / kind
    if not gt.is_dir():
        if images:
            problems.add(
                f"{gt}: missing: no masks for the {len(images)} image(s) in test/{kind}; add one folder "
                "<stem>/ of mask files per image."
            )
        return {}
    folders = {}
    for entry in scandir(gt, real_root, problems):
        if entry.is_dir:
            folders[entry.name] = entry
        elif is_stray_image(entry):
            problems.add(
                f"{entry.path}: mask file directly in ground_truth/{kind}/; move it into a folder named "
                "after its image's stem (e.g. 000/000.png)."
            )
    paired: dict[str, str] = {}
    for image in images:
        stem = Path(image.name).stem
        folder = folders.get(stem)
        if folder is None:
            problems.add(f"{image.path}: anomalous image has no mask folder; add {gt / stem}/000.png.")
            continue
        if not images_in(folder.path, real_root, problems):
            problems.add(
                f"{folder.path}: mask folder holds no mask ({extensions_hint()}); add its mask files."
            )
            continue
        paired[image.name] = stem
    stems = {Path(image.name).stem for image in images}
    for name, entry in folders.items():
        if name not in stems:
            problems.add(
                f"{entry.path}: mask folder matches no image in test/{kind} "
                f"(expected test/{kind}/{name}.png); rename or remove it."
            )
    return paired
