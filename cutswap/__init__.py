"""CutSwap: saliency-guided patch swapping for self-supervised anomaly detection, as a library.

The pieces a training loop needs, with plain arguments (numbers, arrays, tensors) and no Prefect, Zarr or
settings::

    cam = cutswap.LayerCAM(model, {"layer2": model.layer2, "layer3": model.layer3})
    maps, _ = cam(images)                                   # uint8 (B, H, W, 3) -> (B, L, H, W)
    bank = cutswap.build_pair_bank(maps)                    # cluster the maps, draw pairs in their tops
    negatives = cutswap.CutSwap(bank)(batch, index)         # float (B, 3, H, W), index: bank rows
    density = cutswap.GaussianDensity.fit(normal_embeddings)
    cutswap.image_auroc(density.score(test_embeddings), labels)

The names below are imported on first use, so ``import cutswap`` stays fast (the command line checks a
bad setting in well under a second, before torch is loaded).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # saliency
    "LayerCAM": "cutswap.saliency",
    "SaliencyExtractor": "cutswap.saliency",
    "saliency_maps": "cutswap.saliency",
    "Backbone": "cutswap.backbones",
    "load_backbone": "cutswap.backbones",
    # clustering and the pair bank
    "cluster_maps": "cutswap.clustering",
    "build_pair_bank": "cutswap.bank",
    "PairBank": "cutswap.pairs",
    "sample_pair_bank": "cutswap.pairs",
    "random_pair_bank": "cutswap.pairs",
    # negatives
    "CutSwap": "cutswap.transforms",
    "CutPaste": "cutswap.transforms",
    "Scar": "cutswap.transforms",
    "NegativeSampler": "cutswap.negatives",
    "METHODS": "cutswap.methods",
    "get_method": "cutswap.methods",
    # models and training
    "ProjectionNet": "cutswap.models",
    "build_model": "cutswap.models",
    "ModelSpec": "cutswap.training",
    "Recipe": "cutswap.training",
    "train_classifier": "cutswap.training",
    "resolve_execution": "cutswap.execution",
    # scoring
    "GaussianDensity": "cutswap.density",
    "image_auroc": "cutswap.metrics",
    "f1_max": "cutswap.metrics",
    "pixel_auroc": "cutswap.metrics",
    "aupro": "cutswap.metrics",
    "pixel_f1_max": "cutswap.metrics",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cutswap' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
