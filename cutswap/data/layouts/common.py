"""Building blocks shared by the dataset layout readers (``mvtec``, ``btad``, ``loco``, ``visa``, ``folder``).

Every reader turns a folder on disk into the same sample table, one row per image:

=============  =====================================================================
column         meaning
=============  =====================================================================
category       category name (a plain folder name: it names the stores)
split          ``"train"``, ``"test"`` or ``"val"`` (normal validation images: MVTec LOCO's, an MVTec
               AD-style ``validation/good``; the threshold's calibration set)
label          0 normal, 1 anomalous
defect_type    ``"good"`` for normal images, otherwise the defect's name
image_path     path relative to the root, POSIX separators
mask_path      path relative to the root, POSIX separators, or ``None`` (no mask: all normal).
               For MVTec LOCO it is a *folder* of mask files that are ORed together.
=============  =====================================================================

Readers only list files, never decode pixels, so listing stays fast on large datasets; decoding and its
errors belong to ingest (``cutswap.data.images``). They collect every problem in a :class:`Problems` and
raise one ``DatasetError`` listing all of them, so a user fixes a dataset in one pass rather than one
error per run.

Two safety rules hold in every layout, because the root is the unit users copy, share and fingerprint:

- hidden entries (``.DS_Store``, ``.git``) and archive leftovers (``__MACOSX``) are ignored;
- nothing may be read from outside the root: a symlink resolving outside it, or a path from a CSV or a
  setting that is absolute or climbs out with ``..``, is reported instead of followed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from cutswap.errors import DatasetError

__all__ = [
    "COLUMNS",
    "GOOD",
    "IMAGE_EXTENSIONS",
    "OTHER_IMAGE_EXTENSIONS",
    "Entry",
    "Problems",
    "extensions_hint",
    "images_in",
    "inside_root",
    "is_stray_image",
    "pair_masks",
    "scandir",
    "select_categories",
    "to_frame",
]

COLUMNS = ["category", "split", "label", "defect_type", "image_path", "mask_path"]
GOOD = "good"
"""``defect_type`` of every normal image, whatever the layout calls its normal folder (``ok``, ``Normal``)."""

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".bmp"})
"""Accepted extensions, compared in lower case (so ``.PNG`` and ``.JPG`` are accepted too)."""

OTHER_IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpe", ".tif", ".tiff", ".webp", ".gif", ".jp2", ".ppm"})
"""Image formats that are reported rather than ignored, so that images are never dropped silently."""

Row = tuple[str, str, int, str, str, str | None]


@dataclass
class Problems:
    """Collects every problem so the user fixes the dataset in one pass instead of one error per run."""

    root: Path
    layout: str = "MVTec AD"
    items: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        count = len(self.items)
        header = f"{self.layout} dataset at {self.root}: {count} problem{'s' if count > 1 else ''} found:"
        raise DatasetError("\n".join([header, *(f"  - {item}" for item in self.items)]))


@dataclass
class Entry:
    """A directory entry under the root, with the facts the scan needs (from one ``scandir`` call)."""

    name: str
    path: Path
    is_dir: bool


def scandir(folder: Path, real_root: Path, problems: Problems) -> list[Entry]:
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
        try:
            item.name.encode("utf-8")  # undecodable bytes arrive as lone surrogates; stores keep UTF-8 names
        except UnicodeEncodeError:
            shown = os.fsencode(item.name).decode("utf-8", "backslashreplace")
            problems.add(f"{folder / shown}: file name is not UTF-8; rename it (e.g. convmv -t utf-8).")
            continue
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
        entries.append(Entry(item.name, path, is_dir))
    return entries


def images_in(
    folder: Path, real_root: Path, problems: Problems, recursive: bool = False, subfolders_ok: bool = False
) -> list[Entry]:
    """Image files of ``folder``; reports unsupported image formats, and sub-folders unless allowed.

    With ``recursive``, images of sub-folders are listed too (their ``name`` is then the path relative to
    ``folder``, e.g. ``scratch/000.png``), sorted by that relative path. With ``subfolders_ok`` sub-folders
    are skipped silently (a caller that scans them on its own).
    """
    found: list[Entry] = []
    for entry in scandir(folder, real_root, problems):
        suffix = Path(entry.name).suffix.lower()
        if entry.is_dir:
            if recursive:
                # A link back to a folder being walked would be followed until the path is too long.
                if entry.path.is_symlink() and folder.resolve().is_relative_to(entry.path.resolve()):
                    problems.add(
                        f"{entry.path}: symlink loop (it points back to {entry.path.resolve()}, which "
                        "contains it); remove the link."
                    )
                    continue
                for sub in images_in(entry.path, real_root, problems, recursive=True):
                    found.append(Entry(f"{entry.name}/{sub.name}", sub.path, False))
            elif not subfolders_ok:
                problems.add(f"{entry.path}: unexpected folder; images must sit directly in {folder.name}/.")
        elif suffix in IMAGE_EXTENSIONS:
            found.append(entry)
        elif suffix in OTHER_IMAGE_EXTENSIONS:
            problems.add(f"{entry.path}: unsupported image format; {extensions_hint()}.")
    return sorted(found, key=lambda e: e.name)


def is_stray_image(entry: Entry) -> bool:
    suffix = Path(entry.name).suffix.lower()
    return not entry.is_dir and (suffix in IMAGE_EXTENSIONS or suffix in OTHER_IMAGE_EXTENSIONS)


def extensions_hint() -> str:
    return "accepted extensions: " + ", ".join(sorted(IMAGE_EXTENSIONS)) + " (any letter case)"


def inside_root(relative: str, root: Path, real_root: Path, what: str, problems: Problems) -> Path | None:
    """Resolve a path given as text (a CSV cell, a setting) under the root, refusing any escape.

    Returns:
        The path under ``root`` (not resolved, so messages show what the user wrote), or ``None`` after
        reporting a problem: the path is empty, absolute, climbs out with ``..``, or resolves (through a
        symlink) outside the root.
    """
    text = relative.strip().replace("\\", "/")
    posix = PurePosixPath(text)
    if not text:
        problems.add(f"{what}: empty path; give a path relative to the dataset root {root}.")
        return None
    if posix.is_absolute() or Path(text).is_absolute() or (len(text) > 1 and text[1] == ":"):
        problems.add(f"{what}: {text!r} is an absolute path; give it relative to the dataset root {root}.")
        return None
    if ".." in posix.parts:
        problems.add(f"{what}: {text!r} climbs out of the dataset root with '..'; keep paths inside {root}.")
        return None
    path = root / posix
    try:
        target = path.resolve()
    except (OSError, RuntimeError):
        problems.add(f"{what}: {path} cannot be resolved (a symlink loop?); fix or remove it.")
        return None
    if not target.is_relative_to(real_root):
        problems.add(
            f"{what}: {path} is a symlink pointing outside the dataset root (to {target}); copy the file "
            "into the dataset instead."
        )
        return None
    return path


def select_categories(
    available: list[str], requested: Iterable[str] | str | None, root: Path, problems: Problems
) -> list[str]:
    """The requested categories that exist, reporting unknown ones (with the available names)."""
    if requested is None:
        return available
    if isinstance(requested, str):
        requested = [requested]
    requested = list(dict.fromkeys(requested))
    if not requested:
        problems.add(f"{root}: the list of categories to scan is empty; available: {', '.join(available)}.")
        problems.raise_if_any()
    # A category hidden by an escaping symlink was already reported as such; do not call it unknown too.
    for name in requested:
        if name not in available and not (root / name).is_symlink():
            problems.add(
                f"{root / name}: category {name!r} not found; available categories: {', '.join(available)}."
            )
    return [name for name in requested if name in available]


def pair_masks(
    gt_dir: Path,
    real_root: Path,
    images: list[Entry],
    problems: Problems,
    anomalous: bool,
    image_dir: str,
    mask_name: str = "<stem>_mask.png",
    subfolders_ok: bool = False,
) -> dict[str, Entry]:
    """Pair each image with its mask in ``gt_dir``, as anomalib does, with exact names winning.

    A mask pairs with an image when its stem is ``<stem>_mask`` or ``<stem>`` (exact), or else, among the
    masks no exact match took, when the image stem is contained in the mask stem (anomalib's rule). Exact
    matches win so that ``1.png`` pairs with ``1_mask.png`` and not with ``11_mask.png``.

    Args:
        gt_dir: Folder holding the masks of ``images``.
        anomalous: Whether every image needs a mask (normal images may have none: "all normal").
        image_dir: How messages name the images' folder (``test/broken``).
        mask_name: How messages name the mask expected for an image (``<stem>`` is replaced).
        subfolders_ok: Sub-folders of ``gt_dir`` hold other images' masks (Folder layout); skip them.

    Returns:
        Image name -> mask entry, for the images that have a mask.
    """
    if not gt_dir.is_dir():
        if anomalous and images:
            count = f"{len(images)} image" + ("s" if len(images) > 1 else "")
            problems.add(
                f"{gt_dir}: missing: no masks for the {count} in {image_dir}; add one {mask_name} per image."
            )
        return {}
    masks = images_in(gt_dir, real_root, problems, subfolders_ok=subfolders_ok)
    if not images:
        for mask in masks:
            problems.add(f"{mask.path}: mask matches no image ({image_dir} is empty); remove it.")
        return {}

    paired: dict[str, Entry] = {}
    claimed: dict[str, str] = {}  # mask name -> image name
    unresolved = _pair_exact(images, masks, paired, claimed, problems)
    free = [m for m in masks if m.name not in claimed]
    for image in unresolved:
        _pair_contained(image, free, paired, claimed, problems, gt_dir, anomalous, mask_name)
    example = mask_name.replace("<stem>", "000")
    for mask in masks:
        if mask.name not in claimed:
            problems.add(
                f"{mask.path}: mask matches no image in {image_dir} (the image stem must be contained in "
                f"the mask stem, e.g. 000.png <-> {example}); rename or remove it."
            )
    return paired


def _pair_exact(
    images: list[Entry],
    masks: list[Entry],
    paired: dict[str, Entry],
    claimed: dict[str, str],
    problems: Problems,
) -> list[Entry]:
    """Pair the images whose mask stem is ``<stem>_mask`` or ``<stem>``; returns the images left unpaired."""
    by_stem: dict[str, list[Entry]] = {}
    for mask in masks:
        by_stem.setdefault(Path(mask.name).stem, []).append(mask)
    unresolved: list[Entry] = []
    for image in images:
        stem = Path(image.name).stem
        exact = by_stem.get(f"{stem}_mask", []) + by_stem.get(stem, [])
        if len(exact) == 1:
            _claim(
                image,
                exact[0],
                paired,
                claimed,
                problems,
                " (same stem); rename or remove one of the images.",
            )
        elif len(exact) > 1:
            names = ", ".join(m.name for m in exact)
            problems.add(f"{image.path}: several masks match it ({names}); keep one.")
            for mask in exact:
                claimed[mask.name] = image.name
        else:
            unresolved.append(image)
    return unresolved


def _claim(
    image: Entry,
    mask: Entry,
    paired: dict[str, Entry],
    claimed: dict[str, str],
    problems: Problems,
    clash: str,
) -> None:
    """Pair ``image`` with ``mask``, unless another image took it already (``clash`` says what to do)."""
    if mask.name in claimed:
        problems.add(f"{mask.path}: mask matches both {claimed[mask.name]} and {image.name}{clash}")
        return
    paired[image.name] = mask
    claimed[mask.name] = image.name


def _pair_contained(
    image: Entry,
    free: list[Entry],
    paired: dict[str, Entry],
    claimed: dict[str, str],
    problems: Problems,
    gt_dir: Path,
    anomalous: bool,
    mask_name: str,
) -> None:
    """Pair an image with the one free mask whose stem contains its stem (anomalib's rule)."""
    stem = Path(image.name).stem
    candidates = [m for m in free if stem in Path(m.name).stem]
    expected = mask_name.replace("<stem>", stem)
    if len(candidates) == 1:
        _claim(
            image, candidates[0], paired, claimed, problems, f"; rename it to {mask_name} of the right image."
        )
    elif len(candidates) > 1:
        names = ", ".join(m.name for m in candidates)
        problems.add(f"{image.path}: several masks contain its name ({names}); name its mask {expected}.")
        for mask in candidates:
            claimed.setdefault(mask.name, image.name)
    elif anomalous:
        problems.add(
            f"{image.path}: anomalous image has no mask; add {gt_dir / expected} "
            "(the image stem must be contained in the mask stem)."
        )


def to_frame(rows: list[Row]) -> pd.DataFrame:
    """The sample table, typed and sorted by (category, split, defect_type, image_path).

    Sorting makes downstream keys and sample indices reproducible across filesystems, whose listing order
    differs.
    """
    frame = pd.DataFrame.from_records(rows, columns=COLUMNS)
    frame = frame.astype({"category": str, "split": str, "label": "int64", "defect_type": str})
    frame["image_path"] = frame["image_path"].astype(str)
    frame["mask_path"] = frame["mask_path"].astype(object).where(frame["mask_path"].notna(), None)
    frame = frame.sort_values(["category", "split", "defect_type", "image_path"], kind="mergesort")
    return frame.reset_index(drop=True)
