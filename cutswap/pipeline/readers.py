"""Readers of what one stage writes and later stages read: the sample table and the trained model.

Stages share these instead of importing each other (``cutswap.pipeline.stages.*`` never imports a sibling).

Ingest store attrs::

    samples     list of rows (SAMPLE_COLUMNS): split ("train" | "val" | "test"), label (0 normal,
                1 anomalous), defect_type, image_path, mask_path (None for normal images); row i describes
                images[i]

Train store: ``checkpoint.pt`` (``cutswap.learn.checkpoint``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cutswap.errors import StoreError
from cutswap.learn.checkpoint import load_model_file
from cutswap.learn.models import ProjectionNet
from cutswap.pipeline.stores import StoreRef, get_file, open_store
from cutswap.score.density import GaussianDensity
from cutswap.score.detector import Detector
from cutswap.score.patchcore import PatchCore

SAMPLE_COLUMNS = ("split", "label", "defect_type", "image_path", "mask_path")


def samples(group) -> pd.DataFrame:
    """The sample table of an ingest store, row i describing ``images[i]``."""
    return pd.DataFrame(group.attrs["samples"], columns=list(SAMPLE_COLUMNS))


def train_indices(group) -> np.ndarray:
    """Indices of the normal training images, the only images saliency and training ever see."""
    table = samples(group)
    return np.flatnonzero((table["split"] == "train").to_numpy())


def read_rows(array, rows: np.ndarray) -> np.ndarray:
    """Items ``rows`` (indices along the first axis, in that order) of an ingest array (``images``,
    ``masks``).

    Why not ``array[:][rows]``: that reads every chunk of the array, under a URL root the category's whole
    ingest store, when a job needs only some items (a training, the train split; the pixel metrics, the
    test masks). An orthogonal selection reads only these items' chunks (one item per chunk,
    ``cutswap.pipeline.stores.arrays``): a shard holding nothing but selected items in one request, any
    other shard by its index and then the selected chunks.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.empty((0, *array.shape[1:]), dtype=array.dtype)
    return np.asarray(array.get_orthogonal_selection((rows,)))


def load_model(train: StoreRef, device: torch.device | str = "cpu") -> ProjectionNet:
    """The trained classifier of a train store, loaded safely (tensors only, no pickled code)."""
    return load_model_file(get_file(train, "checkpoint.pt"), device)


def load_detector(evaluate: StoreRef, device: torch.device | str = "cpu", batch_size: int = 64) -> Detector:
    """Load the detector an evaluate store describes, with the classifier of its train store.

    The train store is looked up under the evaluate store's root by its recorded name and key, so a
    storage folder that was moved or copied (to another disk, to a bucket) still loads.

    Raises:
        StoreError: a store is missing or incomplete, or the evaluate store predates stored densities.
    """
    path = evaluate.path
    group = open_store(evaluate)
    attrs = group.attrs
    if "density_mean" not in group and "memory_bank" not in group:
        raise StoreError(
            f"evaluate store {path} was written by evaluate code version {attrs.get('code_version')}, "
            "which kept no density or threshold; rerun the evaluate stage "
            "(python -m flows.benchmark --preset <preset> --stages evaluate,report)"
        )
    recorded = attrs["inputs"]["train"]
    train = StoreRef.recorded(recorded, evaluate.root)
    device = torch.device(device)
    l2 = bool(attrs.get("l2_normalize", False))  # a store from before the setting: not normalised
    density = patch = core = None
    if "density_mean" in group:
        density = GaussianDensity(group["density_mean"][:], group["density_precision"][:], l2)
    if "patch_density_mean" in group:
        patch = GaussianDensity(group["patch_density_mean"][:], group["patch_density_precision"][:], l2)
    if "memory_bank" in group:
        coreset = attrs["coreset"]
        core = PatchCore(
            group["memory_bank"][:], float(attrs["localization"].get("sigma", 0.0)), coreset["fraction"]
        )
    tattrs = open_store(train).attrs
    provenance = {
        "category": attrs.get("category"),
        "method": attrs.get("method"),
        "seed": attrs.get("seed"),
        "evaluate_store": attrs["name"],
        "evaluate_key": attrs["key"],
        "evaluate_code_version": attrs["code_version"],
        "train_store": recorded["name"],
        "train_key": recorded["key"],
        "trunk": tattrs.get("trunk"),
        "num_classes": tattrs.get("num_classes"),
        "localization": dict(attrs["localization"]),
        "versions": dict(attrs["provenance"].get("versions", {})),
    }
    return Detector(
        model=load_model(train, device),
        density=density,
        route=dict(attrs["localization"]),
        image_size=int(attrs["metric_resolution"][0]),
        patch_density=patch,
        patchcore=core,
        threshold=dict(attrs["threshold"]),
        holdout_scores=group["holdout_scores"][:],
        map_scale=float(attrs["map_scale"]),
        normal_map_max=attrs.get("holdout_map_max"),
        provenance=provenance,
        batch_size=batch_size,
        device=device,
    )
