"""Ingest: one category of a dataset on disk -> one store of images at the working size.

Store layout (``storage/ingest/<category>-<key>/``)::

    images   uint8 (N, S, S, 3)   every sample, in the order of ``attrs["samples"]``
    masks    bool  (N, S, S)      ground truth (all False for normal images)
    attrs    samples: [{split, label, defect_type, image_path, mask_path}], category, dataset,
             fingerprint (of the source files)

The key covers the dataset settings that change pixels (layout, working size) and a fingerprint of the
source files (relative path, size and modification time of every image and mask), so an edited dataset
is re-ingested while an untouched one is reused.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from cutswap.data.images import read_mask, read_rgb
from cutswap.settings import Settings
from cutswap.stores import StoreRef, build_store, write_array

SAMPLE_COLUMNS = ("split", "label", "defect_type", "image_path", "mask_path")


def fingerprint(root: Path, table: pd.DataFrame) -> str:
    """Hash of relative paths, sizes and mtimes of the files a category's table refers to."""
    h = hashlib.sha256()
    for rel in sorted({*table["image_path"], *table["mask_path"].dropna()}):
        st = (root / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def ingest_category(
    settings: Settings, root: Path, category: str, table: pd.DataFrame, mode: str = "run"
) -> tuple[StoreRef, bool]:
    """Read, resize and store every image and mask of one category."""
    table = table[table["category"] == category].reset_index(drop=True)
    size = settings.dataset.image_size
    keyed = {
        "dataset": settings.dataset.name,
        "category": category,
        "image_size": size,
        "fingerprint": fingerprint(root, table),
    }

    def write(group):
        with ThreadPoolExecutor(max_workers=4) as pool:
            images = np.stack(list(pool.map(lambda p: read_rgb(root / p, size), table["image_path"])))
            masks = np.stack(
                list(
                    pool.map(
                        lambda p: (
                            read_mask(root / p, size) if isinstance(p, str) else np.zeros((size, size), bool)
                        ),
                        table["mask_path"],
                    )
                )
            )
        write_array(group, "images", images)
        write_array(group, "masks", masks)
        records = table[list(SAMPLE_COLUMNS)].astype(object).where(table[list(SAMPLE_COLUMNS)].notna(), None)
        group.attrs["samples"] = records.to_dict(orient="records")

    extra = {"category": category, "dataset": settings.dataset.name, "root": str(root)}
    return build_store(settings.storage_root, "ingest", category, keyed, {}, write, mode, extra)


def samples(group) -> pd.DataFrame:
    """The sample table of an ingest store, row i describing ``images[i]``."""
    return pd.DataFrame(group.attrs["samples"], columns=list(SAMPLE_COLUMNS))


def train_indices(group) -> np.ndarray:
    """Indices of the normal training images, the only images saliency and training ever see."""
    table = samples(group)
    return np.flatnonzero((table["split"] == "train").to_numpy())
