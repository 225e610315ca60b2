"""The dataset a run's settings name, resolved through the core's ``cutswap.data.datasets.open_dataset``.

Light on purpose (no torch, no Zarr): the command line checks the dataset with it before anything heavy
starts.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cutswap import roots
from cutswap.data.datasets import open_dataset
from cutswap.pipeline.settings import Settings


def resolve_dataset(settings: Settings) -> tuple[Path, pd.DataFrame]:
    """The dataset root (built first for the built-in datasets, under ``<storage_root>/datasets``, or this
    host's folder for a URL storage root: ``cutswap.roots.local_folder``) and its checked sample table.

    Only the flow's host reads the dataset (ingest copies it into its store), so a built-in dataset is
    built there even when the stores go to a bucket."""
    cfg = settings.dataset
    return open_dataset(
        cfg.name,
        cfg.root,
        roots.local_folder(roots.normalize(settings.storage_root)) / "datasets",
        cfg.categories,
        folder=cfg.folder.model_dump(),
        textures=cfg.textures.model_dump(),
        textures_seed=cfg.textures_seed,
        mnist_seed=cfg.mnist_seed,
    )
