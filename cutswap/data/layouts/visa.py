"""Read the raw VisA release through its split file into the common sample table.

Layout, as the archive ``VisA_20220922.tar`` unpacks::

    <root>/
      split_csv/1cls.csv                       # the split: header "object,split,label,image,mask"
      candle/ capsules/ ... pipe_fryum/        # 12 categories
        Data/Images/Normal/*.JPG
        Data/Images/Anomaly/*.JPG
        Data/Masks/Anomaly/*.png               # values are not 0/255: binarised with != 0 at ingest
        image_anno.csv                         # optional here: "image,label,mask", label = defect name

``1cls.csv`` is the "1-class" protocol of amazon-science/spot-diff, the split every VisA table uses. Each
row reads ``candle,train,normal,candle/Data/Images/Normal/0000.JPG,`` or
``candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png``; paths are
relative to the root. Unlike anomalib, nothing is copied into an MVTec-shaped tree: the table points at
the raw files, and ingest binarises the masks as it reads them.

The defect type of an anomalous image is its label in ``<category>/image_anno.csv`` when that file lists
it (``"chunk of wax missing"``), else ``"anomaly"``, so reports can break scores down by defect.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cutswap.data.layouts.common import (
    GOOD,
    IMAGE_EXTENSIONS,
    Problems,
    Row,
    extensions_hint,
    inside_root,
    select_categories,
    to_frame,
)

__all__ = ["SPLIT_FILE", "scan_visa"]

SPLIT_FILE = "split_csv/1cls.csv"
_HEADER = ["object", "split", "label", "image", "mask"]
_LABELS = {"normal": 0, "anomaly": 1}
_SPLITS = ("train", "test")


def scan_visa(root: Path, categories: list[str] | None = None) -> pd.DataFrame:
    """List the samples of a raw VisA release following ``split_csv/1cls.csv``, and check them.

    Raises:
        DatasetError: Listing every problem found, each with the CSV line: the split file is missing or
            has another header; a row has too few cells, an unknown split or label, a path that escapes
            the root or names a missing file; an anomalous image has no mask; an image is listed twice; a
            category is unknown or lacks training or test images.
    """
    root = Path(root)
    problems = Problems(root, "VisA")
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        problems.add(f"{root}: dataset root {what}; pass the folder holding split_csv/ and the categories.")
        problems.raise_if_any()
    split_file = root / SPLIT_FILE
    lines = _split_lines(root, split_file, problems)
    reader = _Rows(root, root.resolve(), split_file, problems)
    for number, cells in enumerate(lines[1:], start=2):
        if any(cell.strip() for cell in cells):
            reader.add(number, cells)
    available = sorted(reader.counts)
    if not available and not problems.items:
        problems.add(f"{split_file}: lists no images; restore it from the release.")
    wanted = select_categories(available, categories, root, problems)
    for category in wanted:
        for split in _SPLITS:
            if reader.counts[category][split] == 0:
                problems.add(f"{split_file}: category {category!r} has no {split} images; restore its rows.")
    problems.raise_if_any()
    return to_frame([row for row in reader.rows if row[0] in wanted])


def _split_lines(root: Path, split_file: Path, problems: Problems) -> list[list[str]]:
    """The split file's rows, its header checked; every problem raised at once."""
    if not split_file.is_file():
        hint = ""
        if (root.parent / SPLIT_FILE).is_file():
            hint = f" {root} looks like a single category; pass its parent folder as the root."
        problems.add(
            f"{split_file}: missing; VisA is read through the split file of its release "
            f"(columns {','.join(_HEADER)}); restore it from VisA_20220922.tar.{hint}"
        )
        problems.raise_if_any()
    try:
        with split_file.open(newline="", encoding="utf-8-sig") as handle:
            lines = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.add(f"{split_file}: cannot be read ({exc}); restore it from the release.")
        problems.raise_if_any()
    if not lines or [cell.strip().lower() for cell in lines[0]] != _HEADER:
        found = ",".join(lines[0]) if lines else "an empty file"
        problems.add(f"{split_file}, line 1: expected the header {','.join(_HEADER)}, found {found!r}.")
        problems.raise_if_any()
    return lines


@dataclass
class _Rows:
    """The sample rows of the split file, one line at a time, with what each line is checked against."""

    root: Path
    real_root: Path
    split_file: Path
    problems: Problems
    rows: list[Row] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)  # image -> the line that listed it
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # category -> split -> images
    annotations: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, number: int, cells: list[str]) -> None:
        where = f"{self.split_file}, line {number}"
        fields = self._fields(where, cells)
        if fields is None:
            return
        category, split, label, image, mask = fields
        image_rel = image.relative_to(self.root).as_posix()
        if image_rel in self.seen:
            self.problems.add(
                f"{where}: {image} is already listed on line {self.seen[image_rel]}; remove one row."
            )
            return
        self.seen[image_rel] = number
        if not self._files_ok(where, split, label, image, mask):
            return
        if category not in self.annotations:
            self.annotations[category] = _read_annotations(self.root, category, self.problems)
        defect = GOOD if not label else self.annotations[category].get(image_rel, "anomaly")
        mask_rel = mask.relative_to(self.root).as_posix() if mask is not None else None
        self.rows.append((category, split, label, defect, image_rel, mask_rel))
        self.counts[category][split] += 1

    def _fields(self, where: str, cells: list[str]) -> tuple[str, str, int, Path, Path | None] | None:
        """(category, split, label, image, mask) of a line, each checked; None when one is wrong."""
        if len(cells) < 4:
            self.problems.add(f"{where}: {len(cells)} cells, expected {len(_HEADER)} ({','.join(_HEADER)}).")
            return None
        category, split, label_name, image_text = (c.strip() for c in cells[:4])
        mask_text = cells[4].strip() if len(cells) > 4 else ""
        named = self._names_ok(where, category, split, label_name)
        if named:
            self.counts.setdefault(category, {"train": 0, "test": 0})
        paths = self._paths(where, image_text, mask_text)
        if paths is None or not named:
            return None
        return category, split, _LABELS[label_name], *paths

    def _names_ok(self, where: str, category: str, split: str, label_name: str) -> bool:
        """Whether the line's object, split and label are valid, each wrong one reported (all of them, so
        one pass over the file shows every fix)."""
        ok = True
        if not category or category.startswith(".") or "/" in category or "\\" in category:
            self.problems.add(f"{where}: object {category!r} is not a plain category name.")
            ok = False
        if split not in _SPLITS:
            self.problems.add(f"{where}: split {split!r} is not one of {', '.join(_SPLITS)}.")
            ok = False
        if label_name not in _LABELS:
            self.problems.add(f"{where}: label {label_name!r} is not one of {', '.join(_LABELS)}.")
            ok = False
        return ok

    def _paths(self, where: str, image_text: str, mask_text: str) -> tuple[Path, Path | None] | None:
        """The line's image and mask (None where its cell is empty), both inside the root; None when a path
        given escapes it (``inside_root`` reports it; both are checked, so both are reported)."""
        image = inside_root(image_text, self.root, self.real_root, f"{where}: image", self.problems)
        mask = (
            inside_root(mask_text, self.root, self.real_root, f"{where}: mask", self.problems)
            if mask_text
            else None
        )
        if image is None or (mask_text and mask is None):
            return None
        return image, mask

    def _files_ok(self, where: str, split: str, label: int, image: Path, mask: Path | None) -> bool:
        """The image and mask exist and fit the label (a training image is reported, not dropped)."""
        if split == "train" and label:
            self.problems.add(
                f"{where}: anomalous image {image} in the train split; training images must be normal."
            )
        if not _check_file(image, f"{where}: image", self.problems):
            return False
        if label and mask is None:
            self.problems.add(f"{where}: anomalous image {image} has no mask; fill the mask column.")
            return False
        return mask is None or _check_file(mask, f"{where}: mask", self.problems)


def _check_file(path: Path, what: str, problems: Problems) -> bool:
    if not path.is_file():
        problems.add(f"{what}: {path} does not exist; restore it or remove the row.")
        return False
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        problems.add(f"{what}: {path} has an unsupported format; {extensions_hint()}.")
        return False
    return True


def _read_annotations(root: Path, category: str, problems: Problems) -> dict[str, str]:
    """Relative image path -> defect name, from ``<category>/image_anno.csv`` when present."""
    path = root / category / "image_anno.csv"
    if not path.is_file():
        return {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            records = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.add(f"{path}: cannot be read ({exc}); restore it or delete it (defect names are optional).")
        return {}
    out = {}
    for record in records:
        image, label = (record.get("image") or "").strip(), (record.get("label") or "").strip()
        if image and label and label != "normal":
            image = image.replace("\\", "/")
            # The release writes paths from the root; accept paths from the category folder too.
            out[image if image.startswith(f"{category}/") else f"{category}/{image}"] = label
    return out
