"""Scan a generic folder of normal and abnormal images (anomalib's ``Folder``) into the sample table.

For data that follows no benchmark's layout: point ``dataset.root`` at a folder and name its parts in
``dataset.folder`` (every path relative to the root)::

    <root>/                                  # one category, named dataset.folder.category or the root's name
      <normal_dir>/**/*.png                  # normal images: training (and, see below, normal test)
      <abnormal_dir>/**/*.png                # anomalous test images; a sub-folder names a defect type
      <normal_test_dir>/**/*.png             # optional: normal test images
      <mask_dir>/**/<stem>[_mask].png        # optional: one mask per anomalous image, mirroring the
                                             #   sub-folders of abnormal_dir

For example ``{normal_dir: good, abnormal_dir: defective, mask_dir: masks}``, or anomalib's example on one
MVTec category ``{normal_dir: train/good, abnormal_dir: test/broken_large, mask_dir:
ground_truth/broken_large}``.

- Folders are searched recursively. An anomalous image directly in ``abnormal_dir`` gets that folder's
  name as defect type; one in ``abnormal_dir/scratch/`` gets ``scratch``.
- Masks are optional as a whole (without ``mask_dir`` the benchmark is image-level only), but once
  ``mask_dir`` is given every anomalous image needs one, paired by stem as in MVTec AD (``000.png`` with
  ``000.png`` or ``000_mask.png``).
- Without ``normal_test_dir``, a fraction ``normal_split`` of the normal images is held out as normal test
  images, because image AUROC needs normal test images. Which ones is decided by a hash of each file's
  relative path, not by a random draw, so the split is the same on every machine and each image's side
  stays put when the folder is copied or renamed as a whole.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from cutswap.data.layout import (
    GOOD,
    Entry,
    Problems,
    Row,
    extensions_hint,
    images_in,
    inside_root,
    is_stray_image,
    pair_masks,
    scandir,
    to_frame,
)

__all__ = ["scan_folder"]


def scan_folder(
    root: Path,
    categories: list[str] | None = None,
    *,
    normal_dir: str = "normal",
    abnormal_dir: str = "abnormal",
    mask_dir: str | None = None,
    normal_test_dir: str | None = None,
    normal_split: float = 0.2,
    category: str | None = None,
) -> pd.DataFrame:
    """List the samples of a folder dataset and check it.

    Args:
        root: Dataset root; every other folder is relative to it and must stay inside it.
        categories: ``None`` or a list holding this dataset's single category name.
        normal_split: Fraction of the normal images held out as normal test images when there is no
            ``normal_test_dir`` (at least one image when the fraction is positive).
        category: Category name; defaults to the root folder's name.

    Raises:
        DatasetError: Listing every problem found: a folder is missing, empty, outside the root or overlaps
            another; an anomalous image has no mask or a mask no image; the test split has no normal
            image; the category name is not a plain folder name or not the one requested.
    """
    root = Path(root)
    problems = Problems(root, "Folder")
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        problems.add(f"{root}: dataset root {what}; point dataset.root at the folder holding your images.")
        problems.raise_if_any()
    real_root = root.resolve()
    name = category or real_root.name
    if not name or name.startswith(".") or any(c in name for c in "/\\") or name in (".", ".."):
        problems.add(
            f"{root}: category name {name!r} is not a plain folder name; set dataset.folder.category."
        )
    elif categories is not None and name not in ([categories] if isinstance(categories, str) else categories):
        unknown = (
            ", ".join(c for c in categories if c != name) if not isinstance(categories, str) else categories
        )
        problems.add(
            f"{root}: category {unknown!r} not found; a Folder dataset has one category, {name!r} "
            "(set dataset.folder.category to rename it)."
        )

    def folder(setting: str, value: str | None, required: bool) -> Path | None:
        if value is None:
            if required:
                problems.add(f"{root}: dataset.folder.{setting} is not set; name the folder of those images.")
            return None
        path = inside_root(value, root, real_root, f"dataset.folder.{setting}", problems)
        if path is not None and not path.is_dir():
            problems.add(
                f"{path}: missing (dataset.folder.{setting}={value!r}); create it or fix the setting."
            )
            return None
        return path

    dirs = {
        "normal_dir": folder("normal_dir", normal_dir, True),
        "abnormal_dir": folder("abnormal_dir", abnormal_dir, True),
        "normal_test_dir": folder("normal_test_dir", normal_test_dir, False),
        "mask_dir": folder("mask_dir", mask_dir, False),
    }
    _check_overlaps(dirs, problems)
    listed = {
        key: images_in(path, real_root, problems, recursive=True) if path is not None else []
        for key, path in dirs.items()
        if key != "mask_dir"
    }
    for key, path in dirs.items():
        if path is not None and key != "mask_dir" and not listed[key]:
            problems.add(f"{path}: no images (dataset.folder.{key}; {extensions_hint()}).")

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    rows: list[Row] = []
    normal = listed["normal_dir"]
    held_out: set[str] = set()
    if dirs["normal_test_dir"] is None and normal:
        count = max(1, round(normal_split * len(normal))) if normal_split > 0 else 0
        if count >= len(normal):
            problems.add(
                f"{dirs['normal_dir']}: {len(normal)} normal image(s) cannot be split into training and "
                f"normal test images (normal_split={normal_split}); add images or set dataset.folder.normal_test_dir."
            )
        order = sorted(normal, key=lambda e: hashlib.sha256(rel(e.path).encode()).hexdigest())
        held_out = {e.name for e in order[:count]}
        if count == 0:
            problems.add(
                f"{root}: the test split has no normal images (normal_split=0 and no normal_test_dir); "
                "image AUROC needs both; set dataset.folder.normal_test_dir or normal_split > 0."
            )
    for entry in normal:
        split = "test" if entry.name in held_out else "train"
        rows.append((name, split, 0, GOOD, rel(entry.path), None))
    for entry in listed["normal_test_dir"]:
        rows.append((name, "test", 0, GOOD, rel(entry.path), None))

    abnormal = dirs["abnormal_dir"]
    if abnormal is not None:
        groups: dict[str, list[Entry]] = {}
        for entry in listed["abnormal_dir"]:
            parent = str(Path(entry.name).parent)
            groups.setdefault("" if parent == "." else parent, []).append(entry)
        masks_root = dirs["mask_dir"]
        for sub, entries in groups.items():
            defect = sub or abnormal.name
            masks: dict[str, Entry] = {}
            if masks_root is not None:
                local = [Entry(Path(e.name).name, e.path, False) for e in entries]
                paired = pair_masks(
                    masks_root / sub if sub else masks_root,
                    real_root,
                    local,
                    problems,
                    anomalous=True,
                    image_dir=rel(abnormal / sub) if sub else rel(abnormal),
                    mask_name="<stem>.png",
                    subfolders_ok=True,
                )
                masks = {f"{sub}/{k}" if sub else k: v for k, v in paired.items()}
            for entry in entries:
                mask = masks.get(entry.name)
                rows.append((name, "test", 1, defect, rel(entry.path), rel(mask.path) if mask else None))
        if masks_root is not None:
            _check_mask_subfolders(masks_root, set(groups), real_root, problems)
    problems.raise_if_any()
    return to_frame(rows)


def _check_overlaps(dirs: dict[str, Path | None], problems: Problems) -> None:
    """Two settings naming the same folder (or one inside the other) would list an image twice."""
    known = [(key, path.resolve()) for key, path in dirs.items() if path is not None]
    for i, (key_a, a) in enumerate(known):
        for key_b, b in known[i + 1 :]:
            if a == b or a.is_relative_to(b) or b.is_relative_to(a):
                problems.add(
                    f"{dirs[key_a]}: dataset.folder.{key_a} and dataset.folder.{key_b} ({dirs[key_b]}) "
                    "overlap; give each kind of image its own folder."
                )


def _check_mask_subfolders(masks_root: Path, subs: set[str], real_root: Path, problems: Problems) -> None:
    """Report masks that mirror no sub-folder of abnormal_dir: they would be silently unused.

    ``pair_masks`` already checked the folders that mirror a group of anomalous images; this walks the
    rest of ``mask_dir``.
    """
    pending = [(masks_root, "")]
    while pending:
        folder, sub = pending.pop()
        for entry in scandir(folder, real_root, problems):
            child = f"{sub}/{entry.name}" if sub else entry.name
            if entry.is_dir:
                if child in subs or any(s.startswith(f"{child}/") for s in subs):
                    pending.append((entry.path, child))
                else:
                    problems.add(
                        f"{entry.path}: masks for {child!r} but abnormal_dir has no such sub-folder; "
                        "restore the images or remove the folder."
                    )
            elif sub not in subs and is_stray_image(entry):
                problems.add(f"{entry.path}: mask matches no anomalous image; rename or remove it.")
