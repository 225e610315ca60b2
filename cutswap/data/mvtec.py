"""Scan a dataset in the MVTec AD layout into a table of samples, validating the layout on the way.

Expected layout (the one MVTec AD ships, and the one anomalib, PatchCore and the embedded ``textures``
dataset use)::

    <root>/
      <category>/                      # e.g. bottle, carpet, brick
        train/good/*.png               # normal training images only
        test/good/*.png                # normal test images
        test/<defect>/*.png            # anomalous test images, one folder per defect type
        ground_truth/<defect>/<stem>_mask.png   # one mask per anomalous test image

BTAD (``cutswap.data.btad``) is the same tree with ``ok`` for ``good`` and masks named like their image;
``scan_mvtec_like`` serves both.

Image and mask extensions: ``.png``, ``.jpg`` and ``.bmp`` in any letter case. Files with other extensions
are ignored, except other image formats (``.jpeg``, ``.tif``, ``.webp``, ...), which are reported so that
images are never dropped silently. Hidden files and folders (``.DS_Store``, ``__MACOSX``) are ignored.

Masks are paired with images as anomalib does, by the image stem being contained in the mask stem:
``000.png`` pairs with ``000_mask.png`` or ``000.png``. An exact match (``<stem>_mask`` or ``<stem>``) wins
over a mere containment, so ``1.png`` pairs with ``1_mask.png`` and not with ``11_mask.png``. Masks are
optional for ``test/good`` (an absent mask means "all normal") and required for every anomalous image,
unless the caller says the layout has none (``masks_required=False``: the embedded one-class ``mnist``
dataset, whose anomalies are whole images of another digit); its anomalous images then get no mask, and
the evaluate stage reports pixel metrics as NaN.

``scan_mvtec`` only lists files; it never decodes pixels, so it stays fast on large datasets (decoding and
its errors belong to ingest, through ``cutswap.data.images``). The table has the columns of
``cutswap.data.layout.COLUMNS``, one row per image.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cutswap.data.layout import (
    COLUMNS,
    GOOD,
    IMAGE_EXTENSIONS,
    Problems,
    Row,
    extensions_hint,
    images_in,
    is_stray_image,
    pair_masks,
    scandir,
    select_categories,
    to_frame,
)

__all__ = ["COLUMNS", "IMAGE_EXTENSIONS", "scan_mvtec", "scan_mvtec_like"]

_LAYOUT = (
    "expected the MVTec AD layout: <root>/<category>/train/good/*.png, <root>/<category>/test/good/*.png, "
    "<root>/<category>/test/<defect>/*.png and <root>/<category>/ground_truth/<defect>/<stem>_mask.png"
)


def scan_mvtec(root: Path, categories: list[str] | None = None, masks_required: bool = True) -> pd.DataFrame:
    """List the samples of an MVTec AD-style dataset and check the layout.

    Args:
        root: Dataset root, the folder holding one folder per category.
        categories: Category names to scan; ``None`` scans every category folder found.
        masks_required: Whether every anomalous image needs a mask (MVTec AD, ``textures``). ``False`` only
            for layouts that have no pixel annotation by design (``mnist``); masks that are present are
            still paired and checked.

    Returns:
        One row per image with the columns in ``COLUMNS``, sorted by (category, split, defect_type,
        image_path) so that downstream keys and sample indices are reproducible across filesystems.

    Raises:
        DatasetError: Listing every problem found: the root is missing or has no category folder; a
            requested category does not exist; a category lacks ``train/good`` or ``test`` or holds no
            images; an anomalous image has no mask (when required), or a mask no image; a symlink points
            outside the root; an image has an unsupported format.
    """
    return scan_mvtec_like(root, categories, masks_required=masks_required)


def scan_mvtec_like(
    root: Path,
    categories: list[str] | None = None,
    normal: str = GOOD,
    layout: str = "MVTec AD",
    layout_hint: str = _LAYOUT,
    mask_name: str = "<stem>_mask.png",
    masks_required: bool = True,
) -> pd.DataFrame:
    """Scan an MVTec AD-shaped tree whose normal folders are called ``normal`` (``good``, ``ok``).

    Normal images get ``defect_type="good"`` whatever their folder is called, so tables of every layout
    read the same downstream. ``layout``, ``layout_hint`` and ``mask_name`` only shape the messages;
    ``masks_required`` is as in :func:`scan_mvtec`.
    """
    root = Path(root)
    problems = Problems(root, layout)
    if not root.exists():
        problems.add(f"{root}: dataset root does not exist; check the path ({layout_hint}).")
        problems.raise_if_any()
    if not root.is_dir():
        problems.add(f"{root}: dataset root is not a folder; pass the folder that holds the categories.")
        problems.raise_if_any()
    real_root = root.resolve()

    available = _list_categories(root, real_root, problems)
    if not available:
        hint = ""
        if (root / "train").is_dir() or (root / "test").is_dir():
            hint = f" {root} looks like a single category; pass its parent folder as the root."
        problems.add(f"{root}: no category folder found; {layout_hint}.{hint}")
        problems.raise_if_any()

    wanted = select_categories(available, categories, root, problems)
    rows: list[Row] = []
    for name in wanted:
        rows.extend(
            _scan_category(root, real_root, name, problems, normal, layout_hint, mask_name, masks_required)
        )
    problems.raise_if_any()
    return to_frame(rows)


def _list_categories(root: Path, real_root: Path, problems: Problems) -> list[str]:
    """Category folders: visible sub-folders of the root that look like categories (train/ or test/)."""
    entries = scandir(root, real_root, problems)
    candidates = [e for e in entries if e.is_dir]
    if not any((e.path / "train").is_dir() or (e.path / "test").is_dir() for e in candidates):
        return []
    # Once the root clearly is a dataset root, every visible folder is treated as a category, so that an
    # empty or half-copied category is reported rather than silently skipped.
    return sorted(e.name for e in candidates)


def _scan_category(
    root: Path,
    real_root: Path,
    category: str,
    problems: Problems,
    normal: str,
    layout_hint: str,
    mask_name: str,
    masks_required: bool = True,
) -> list[Row]:
    cat_dir = root / category
    subdirs = {e.name: e for e in scandir(cat_dir, real_root, problems) if e.is_dir}
    train_dir, test_dir, gt_dir = cat_dir / "train", cat_dir / "test", cat_dir / "ground_truth"
    has_train_good = "train" in subdirs and (train_dir / normal).is_dir()
    has_test = "test" in subdirs

    if not subdirs:
        problems.add(
            f"{cat_dir}: category {category!r} is empty (no train/ or test/ folder); {layout_hint}. "
            "Copy it again or remove it."
        )
        return []
    if not has_train_good:
        problems.add(f"{train_dir / normal}: missing; put the category's normal training images there.")
    if not has_test:
        problems.add(f"{test_dir}: missing; put test images in test/{normal} and test/<defect>.")

    rows: list[Row] = []
    n_train = 0
    if "train" in subdirs:
        for entry in scandir(train_dir, real_root, problems):
            if entry.is_dir and entry.name != normal:
                problems.add(
                    f"{entry.path}: unexpected folder; training images must all be normal, in train/{normal}."
                )
            elif is_stray_image(entry):
                problems.add(f"{entry.path}: image outside train/{normal}; move it into train/{normal}.")
        if has_train_good:
            for image in images_in(train_dir / normal, real_root, problems):
                rows.append((category, "train", 0, GOOD, f"{category}/train/{normal}/{image.name}", None))
                n_train += 1

    n_test = 0
    test_defects: set[str] = set()
    if has_test:
        test_entries = scandir(test_dir, real_root, problems)
        for entry in test_entries:
            if is_stray_image(entry):
                problems.add(
                    f"{entry.path}: image directly in test/; move it into test/{normal} or test/<defect>."
                )
        for defect_entry in (e for e in test_entries if e.is_dir):
            defect = defect_entry.name
            test_defects.add(defect)
            images = images_in(defect_entry.path, real_root, problems)
            n_test += len(images)
            anomalous = defect != normal
            masks = pair_masks(
                gt_dir / defect,
                real_root,
                images,
                problems,
                anomalous and masks_required,
                f"test/{defect}",
                mask_name,
            )
            for image in images:
                mask = masks.get(image.name)
                mask_rel = f"{category}/ground_truth/{defect}/{mask.name}" if mask is not None else None
                rows.append(
                    (
                        category,
                        "test",
                        int(anomalous),
                        defect if anomalous else GOOD,
                        f"{category}/test/{defect}/{image.name}",
                        mask_rel,
                    )
                )

    if "ground_truth" in subdirs:
        for entry in scandir(gt_dir, real_root, problems):
            if entry.is_dir and entry.name not in test_defects:
                problems.add(
                    f"{entry.path}: masks for defect {entry.name!r} but no test/{entry.name} folder; "
                    "restore the test images or remove the folder."
                )
            elif is_stray_image(entry):
                problems.add(
                    f"{entry.path}: mask directly in ground_truth/; move it into ground_truth/<defect>."
                )

    if n_train == 0 and n_test == 0 and (has_train_good or has_test):
        problems.add(f"{cat_dir}: category {category!r} holds no images; copy it again or remove it.")
    else:
        if has_train_good and n_train == 0:
            problems.add(f"{train_dir / normal}: no training images ({extensions_hint()}).")
        if has_test and n_test == 0:
            problems.add(f"{test_dir}: no test images ({extensions_hint()}).")
    return rows
