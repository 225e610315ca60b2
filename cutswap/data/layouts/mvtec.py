"""Scan a dataset in the MVTec AD layout into a table of samples, validating the layout on the way.

Expected layout (the one MVTec AD ships, and the one anomalib, PatchCore and the embedded ``textures``
dataset use)::

    <root>/
      <category>/                      # e.g. bottle, carpet, brick
        train/good/*.png               # normal training images only
        validation/good/*.png          # optional: normal images to choose the threshold on -> split "val"
        test/good/*.png                # normal test images
        test/<defect>/*.png            # anomalous test images, one folder per defect type
        ground_truth/<defect>/<stem>_mask.png   # one mask per anomalous test image

BTAD (``cutswap.data.layouts.btad``) is the same tree with ``ok`` for ``good`` and masks named like their
image; ``scan_mvtec_like`` serves both.

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

An optional ``validation/<normal>`` folder (not part of MVTec AD; the embedded ``textures`` dataset has one,
as MVTec LOCO does) holds normal images that are neither trained on nor tested: the evaluate stage chooses
the decision threshold on them (``cutswap.score.detector``). Without it, the threshold is chosen on normal
training images held out of the fits.

``scan_mvtec`` only lists files; it never decodes pixels, so it stays fast on large datasets (decoding and
its errors belong to ingest, through ``cutswap.data.images``). The table has the columns of
``cutswap.data.layouts.common.COLUMNS``, one row per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cutswap.data.layouts.common import (
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


@dataclass
class _Category:
    """One category folder being read: where its parts are, what it holds so far."""

    root: Path
    real_root: Path
    name: str
    problems: Problems
    normal: str
    subdirs: dict[str, Any]

    @property
    def folder(self) -> Path:
        return self.root / self.name

    def scandir(self, path: Path) -> list:
        return scandir(path, self.real_root, self.problems)

    def images_in(self, path: Path) -> list:
        return images_in(path, self.real_root, self.problems)


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
    subdirs = {e.name: e for e in scandir(root / category, real_root, problems) if e.is_dir}
    cat = _Category(root, real_root, category, problems, normal, subdirs)
    if not _has_parts(cat, layout_hint):
        return []
    train = _train_rows(cat)
    validation = _validation_rows(cat)
    test, defects = _test_rows(cat, mask_name, masks_required)
    _check_ground_truth(cat, defects)
    _check_counts(cat, len(train), len(test))
    return train + validation + test


def _has_parts(cat: _Category, layout_hint: str) -> bool:
    """Whether the category has any part at all; reports each missing one."""
    if not cat.subdirs:
        cat.problems.add(
            f"{cat.folder}: category {cat.name!r} is empty (no train/ or test/ folder); {layout_hint}. "
            "Copy it again or remove it."
        )
        return False
    if not _has_train_good(cat):
        cat.problems.add(
            f"{cat.folder / 'train' / cat.normal}: missing; put the category's normal training images there."
        )
    if "test" not in cat.subdirs:
        cat.problems.add(
            f"{cat.folder / 'test'}: missing; put test images in test/{cat.normal} and test/<defect>."
        )
    return True


def _has_train_good(cat: _Category) -> bool:
    return "train" in cat.subdirs and (cat.folder / "train" / cat.normal).is_dir()


def _train_rows(cat: _Category) -> list[Row]:
    """The normal training images; anything else under train/ is reported."""
    if "train" not in cat.subdirs:
        return []
    train_dir, normal = cat.folder / "train", cat.normal
    for entry in cat.scandir(train_dir):
        if entry.is_dir and entry.name != normal:
            cat.problems.add(
                f"{entry.path}: unexpected folder; training images must all be normal, in train/{normal}."
            )
        elif is_stray_image(entry):
            cat.problems.add(f"{entry.path}: image outside train/{normal}; move it into train/{normal}.")
    if not _has_train_good(cat):
        return []
    return [
        (cat.name, "train", 0, GOOD, f"{cat.name}/train/{normal}/{image.name}", None)
        for image in cat.images_in(train_dir / normal)
    ]


def _validation_rows(cat: _Category) -> list[Row]:
    """The normal images of the optional validation/<normal> folder (split ``val``); anything else there is
    reported, as under train/."""
    if "validation" not in cat.subdirs:
        return []
    folder, normal = cat.folder / "validation", cat.normal
    for entry in cat.scandir(folder):
        if (entry.is_dir and entry.name != normal) or is_stray_image(entry):
            cat.problems.add(
                f"{entry.path}: unexpected here; validation images must all be normal, "
                f"in validation/{normal}."
            )
    if not (folder / normal).is_dir():
        return []
    images = cat.images_in(folder / normal)
    if not images:
        cat.problems.add(
            f"{folder / normal}: no images ({extensions_hint()}); add some or remove the folder."
        )
    return [
        (cat.name, "val", 0, GOOD, f"{cat.name}/validation/{normal}/{image.name}", None) for image in images
    ]


def _test_rows(cat: _Category, mask_name: str, masks_required: bool) -> tuple[list[Row], set[str]]:
    """The test images of every defect folder (and test/<normal>) with their masks; the defects seen."""
    if "test" not in cat.subdirs:
        return [], set()
    test_dir, normal = cat.folder / "test", cat.normal
    entries = cat.scandir(test_dir)
    for entry in entries:
        if is_stray_image(entry):
            cat.problems.add(
                f"{entry.path}: image directly in test/; move it into test/{normal} or test/<defect>."
            )
    rows: list[Row] = []
    defects: set[str] = set()
    for defect_entry in (e for e in entries if e.is_dir):
        defect = defect_entry.name
        defects.add(defect)
        images = cat.images_in(defect_entry.path)
        anomalous = defect != normal
        masks = pair_masks(
            cat.folder / "ground_truth" / defect,
            cat.real_root,
            images,
            cat.problems,
            anomalous and masks_required,
            f"test/{defect}",
            mask_name,
        )
        for image in images:
            mask = masks.get(image.name)
            mask_rel = f"{cat.name}/ground_truth/{defect}/{mask.name}" if mask is not None else None
            label = defect if anomalous else GOOD
            rows.append(
                (cat.name, "test", int(anomalous), label, f"{cat.name}/test/{defect}/{image.name}", mask_rel)
            )
    return rows, defects


def _check_ground_truth(cat: _Category, defects: set[str]) -> None:
    """Mask folders without test images, and masks outside a defect folder."""
    if "ground_truth" not in cat.subdirs:
        return
    for entry in cat.scandir(cat.folder / "ground_truth"):
        if entry.is_dir and entry.name not in defects:
            cat.problems.add(
                f"{entry.path}: masks for defect {entry.name!r} but no test/{entry.name} folder; "
                "restore the test images or remove the folder."
            )
        elif is_stray_image(entry):
            cat.problems.add(
                f"{entry.path}: mask directly in ground_truth/; move it into ground_truth/<defect>."
            )


def _check_counts(cat: _Category, n_train: int, n_test: int) -> None:
    """A category, or a part of it, that holds no images."""
    has_train_good, has_test = _has_train_good(cat), "test" in cat.subdirs
    if n_train == 0 and n_test == 0 and (has_train_good or has_test):
        cat.problems.add(f"{cat.folder}: category {cat.name!r} holds no images; copy it again or remove it.")
        return
    if has_train_good and n_train == 0:
        cat.problems.add(f"{cat.folder / 'train' / cat.normal}: no training images ({extensions_hint()}).")
    if has_test and n_test == 0:
        cat.problems.add(f"{cat.folder / 'test'}: no test images ({extensions_hint()}).")
