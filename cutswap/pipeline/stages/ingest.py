"""Ingest: one category of a dataset on disk -> one store of images at the working size.

Store layout (``storage/ingest/<category>-<key>/``)::

    images      uint8 (N, S, S, 3)   every kept sample, in the order of ``attrs["samples"]``
    masks       bool  (N, S, S)      ground truth (all False for normal images)
    attrs       samples:    [{split, label, defect_type, image_path, mask_path}]   (paths relative to root)
                category, dataset, root, fingerprint (of the source files)
                skipped:    [{image_path, problem}]   samples left out by dataset.lenient (else empty)
                leakage:    [{train, test, same_bytes}]   a training image whose pixels (at the working
                            size) equal a test image's: the model would be scored on what it trained on
                duplicates: {count, groups: [{split, paths}]}   byte-identical files within a split;
                            count = files beyond the first of each group

The key covers the dataset settings that change the store (layout, working size, ``lenient``) and a
fingerprint of the source: the sample table itself (so a changed split or label re-ingests) and, for
every image and mask file, its path with its size and modification time (``dataset.fingerprint: stat``)
or a hash of its bytes (``content``; the default for the embedded datasets and under a URL storage root,
whose stores hosts with their own copies of the dataset share). An edited dataset is therefore
re-ingested and every stage after it recomputes, while an untouched one is reused.

Every image and mask is decoded before anything is written, and every problem of the category is
collected (unreadable, empty, truncated or non-image file, decompression bomb, a mask whose size differs
from its image's) into one ``DatasetError`` that names each file: nothing is published then. With
``dataset.lenient`` those samples are skipped instead and listed in ``skipped``; the category must still
have training and test images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cutswap import roots
from cutswap.data.datasets import BUILT_IN
from cutswap.data.images import DECODE_THREADS, load_mask, load_rgb
from cutswap.data.layouts.common import IMAGE_EXTENSIONS
from cutswap.errors import DatasetError
from cutswap.pipeline.readers import SAMPLE_COLUMNS
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stores import StoreRef, build_store, write_array

log = logging.getLogger(__name__)


def mask_files(root: Path, mask_path: str | None) -> list[str]:
    """The mask files behind a table's ``mask_path``: none, the file itself, or (MVTec LOCO) the image
    files of the folder it names, sorted, relative to ``root``."""
    if not isinstance(mask_path, str):
        return []
    folder = root / mask_path
    if not folder.is_dir():
        return [mask_path]
    names = sorted(
        n for n in os.listdir(folder) if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_EXTENSIONS
    )
    return [f"{mask_path}/{n}" for n in names]


def dataset_fingerprint(root: Path, table: pd.DataFrame, how: str = "stat") -> str:
    """Hash of a category's sample table and of the source files it refers to.

    Args:
        how: ``stat`` hashes each file's relative path, size and modification time (cheap, and what tools
            like make and rsync trust); ``content`` hashes each file's bytes (survives copies and
            checkouts that reset times, but reads the whole dataset on every run).

    A file that cannot be read hashes as its error, so the key still changes when it is fixed; ingest
    then reports (or, when lenient, skips) it.
    """
    if how not in ("stat", "content"):
        raise ValueError(f"fingerprint must be 'stat' or 'content', got {how!r}")
    h = hashlib.sha256(f"{how}\n".encode())
    rows = table[list(SAMPLE_COLUMNS)].astype(object).where(table[list(SAMPLE_COLUMNS)].notna(), None)
    for record in sorted(json.dumps(r, sort_keys=True, default=str) for r in rows.to_dict(orient="records")):
        h.update(record.encode() + b"\n")
    files = sorted({*table["image_path"], *(f for m in table["mask_path"] for f in mask_files(root, m))})

    def one(rel: str) -> str:
        try:
            if how == "content":
                return f"{rel}\0{_file_digest(root / rel)}"
            st = (root / rel).stat()
            return f"{rel}\0{st.st_size}\0{st.st_mtime_ns}"
        except OSError as exc:
            return f"{rel}\0error {exc.errno}"

    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        for line in pool.map(one, files):
            h.update(line.encode() + b"\n")
    return h.hexdigest()[:16]


def _fingerprint_kind(dataset: str, setting: str, storage_root: str) -> str:
    """``dataset.fingerprint``'s ``auto``: ``content`` where file times cannot recognise the same files,
    ``stat`` elsewhere.

    File times differ between copies: an embedded dataset rebuilt byte-identical by a fresh clone, and any
    dataset under a URL storage root, where a bucket's stores are shared by every host that runs with it
    (each with its own copy of the dataset, in its own folder). Hashing the bytes costs about a second per
    600 MB on a run that reuses everything (a few ms with ``stat``), so local roots keep ``stat``.
    """
    if setting != "auto":
        return setting
    if dataset in BUILT_IN or not roots.is_local(roots.normalize(storage_root)):
        return "content"
    return "stat"


def ingest_category(
    settings: Settings, root: Path, category: str, table: pd.DataFrame, mode: str = "run"
) -> tuple[StoreRef, bool]:
    """Read, check, resize and store every image and mask of one category.

    Raises:
        DatasetError: Listing every file of the category that cannot be used (nothing is published), or,
            when lenient, saying that skipping left the category without training or test images.
    """
    cfg = settings.dataset
    table = table[table["category"] == category].reset_index(drop=True)
    size = cfg.image_size
    keyed = {
        "dataset": cfg.name,
        "category": category,
        "image_size": size,
        "lenient": cfg.lenient,
        "fingerprint": dataset_fingerprint(
            root, table, _fingerprint_kind(cfg.name, cfg.fingerprint, str(settings.storage_root))
        ),
    }

    def write(group):
        loaded = read_category(root, category, table, size, cfg.lenient)
        write_array(group, "images", loaded.images)
        write_array(group, "masks", loaded.masks)
        kept = loaded.table[list(SAMPLE_COLUMNS)]
        group.attrs.update(
            {
                "samples": kept.astype(object).where(kept.notna(), None).to_dict(orient="records"),
                "skipped": loaded.skipped,
                "leakage": loaded.leakage,
                "duplicates": loaded.duplicates,
            }
        )

    extra = {
        "category": category,
        "dataset": cfg.name,
        "root": str(root),
        "fingerprint": keyed["fingerprint"],
    }
    return build_store(settings.storage_root, "ingest", category, keyed, {}, write, mode, extra)


@dataclass
class Loaded:
    """What ``read_category`` decoded: the kept samples and what it found out about the rest."""

    table: pd.DataFrame
    images: np.ndarray
    masks: np.ndarray
    skipped: list[dict] = field(default_factory=list)
    leakage: list[dict] = field(default_factory=list)
    duplicates: dict = field(default_factory=dict)


@dataclass
class _Sample:
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    digest: str = ""
    problems: list[str] = field(default_factory=list)


def read_category(root: Path, category: str, table: pd.DataFrame, size: int, lenient: bool = False) -> Loaded:
    """Decode every image and mask of a category at ``size``, checking each, before anything is written.

    Raises:
        DatasetError: Listing every problem of the category (strict), or when skipping the unusable
            samples leaves no training or no test image (lenient).
    """
    table = table.reset_index(drop=True)
    samples = _read_samples(root, table, size)
    bad = [i for i, s in enumerate(samples) if s.problems]
    if bad and not lenient:
        raise _problems_error(root, category, [p for i in bad for p in samples[i].problems])
    skipped = _skipped(category, table, samples, bad)
    keep = [i for i in range(len(samples)) if not samples[i].problems]
    kept = table.iloc[keep].reset_index(drop=True)
    _check_splits_left(root, category, kept, skipped)
    images, masks, digests = _stack_kept(samples, keep)
    leakage = _leakage(kept, images, digests)
    _warn_leakage(category, leakage)
    duplicates = _duplicates(kept, digests)
    _warn_duplicates(category, duplicates)
    return Loaded(kept, images, masks, skipped, leakage, duplicates)


def _read_samples(root: Path, table: pd.DataFrame, size: int) -> list[_Sample]:
    """Every row's image and mask(s), decoded on ``DECODE_THREADS`` threads, in the table's order."""
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        return list(
            pool.map(
                lambda row: _read_sample(root, row[0], row[1], size),
                zip(table["image_path"], table["mask_path"], strict=True),
            )
        )


def _problems_error(root: Path, category: str, items: list[str]) -> DatasetError:
    """Strict mode's one error for the whole category: every problem, each naming its file, so that one
    pass over the dataset shows all there is to fix."""
    return DatasetError(
        "\n".join(
            [
                f"ingest of category {category!r} from {root}: {len(items)} problem"
                f"{'s' if len(items) > 1 else ''} found; nothing was written. Fix or remove these files, "
                "or set dataset.lenient=true to skip unreadable ones:",
                *(f"  - {item}" for item in items),
            ]
        )
    )


def _skipped(category: str, table: pd.DataFrame, samples: list[_Sample], bad: list[int]) -> list[dict]:
    """Lenient mode's record of the samples left out (the store's ``skipped``), each also logged."""
    skipped = [
        {"image_path": table.at[i, "image_path"], "problem": "; ".join(samples[i].problems)} for i in bad
    ]
    for entry in skipped:
        log.warning("ingest %s: skipped %s: %s", category, entry["image_path"], entry["problem"])
    return skipped


def _check_splits_left(root: Path, category: str, kept: pd.DataFrame, skipped: list[dict]) -> None:
    """Skipping must leave training and test images: a category without either cannot be benchmarked."""
    for split in ("train", "test"):
        if not (kept["split"] == split).any():
            raise DatasetError(
                f"ingest of category {category!r} from {root}: no usable {split} image left after skipping "
                f"{len(skipped)} unreadable sample(s) ({', '.join(e['image_path'] for e in skipped[:5])}"
                f"{', ...' if len(skipped) > 5 else ''}); fix those files."
            )


def _stack_kept(samples: list[_Sample], keep: list[int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The kept samples' images ``(N, S, S, 3)`` and masks ``(N, S, S)`` stacked, and their file digests."""
    images = np.stack([samples[i].image for i in keep])
    masks = np.stack([samples[i].mask for i in keep])
    return images, masks, [samples[i].digest for i in keep]


def _warn_leakage(category: str, leakage: list[dict]) -> None:
    """Logs the first 20 leaked (train, test) pairs and how many more the store's attrs list."""
    for pair in leakage[:20]:
        log.warning(
            "ingest %s: test image %s has the same pixels as training image %s%s; it is scored on what the "
            "model trained on",
            category,
            pair["test"],
            pair["train"],
            " (byte-identical file)" if pair["same_bytes"] else "",
        )
    if len(leakage) > 20:
        log.warning(
            "ingest %s: %d more leaked pairs, listed in the store's attrs", category, len(leakage) - 20
        )


def _warn_duplicates(category: str, duplicates: dict) -> None:
    """Logs byte-identical files within a split (with one example group), when there are any."""
    if duplicates["count"]:
        log.warning(
            "ingest %s: %d byte-identical duplicate file(s) within a split, e.g. %s",
            category,
            duplicates["count"],
            " = ".join(duplicates["groups"][0]["paths"]),
        )


def _read_sample(root: Path, image_rel: str, mask_rel: str | None, size: int) -> _Sample:
    """Decode one image and its mask(s), turning every failure into a problem naming the file."""
    sample = _Sample()
    image_path = root / image_rel
    try:
        sample.image, image_size = load_rgb(image_path, size)
    except DatasetError as exc:
        sample.problems.append(str(exc))
        image_size = None
    else:
        try:
            sample.digest = _file_digest(image_path)
        except OSError as exc:
            sample.problems.append(
                f"{image_path}: cannot be read ({exc.strerror or exc}); check its permissions."
            )
    files = mask_files(root, mask_rel)
    if isinstance(mask_rel, str) and not files:
        sample.problems.append(f"{root / mask_rel}: mask folder holds no mask file; add its masks.")
    mask = np.zeros((size, size), bool)
    for rel in files:
        try:
            part, mask_size = load_mask(root / rel, size)
        except DatasetError as exc:
            sample.problems.append(str(exc))
            continue
        if image_size is not None and mask_size != image_size:
            sample.problems.append(
                f"{root / rel}: mask is {mask_size[1]}x{mask_size[0]} px but its image {image_path} is "
                f"{image_size[1]}x{image_size[0]} px; re-export the mask at the image's size."
            )
            continue
        mask |= part
    sample.mask = mask
    return sample


def _file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _leakage(table: pd.DataFrame, images: np.ndarray, digests: list[str]) -> list[dict]:
    """Pairs (train, test) whose images are identical at the working size.

    Equal pixels at the size the model sees is what matters for leakage: it catches byte-identical
    copies and lossless re-encodings (a PNG saved again as BMP) alike.
    """
    by_pixels: dict[str, list[int]] = {}
    splits = table["split"].to_numpy()
    for i in np.flatnonzero(splits == "train"):
        by_pixels.setdefault(hashlib.sha256(images[i].tobytes()).hexdigest(), []).append(int(i))
    pairs = []
    for j in np.flatnonzero(splits == "test"):
        for i in by_pixels.get(hashlib.sha256(images[j].tobytes()).hexdigest(), []):
            pairs.append(
                {
                    "train": table.at[i, "image_path"],
                    "test": table.at[int(j), "image_path"],
                    "same_bytes": digests[i] == digests[int(j)],
                }
            )
    return pairs


def _duplicates(table: pd.DataFrame, digests: list[str]) -> dict:
    """Groups of byte-identical files within each split; ``count`` = files beyond each group's first."""
    groups: dict[tuple[str, str], list[str]] = {}
    for split, path, digest in zip(table["split"], table["image_path"], digests, strict=True):
        groups.setdefault((split, digest), []).append(path)
    found = [
        {"split": split, "paths": paths} for (split, _), paths in sorted(groups.items()) if len(paths) > 1
    ]
    return {"count": sum(len(g["paths"]) - 1 for g in found), "groups": found}
