"""Train: one classifier per (category, method, seed).

Store layout (``storage/train/<category>-<method>-s<seed>-<key>/``)::

    checkpoint.pt   {"model": state_dict, "head_dims": [...], "num_classes": 2}; load with weights_only=True
    log             float64 (T, 6)  step, loss, acc_negative, acc_normal, lr, images_per_s
    attrs           method, seed, device, seconds, images_per_s, log_columns

Performance knobs (device, log interval) are not part of the key; they are recorded in the attrs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cutswap.models import ProjectionNet
from cutswap.pairs import random_pair_bank
from cutswap.settings import Settings
from cutswap.stages.ingest import train_indices
from cutswap.stores import StoreRef, build_store, open_store, store_dir, write_array
from cutswap.training import resolve_device, train_classifier

log = logging.getLogger(__name__)
LOG_COLUMNS = ("step", "loss", "acc_negative", "acc_normal", "lr", "images_per_s")


def train_run(
    settings: Settings,
    ingest: StoreRef,
    method: str,
    seed: int,
    pairs: StoreRef | None = None,
    mode: str = "run",
    progress: Callable[[dict[str, float]], None] | None = None,
) -> tuple[StoreRef, bool]:
    cfg = settings.train
    keyed = {
        **cfg.model_dump(exclude={"methods", "seeds", "device", "log_every"}),
        "method": method,
        "seed": seed,
    }
    inputs = {"ingest": ingest}
    if method == "cutswap":
        if pairs is None:
            raise ValueError("cutswap training needs the pairs store")
        inputs["pairs"] = pairs
    else:  # the controls draw patch sizes from the same distribution, set in the pairs section
        keyed["pairs"] = settings.pairs.model_dump(exclude={"max_tries"})
        keyed["levels"] = len(settings.saliency.levels)

    def write(group):
        source = open_store(ingest)
        images = source["images"][:][train_indices(source)]
        bank = None
        if method == "cutswap":
            bank = open_store(pairs)["boxes"][:]
        elif method == "random-swap":
            bank = random_bank(settings, *images.shape[:3])
        result = train_classifier(images, method, cfg, settings.pairs, seed, bank, progress)
        torch.save(
            {"model": result.model.state_dict(), "head_dims": cfg.head_dims, "num_classes": 2},
            store_dir(group) / "checkpoint.pt",
        )
        rows = np.array([[entry[c] for c in LOG_COLUMNS] for entry in result.log], dtype=np.float64)
        write_array(
            group,
            "log",
            rows.reshape(-1, len(LOG_COLUMNS)),
            per_chunk=len(rows) or 1,
            per_shard=len(rows) or 1,
        )
        group.attrs.update(
            {
                "device": str(resolve_device(cfg.device)),
                "seconds": round(result.seconds, 3),
                "images_per_s": round(result.images_per_s, 2),
                "final_loss": result.log[-1]["loss"] if result.log else None,
            }
        )

    extra = {"method": method, "seed": seed, "category": ingest.name, "log_columns": list(LOG_COLUMNS)}
    name = f"{ingest.name}-{method}-s{seed}"
    return build_store(settings.storage_root, "train", name, keyed, inputs, write, mode, extra)


def random_bank(settings: Settings, n: int, height: int, width: int) -> np.ndarray:
    """The random-swap control's bank, (N, L, D, 6): same seed and map indexing as the pairs stage.

    ``random_pair_bank`` draws the same patch size as ``sample_pair_bank`` for the same (seed, map,
    draw), so with equal training seeds the control swaps patches of exactly the sizes CutSwap swaps,
    at uniformly random places instead of salient ones.
    """
    cfg, levels = settings.pairs, len(settings.saliency.levels)
    bank = random_pair_bank(
        n * levels, height, width, cfg.draws, tuple(cfg.area), tuple(cfg.aspect), cfg.seed
    )
    return bank.boxes.reshape(n, levels, cfg.draws, 6)


def load_model(train: StoreRef, device: torch.device | str = "cpu") -> ProjectionNet:
    """The trained classifier of a train store, loaded safely (tensors only, no pickled code)."""
    open_store(train)  # refuses an incomplete store
    state = torch.load(Path(train.path) / "checkpoint.pt", map_location=device, weights_only=True)
    model = ProjectionNet(list(state["head_dims"]), int(state["num_classes"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()
