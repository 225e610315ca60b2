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

from cutswap.data.layouts.common import (
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
    name = _category_name(root, category or real_root.name, categories, problems)
    settings = {"normal_dir": normal_dir, "abnormal_dir": abnormal_dir}
    settings |= {"normal_test_dir": normal_test_dir, "mask_dir": mask_dir}
    dirs = {key: _folder(root, real_root, key, value, problems) for key, value in settings.items()}
    _check_overlaps(dirs, problems)
    listed = _listed_images(dirs, real_root, problems)
    held_out = _held_out(root, dirs, listed["normal_dir"], normal_split, problems)
    rows = _normal_rows(root, name, listed, held_out)
    if dirs["abnormal_dir"] is not None:
        rows += _abnormal_rows(root, real_root, name, dirs, listed["abnormal_dir"], problems)
    problems.raise_if_any()
    return to_frame(rows)


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _listed_images(
    dirs: dict[str, Path | None], real_root: Path, problems: Problems
) -> dict[str, list[Entry]]:
    """The images of every image folder (not ``mask_dir``, whose files are paired later), searched
    recursively; a folder that is set but holds no image is reported, an unset one lists none."""
    listed = {
        key: images_in(path, real_root, problems, recursive=True) if path is not None else []
        for key, path in dirs.items()
        if key != "mask_dir"
    }
    for key, path in dirs.items():
        if path is not None and key != "mask_dir" and not listed[key]:
            problems.add(f"{path}: no images (dataset.folder.{key}; {extensions_hint()}).")
    return listed


def _normal_rows(root: Path, name: str, listed: dict[str, list[Entry]], held_out: set[str]) -> list[Row]:
    """The normal images: normal_dir's in training but for those ``held_out`` for the test split, then
    normal_test_dir's in the test split."""
    rows: list[Row] = []
    for entry in listed["normal_dir"]:
        split = "test" if entry.name in held_out else "train"
        rows.append((name, split, 0, GOOD, _rel(root, entry.path), None))
    for entry in listed["normal_test_dir"]:
        rows.append((name, "test", 0, GOOD, _rel(root, entry.path), None))
    return rows


def _category_name(root: Path, name: str, categories: list[str] | str | None, problems: Problems) -> str:
    """The dataset's one category: a plain folder name, and the one asked for, if any."""
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
    return name


def _folder(root: Path, real_root: Path, setting: str, value: str | None, problems: Problems) -> Path | None:
    """The folder a setting names, inside the root and present (normal_dir and abnormal_dir required)."""
    if value is None:
        if setting in ("normal_dir", "abnormal_dir"):
            problems.add(f"{root}: dataset.folder.{setting} is not set; name the folder of those images.")
        return None
    path = inside_root(value, root, real_root, f"dataset.folder.{setting}", problems)
    if path is not None and not path.is_dir():
        problems.add(f"{path}: missing (dataset.folder.{setting}={value!r}); create it or fix the setting.")
        return None
    return path


def _held_out(
    root: Path, dirs: dict[str, Path | None], normal: list[Entry], normal_split: float, problems: Problems
) -> set[str]:
    """The normal images held out as normal test images when there is no normal_test_dir (a fixed
    choice: the first ``normal_split`` of them by the hash of their path)."""
    if dirs["normal_test_dir"] is not None or not normal:
        return set()
    count = max(1, round(normal_split * len(normal))) if normal_split > 0 else 0
    if count >= len(normal):
        problems.add(
            f"{dirs['normal_dir']}: {len(normal)} normal image(s) cannot be split into training and "
            f"normal test images (normal_split={normal_split}); add images or set "
            "dataset.folder.normal_test_dir."
        )
    order = sorted(normal, key=lambda e: hashlib.sha256(_rel(root, e.path).encode()).hexdigest())
    if count == 0:
        problems.add(
            f"{root}: the test split has no normal images (normal_split=0 and no normal_test_dir); "
            "image AUROC needs both; set dataset.folder.normal_test_dir or normal_split > 0."
        )
    return {e.name for e in order[:count]}


def _abnormal_rows(
    root: Path,
    real_root: Path,
    name: str,
    dirs: dict[str, Path | None],
    listed: list[Entry],
    problems: Problems,
) -> list[Row]:
    """The anomalous images, one defect per sub-folder of abnormal_dir, with their masks."""
    abnormal, masks_root = dirs["abnormal_dir"], dirs["mask_dir"]
    groups: dict[str, list[Entry]] = {}
    for entry in listed:
        parent = str(Path(entry.name).parent)
        groups.setdefault("" if parent == "." else parent, []).append(entry)
    rows: list[Row] = []
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
                image_dir=_rel(root, abnormal / sub) if sub else _rel(root, abnormal),
                mask_name="<stem>.png",
                subfolders_ok=True,
            )
            masks = {f"{sub}/{k}" if sub else k: v for k, v in paired.items()}
        for entry in entries:
            mask = masks.get(entry.name)
            rows.append(
                (name, "test", 1, defect, _rel(root, entry.path), _rel(root, mask.path) if mask else None)
            )
    if masks_root is not None:
        _check_mask_subfolders(masks_root, set(groups), real_root, problems)
    return rows


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
