"""Evaluate: score every test image of a category with one trained classifier.

Store layout (``storage/evaluate/<category>-<method>-s<seed>-<key>/``)::

    scores  float64 (T,)  Mahalanobis distance of each test image's embedding (larger = more anomalous)
    labels  uint8   (T,)  1 = anomalous
    index   int64   (T,)  row of the image in the ingest store
    attrs   metrics: {image_AUROC}, n_train, n_test, method, seed
"""

from __future__ import annotations

import numpy as np
import torch

from cutswap.density import GaussianDensity
from cutswap.metrics import image_auroc
from cutswap.settings import Settings
from cutswap.stages.ingest import samples, train_indices
from cutswap.stages.train import load_model
from cutswap.stores import StoreRef, build_store, open_store, write_array
from cutswap.training import resolve_device


@torch.inference_mode()
def embed(model, images: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Embeddings of uint8 (N, H, W, 3) images, batch by batch."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = (
            torch.from_numpy(images[start : start + batch_size]).to(device).permute(0, 3, 1, 2).float() / 255
        )
        out.append(model.embed(batch).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 512))


def evaluate_run(
    settings: Settings, ingest: StoreRef, train: StoreRef, mode: str = "run"
) -> tuple[StoreRef, bool]:
    def write(group):
        device = resolve_device(settings.train.device)
        source = open_store(ingest)
        images = source["images"][:]
        table = samples(source)
        test = np.flatnonzero((table["split"] == "test").to_numpy())
        model = load_model(train, device)
        bs = settings.evaluate.batch_size
        density = GaussianDensity.fit(embed(model, images[train_indices(source)], bs, device))
        scores = density.score(embed(model, images[test], bs, device))
        labels = table["label"].to_numpy()[test].astype(np.uint8)
        for name, data in (("scores", scores), ("labels", labels), ("index", test)):
            write_array(group, name, data, per_chunk=len(data) or 1, per_shard=len(data) or 1)
        group.attrs["metrics"] = {"image_AUROC": image_auroc(scores, labels)}
        group.attrs.update({"n_train": int(len(train_indices(source))), "n_test": int(len(test))})

    tattrs = open_store(train).attrs
    extra = {"method": tattrs["method"], "seed": tattrs["seed"], "category": ingest.name}
    return build_store(
        settings.storage_root,
        "evaluate",
        train.name,
        {},
        {"ingest": ingest, "train": train},
        write,
        mode,
        extra,
    )
