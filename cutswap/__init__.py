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

The package, one folder per concern, in the method's order::

    data/       datasets on disk: layout readers and the built-in datasets
    method/     backbones, LayerCAM saliency, clustering, the pair bank, negatives, the method registry
    learn/      the classifier, its training loop, checkpoint, execution, OOM retry, DDP
    score/      density, anomaly maps, metrics, the detector
    ---         the core above takes plain arguments and never imports the floor below
    pipeline/   settings, keyed stores and their readers, the Dask layer, the stages
    report/     tables, prose, HTML, figures, paired comparisons
    deploy/     predict and export
    app/        the command line and the console
    atomic.py, errors.py   shared by both floors (``tests/test_layers.py`` checks all of this)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # saliency
    "LayerCAM": "cutswap.method.saliency",
    "SaliencyExtractor": "cutswap.method.saliency",
    "saliency_maps": "cutswap.method.saliency",
    "Backbone": "cutswap.method.backbones",
    "load_backbone": "cutswap.method.backbones",
    # clustering and the pair bank
    "cluster_maps": "cutswap.method.clustering",
    "build_pair_bank": "cutswap.method.pairs",
    "PairBank": "cutswap.method.pairs",
    "sample_pair_bank": "cutswap.method.pairs",
    "random_pair_bank": "cutswap.method.pairs",
    # negatives
    "CutSwap": "cutswap.method.transforms",
    "CutPaste": "cutswap.method.transforms",
    "Scar": "cutswap.method.transforms",
    "NegativeSampler": "cutswap.method.sampler",
    "METHODS": "cutswap.method.registry",
    "get_method": "cutswap.method.registry",
    # models and training
    "ProjectionNet": "cutswap.learn.models",
    "build_model": "cutswap.learn.models",
    "ModelSpec": "cutswap.learn.loop",
    "Recipe": "cutswap.learn.loop",
    "train_classifier": "cutswap.learn.loop",
    "resolve_execution": "cutswap.learn.execution",
    # scoring
    "GaussianDensity": "cutswap.score.density",
    "image_auroc": "cutswap.score.metrics",
    "f1_max": "cutswap.score.metrics",
    "pixel_auroc": "cutswap.score.metrics",
    "aupro": "cutswap.score.metrics",
    "pixel_f1_max": "cutswap.score.metrics",
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
