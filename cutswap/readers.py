"""Readers of what one stage writes and later stages read: the sample table and the trained model.

Stages share these instead of importing each other (``cutswap.stages.*`` never imports a sibling).

Ingest store attrs::

    samples     list of rows (SAMPLE_COLUMNS): split ("train" | "test"), label (0 normal, 1 anomalous),
                defect_type, image_path, mask_path (None for normal images); row i describes images[i]

Train store: ``checkpoint.pt`` (``cutswap.checkpoint``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cutswap.checkpoint import load_model_file
from cutswap.models import ProjectionNet
from cutswap.stores import StoreRef, open_store

SAMPLE_COLUMNS = ("split", "label", "defect_type", "image_path", "mask_path")


def samples(group) -> pd.DataFrame:
    """The sample table of an ingest store, row i describing ``images[i]``."""
    return pd.DataFrame(group.attrs["samples"], columns=list(SAMPLE_COLUMNS))


def train_indices(group) -> np.ndarray:
    """Indices of the normal training images, the only images saliency and training ever see."""
    table = samples(group)
    return np.flatnonzero((table["split"] == "train").to_numpy())


def load_model(train: StoreRef, device: torch.device | str = "cpu") -> ProjectionNet:
    """The trained classifier of a train store, loaded safely (tensors only, no pickled code)."""
    open_store(train)  # refuses an incomplete store
    return load_model_file(Path(train.path) / "checkpoint.pt", device)
