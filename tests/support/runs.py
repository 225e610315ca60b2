"""Small benchmark runs on disk, as ``cutswap predict`` and ``cutswap export`` find them, made by calling the
stages directly (no Prefect, no flow): the embedded ``textures`` dataset at 32 px, 2 training steps, one
seed, CPU. The tests' fixtures (``tiny_run``, ``demo_run``, ``swapped_run``) are built here so that each
says only what differs: its name, categories, rows and trunks.

A run's layout is the real one: ``<base>/storage`` (the dataset under ``storage/datasets/textures``, so
the README's image paths name it from ``base``) and ``<base>/reports/<run>/`` with ``results.csv`` (one
row per category and method, with the store keys) and ``provenance.json`` (the settings, whose
``storage_root`` the commands read).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stores import StoreRef


@dataclass(frozen=True)
class TinyRun:
    """A benchmark run on disk as ``cutswap predict`` finds it: a report folder (``results.csv`` with the
    store keys, ``provenance.json`` with the storage root) and the ingest, train and evaluate stores.

    ``ingest``, ``evaluations`` and ``trains`` are the first category's (every library test reads one
    category); ``evaluations`` and ``trains`` are keyed by method.
    """

    base: Path
    run: str
    data: Path
    reports: Path
    storage: Path
    settings: Settings
    ingest: StoreRef
    evaluations: dict[str, StoreRef]
    trains: dict[str, StoreRef]

    def trunk_of(self, method: str) -> str:
        """The trunk the method's classifier was built on, as its train store recorded it."""
        from cutswap.pipeline.stores import open_store

        return str(open_store(self.trains[method]).attrs["trunk"]["name"])


def stand_in_resnet18(folder: Path) -> tuple[Path, str, torch.nn.Module]:
    """A random ResNet-18 state dict saved under torchvision's file name in ``folder``, its sha256 and the
    module: with ``cutswap.method.backbones.RESNET18_SHA256`` patched to that hash it passes for the
    ImageNet file, so no test needs the network or the real weights."""
    import torchvision

    from cutswap.method import backbones

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    path = folder / backbones.RESNET18_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), model


def build_run(
    base: Path,
    run: str,
    *,
    categories: list[str],
    methods: list[str],
    train: dict[str, Any],
    textures: dict[str, int] | None = None,
) -> TinyRun:
    """Ingest, (for the swap methods) saliency, cluster and pairs, then train and evaluate every method on
    every category with seed 0, and write the run's report files.

    Args:
        train: the train section beyond ``methods`` (trunks, weights), over 2 steps of 4 + 4 images on CPU.
        textures: the dataset's sizes (default 20 normal training images, 4 normal and 1 per defect kind
            test images).
    """
    import pandas as pd

    from cutswap.method.registry import get_method
    from cutswap.pipeline.run_dataset import resolve_dataset
    from cutswap.pipeline.stages.cluster import cluster_category
    from cutswap.pipeline.stages.evaluate import evaluate_run
    from cutswap.pipeline.stages.ingest import ingest_category
    from cutswap.pipeline.stages.pairs import pairs_category
    from cutswap.pipeline.stages.saliency import saliency_category
    from cutswap.pipeline.stages.train import train_run
    from cutswap.pipeline.stores import open_store

    swaps = any(get_method(m).needs_pairs for m in methods)
    sections: dict[str, Any] = {}
    if swaps:  # only then: a run without swap methods keeps the keys it had before they were possible
        sections = {
            "saliency": {"backbone": "efficientnet_lite0", "input_size": 64, "batch_size": 8},
            "pairs": {"draws": 4},
        }
    settings = Settings(
        run=run,
        storage_root=base / "storage",
        reports_root=base / "reports",
        dataset={
            "name": "textures",
            "root": base / "storage" / "datasets" / "textures",
            "categories": categories,
            "image_size": 32,
            "textures": textures or {"n_train": 20, "n_test_good": 4, "n_test_defect": 1},
        },
        train={
            "methods": methods,
            "steps": 2,
            "batch_size": 4,
            "head_dims": [16],
            "device": "cpu",
            **train,
        },
        evaluate={"max_fit_patches": 400},
        **sections,
    )
    root, table = resolve_dataset(settings)
    rows: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    for category in categories:
        ingest, _ = ingest_category(settings, root, category, table)
        pairs = None
        if swaps:
            saliency, _ = saliency_category(settings, ingest)
            cluster, _ = cluster_category(settings, saliency)
            pairs, _ = pairs_category(settings, cluster)
        evaluations, trains = {}, {}
        for method in methods:
            trains[method], _ = train_run(settings, ingest, method, 0, pairs)
            evaluations[method], _ = evaluate_run(settings, ingest, trains[method])
            attrs = open_store(evaluations[method]).attrs
            rows.append(
                {
                    "dataset": "textures",
                    "category": category,
                    "method": method,
                    "seed": 0,
                    **attrs["metrics"],
                    "train_key": trains[method].key,
                    "evaluate_key": evaluations[method].key,
                }
            )
        first = first or {"ingest": ingest, "evaluations": evaluations, "trains": trains}
    folder = Path(settings.reports_root) / settings.run
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    (folder / "provenance.json").write_text(
        json.dumps({"run": settings.run, "settings": json.loads(settings.model_dump_json())})
    )
    return TinyRun(
        base, settings.run, root, Path(settings.reports_root), Path(settings.storage_root), settings, **first
    )
