"""Scan a dataset in the MVTec AD layout into a table of samples, validating the layout on the way.

Expected layout (the one MVTec AD ships, and the one anomalib, PatchCore and the embedded ``textures``
dataset use)::

    <root>/
      <category>/                      # e.g. bottle, carpet, brick
        train/good/*.png               # normal training images only
        test/good/*.png                # normal test images
        test/<defect>/*.png            # anomalous test images, one folder per defect type
        ground_truth/<defect>/<stem>_mask.png   # one mask per anomalous test image

Image and mask extensions: ``.png``, ``.jpg`` and ``.bmp`` in any letter case. Files with other extensions
are ignored, except other image formats (``.jpeg``, ``.tif``, ``.webp``, ...), which are reported so that
images are never dropped silently. Hidden files and folders (``.DS_Store``, ``__MACOSX``) are ignored.

Masks are paired with images as anomalib does, by the image stem being contained in the mask stem:
``000.png`` pairs with ``000_mask.png`` or ``000.png``. An exact match (``<stem>_mask`` or ``<stem>``) wins
over a mere containment, so ``1.png`` pairs with ``1_mask.png`` and not with ``11_mask.png``. Masks are
optional for ``test/good`` (an absent mask means "all normal") and required for every anomalous image.

``scan_mvtec`` only lists files; it never decodes pixels, so it stays fast on large datasets (decoding and
its errors belong to ingest, through ``cutswap.data.images``). The table has one row per image:

=============  =====================================================================
column         meaning
=============  =====================================================================
category       category folder name
split          ``"train"`` or ``"test"``
label          0 normal (``good``), 1 anomalous
defect_type    ``"good"`` or the defect folder name
image_path     path relative to ``root``, POSIX separators
mask_path      path relative to ``root``, POSIX separators, or ``None``
=============  =====================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cutswap.errors import DatasetError

__all__ = ["COLUMNS", "IMAGE_EXTENSIONS", "scan_mvtec"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".bmp"})
"""Accepted extensions, compared in lower case (so ``.PNG`` and ``.JPG`` are accepted too)."""

_OTHER_IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpe", ".tif", ".tiff", ".webp", ".gif", ".jp2", ".ppm"})
COLUMNS = ["category", "split", "label", "defect_type", "image_path", "mask_path"]
_GOOD = "good"

_LAYOUT = (
    "expected the MVTec AD layout: <root>/<category>/train/good/*.png, <root>/<category>/test/good/*.png, "
    "<root>/<category>/test/<defect>/*.png and <root>/<category>/ground_truth/<defect>/<stem>_mask.png"
)


@dataclass
class _Problems:
    """Collects every problem so the user fixes the dataset in one pass instead of one error per run."""

    root: Path
    items: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        count = len(self.items)
        header = f"MVTec AD dataset at {self.root}: {count} problem{'s' if count > 1 else ''} found:"
        raise DatasetError("\n".join([header, *(f"  - {item}" for item in self.items)]))


@dataclass
class _Entry:
    """A directory entry under the root, with the facts the scan needs (from one ``scandir`` call)."""

    name: str
    path: Path
    is_dir: bool


def scan_mvtec(root: Path, categories: list[str] | None = None) -> pd.DataFrame:
    """List the samples of an MVTec AD-style dataset and check the layout.

    Args:
        root: Dataset root, the folder holding one folder per category.
        categories: Category names to scan; ``None`` scans every category folder found.

    Returns:
        One row per image with the columns in ``COLUMNS``, sorted by (category, split, defect_type,
        image_path) so that downstream keys and sample indices are reproducible across filesystems.

    Raises:
        DatasetError: Listing every problem found: the root is missing or has no category folder; a
            requested category does not exist; a category lacks ``train/good`` or ``test`` or holds no
            images; an anomalous image has no mask, or a mask no image; a symlink points outside the
            root; an image has an unsupported format.
    """
    root = Path(root)
    problems = _Problems(root)
    if not root.exists():
        problems.add(f"{root}: dataset root does not exist; check the path ({_LAYOUT}).")
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
        problems.add(f"{root}: no category folder found; {_LAYOUT}.{hint}")
        problems.raise_if_any()

    wanted = _select(available, categories, root, problems)
    rows: list[tuple[str, str, int, str, str, str | None]] = []
    for name in wanted:
        rows.extend(_scan_category(root, real_root, name, problems))
    problems.raise_if_any()

    frame = pd.DataFrame.from_records(rows, columns=COLUMNS)
    frame = frame.astype({"category": str, "split": str, "label": "int64", "defect_type": str})
    frame["image_path"] = frame["image_path"].astype(str)
    frame["mask_path"] = frame["mask_path"].astype(object).where(frame["mask_path"].notna(), None)
    frame = frame.sort_values(["category", "split", "defect_type", "image_path"], kind="mergesort")
    return frame.reset_index(drop=True)


def _list_categories(root: Path, real_root: Path, problems: _Problems) -> list[str]:
    """Category folders: visible sub-folders of the root that look like categories (train/ or test/)."""
    entries = _scandir(root, real_root, problems)
    candidates = [e for e in entries if e.is_dir]
    if not any((e.path / "train").is_dir() or (e.path / "test").is_dir() for e in candidates):
        return []
    # Once the root clearly is a dataset root, every visible folder is treated as a category, so that an
    # empty or half-copied category is reported rather than silently skipped.
    return sorted(e.name for e in candidates)


def _select(available: list[str], requested: list[str] | None, root: Path, problems: _Problems) -> list[str]:
    if requested is None:
        return available
    if isinstance(requested, str):
        requested = [requested]
    if not requested:
        problems.add(f"{root}: the list of categories to scan is empty; available: {', '.join(available)}.")
        problems.raise_if_any()
    # A category hidden by an escaping symlink was already reported as such; do not call it unknown too.
    unknown = [
        name for name in dict.fromkeys(requested) if name not in available and not (root / name).is_symlink()
    ]
    for name in unknown:
        problems.add(
            f"{root / name}: category {name!r} not found; available categories: {', '.join(available)}."
        )
    return [name for name in dict.fromkeys(requested) if name in available]


def _scan_category(
    root: Path, real_root: Path, category: str, problems: _Problems
) -> list[tuple[str, str, int, str, str, str | None]]:
    cat_dir = root / category
    subdirs = {e.name: e for e in _scandir(cat_dir, real_root, problems) if e.is_dir}
    train_dir, test_dir, gt_dir = cat_dir / "train", cat_dir / "test", cat_dir / "ground_truth"
    has_train_good = "train" in subdirs and (train_dir / _GOOD).is_dir()
    has_test = "test" in subdirs

    if not subdirs:
        problems.add(
            f"{cat_dir}: category {category!r} is empty (no train/ or test/ folder); {_LAYOUT}. "
            "Copy it again or remove it."
        )
        return []
    if not has_train_good:
        problems.add(f"{train_dir / _GOOD}: missing; put the category's normal training images there.")
    if not has_test:
        problems.add(f"{test_dir}: missing; put test images in test/good and test/<defect>.")

    rows: list[tuple[str, str, int, str, str, str | None]] = []
    n_train = 0
    if "train" in subdirs:
        for entry in _scandir(train_dir, real_root, problems):
            if entry.is_dir and entry.name != _GOOD:
                problems.add(
                    f"{entry.path}: unexpected folder; training images must all be normal, in train/good."
                )
            elif _is_stray_image(entry):
                problems.add(f"{entry.path}: image outside train/good; move it into train/good.")
        if has_train_good:
            for image in _images(train_dir / _GOOD, real_root, problems):
                rows.append((category, "train", 0, _GOOD, _rel(category, "train", _GOOD, image), None))
                n_train += 1

    n_test = 0
    test_defects: set[str] = set()
    if has_test:
        test_entries = _scandir(test_dir, real_root, problems)
        for entry in test_entries:
            if _is_stray_image(entry):
                problems.add(
                    f"{entry.path}: image directly in test/; move it into test/good or test/<defect>."
                )
        defect_dirs = [e for e in test_entries if e.is_dir]
        for defect_entry in defect_dirs:
            defect = defect_entry.name
            test_defects.add(defect)
            images = _images(defect_entry.path, real_root, problems)
            n_test += len(images)
            masks = _pair_masks(gt_dir / defect, real_root, defect, images, problems)
            label = 0 if defect == _GOOD else 1
            for image in images:
                mask = masks.get(image.name)
                mask_rel = _rel(category, "ground_truth", defect, mask) if mask is not None else None
                rows.append(
                    (category, "test", label, defect, _rel(category, "test", defect, image), mask_rel)
                )

    if "ground_truth" in subdirs:
        for entry in _scandir(gt_dir, real_root, problems):
            if entry.is_dir and entry.name not in test_defects:
                problems.add(
                    f"{entry.path}: masks for defect {entry.name!r} but no test/{entry.name} folder; "
                    "restore the test images or remove the folder."
                )
            elif _is_stray_image(entry):
                problems.add(
                    f"{entry.path}: mask directly in ground_truth/; move it into ground_truth/<defect>."
                )

    if n_train == 0 and n_test == 0 and (has_train_good or has_test):
        problems.add(f"{cat_dir}: category {category!r} holds no images; copy it again or remove it.")
    else:
        if has_train_good and n_train == 0:
            problems.add(f"{train_dir / _GOOD}: no training images ({_extensions_hint()}).")
        if has_test and n_test == 0:
            problems.add(f"{test_dir}: no test images ({_extensions_hint()}).")
    return rows


def _pair_masks(
    gt_dir: Path, real_root: Path, defect: str, images: list[_Entry], problems: _Problems
) -> dict[str, _Entry]:
    """Pair each image of ``test/<defect>`` with its mask in ``ground_truth/<defect>``.

    Returns:
        Image file name -> mask entry, for the images that have a mask.
    """
    anomalous = defect != _GOOD
    if not gt_dir.is_dir():
        if anomalous and images:
            count = f"{len(images)} image" + ("s" if len(images) > 1 else "")
            problems.add(
                f"{gt_dir}: missing: no masks for the {count} in test/{defect}; "
                "add one <stem>_mask.png per image."
            )
        return {}
    masks = _images(gt_dir, real_root, problems)
    if not images:
        for mask in masks:
            problems.add(f"{mask.path}: mask matches no image (test/{defect} is empty); remove it.")
        return {}

    by_stem: dict[str, list[_Entry]] = {}
    for mask in masks:
        by_stem.setdefault(Path(mask.name).stem, []).append(mask)

    paired: dict[str, _Entry] = {}
    claimed: dict[str, str] = {}  # mask name -> image name
    unresolved: list[_Entry] = []
    for image in images:
        stem = Path(image.name).stem
        exact = by_stem.get(f"{stem}_mask", []) + by_stem.get(stem, [])
        if len(exact) == 1:
            mask = exact[0]
            if mask.name in claimed:
                problems.add(
                    f"{mask.path}: mask matches both {claimed[mask.name]} and {image.name} (same stem); "
                    "rename or remove one of the images."
                )
                continue
            paired[image.name] = mask
            claimed[mask.name] = image.name
        elif len(exact) > 1:
            names = ", ".join(m.name for m in exact)
            problems.add(f"{image.path}: several masks match it ({names}); keep one.")
            for mask in exact:
                claimed[mask.name] = image.name
        else:
            unresolved.append(image)

    # Fall back to anomalib's rule (image stem contained in mask stem) among masks no exact match took.
    free = [m for m in masks if m.name not in claimed]
    for image in unresolved:
        stem = Path(image.name).stem
        candidates = [m for m in free if stem in Path(m.name).stem]
        if len(candidates) == 1:
            mask = candidates[0]
            if mask.name in claimed:
                problems.add(
                    f"{mask.path}: mask matches both {claimed[mask.name]} and {image.name}; rename it to "
                    "<stem>_mask.png of the right image."
                )
                continue
            paired[image.name] = mask
            claimed[mask.name] = image.name
        elif len(candidates) > 1:
            names = ", ".join(m.name for m in candidates)
            problems.add(
                f"{image.path}: several masks contain its name ({names}); name its mask {stem}_mask.png."
            )
            for mask in candidates:
                claimed.setdefault(mask.name, image.name)
        elif anomalous:
            problems.add(
                f"{image.path}: anomalous image has no mask; add {gt_dir / (stem + '_mask.png')} "
                "(the image stem must be contained in the mask stem)."
            )

    for mask in masks:
        if mask.name not in claimed:
            problems.add(
                f"{mask.path}: mask matches no image in test/{defect} (the image stem must be contained in "
                "the mask stem, e.g. 000.png <-> 000_mask.png); rename or remove it."
            )
    return paired


def _images(folder: Path, real_root: Path, problems: _Problems) -> list[_Entry]:
    """Image files of ``folder`` (non-recursive); reports sub-folders and unsupported image formats."""
    found = []
    for entry in _scandir(folder, real_root, problems):
        suffix = Path(entry.name).suffix.lower()
        if entry.is_dir:
            problems.add(f"{entry.path}: unexpected folder; images must sit directly in {folder.name}/.")
        elif suffix in IMAGE_EXTENSIONS:
            found.append(entry)
        elif suffix in _OTHER_IMAGE_EXTENSIONS:
            problems.add(f"{entry.path}: unsupported image format; {_extensions_hint()}.")
    return found


def _is_stray_image(entry: _Entry) -> bool:
    suffix = Path(entry.name).suffix.lower()
    return not entry.is_dir and (suffix in IMAGE_EXTENSIONS or suffix in _OTHER_IMAGE_EXTENSIONS)


def _scandir(folder: Path, real_root: Path, problems: _Problems) -> list[_Entry]:
    """Visible entries of ``folder`` sorted by name; symlinks must resolve to a place inside the root.

    A symlink leaving the root is refused because the root is the unit users copy, share and hash: a
    dataset that silently reads ``/etc`` or another user's files through a link is neither reproducible
    nor safe to process on a shared machine.
    """
    entries = []
    try:
        with os.scandir(folder) as it:
            raw = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        problems.add(f"{folder}: cannot be listed ({exc.strerror or exc}); check its permissions.")
        return []
    for item in raw:
        if item.name.startswith(".") or item.name.startswith("__"):
            continue
        path = folder / item.name
        if item.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):
                problems.add(f"{path}: broken symlink; fix or remove it.")
                continue
            if not target.is_relative_to(real_root):
                problems.add(
                    f"{path}: symlink points outside the dataset root (to {target}); copy the file into "
                    "the dataset instead."
                )
                continue
        try:
            is_dir = item.is_dir()
        except OSError:
            is_dir = False
        entries.append(_Entry(item.name, path, is_dir))
    return entries


def _rel(category: str, split: str, defect: str, entry: _Entry) -> str:
    return f"{category}/{split}/{defect}/{entry.name}"


def _extensions_hint() -> str:
    return "accepted extensions: " + ", ".join(sorted(IMAGE_EXTENSIONS)) + " (any letter case)"
