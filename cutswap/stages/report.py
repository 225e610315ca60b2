"""Report: gather evaluated runs into ``reports/<run>/`` (see ``cutswap.report`` for the layout).

The report folder is written beside its final place and swapped in whole, and it is skipped when its
``provenance.json`` already names the same input keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cutswap.atomic import atomic_dir
from cutswap.augment import cut_paste, swap_patches
from cutswap.compare import COLUMNS, compare, comparison_pairs
from cutswap.errors import StoreError
from cutswap.pairs import random_swap_bank
from cutswap.readers import train_indices
from cutswap.report import metrics_of, overlay_figure, run_page, summary_markdown, write_index
from cutswap.settings import Settings
from cutswap.stores import CODE_VERSIONS, StoreRef, library_versions, open_store, stage_key


@dataclass(frozen=True)
class CategoryRefs:
    """The stores behind one category's rows."""

    ingest: StoreRef
    saliency: StoreRef
    cluster: StoreRef
    pairs: StoreRef
    evaluations: list[StoreRef]


def results_table(categories: dict[str, CategoryRefs]) -> pd.DataFrame:
    """One row per evaluation, every cell read from the attrs of the stores that made it.

    Never from the live settings: a reused store need not share them (a store made under other execution
    knobs, or a stage deployment that only looked upstream stores up), and a row must state what made it.
    """
    rows = []
    for category, refs in categories.items():
        ing = open_store(refs.ingest).attrs["settings"]
        sal = open_store(refs.saliency).attrs
        clu = open_store(refs.cluster).attrs["settings"]
        pairs = open_store(refs.pairs).attrs
        drawn = pairs["settings"]
        for ev_ref in refs.evaluations:
            ev = open_store(ev_ref).attrs
            train_ref = StoreRef(**ev["inputs"]["train"])
            tr = open_store(train_ref).attrs
            rows.append(
                {
                    "dataset": ing["dataset"],
                    "category": category,
                    "method": ev["method"],
                    "seed": ev["seed"],
                    **ev["metrics"],
                    **_threshold_columns(ev),
                    "n_train": ev["n_train"],
                    "n_test": ev["n_test"],
                    "image_size": ing["image_size"],
                    **_training_columns(tr),
                    "num_classes": tr["num_classes"],
                    "amp": tr["amp"],
                    "nproc": tr["nproc"],
                    "backbone": sal["backbone"]["name"],
                    "backbone_sha256": sal["backbone"]["sha256"],
                    "backbone_fallback": bool(sal["backbone"].get("fallback_reason")),
                    "levels": "+".join(sal["levels"]),
                    # What made the maps, from the saliency store (whose key covers these settings).
                    "target_class": sal["settings"].get("target_class"),
                    "saliency_input_size": sal.get("input_size"),
                    "shallow_tanh": bool(sal["settings"].get("shallow_tanh", False)),
                    "cluster_method": clu["method"],
                    "cluster_k": clu["k"],
                    "cluster_m": clu["m"],
                    "cluster_bins": clu["bins"],
                    "draws": drawn["draws"],
                    "pair_area": "-".join(map(str, drawn["area"])),
                    "pair_aspect": "-".join(map(str, drawn["aspect"])),
                    "pair_seed": drawn["seed"],
                    "localization": json.dumps(ev["localization"], sort_keys=True),
                    "pair_fallback_rate": round(pairs["fallback_rate"], 4),
                    "pair_step_rates": json.dumps(pairs.get("step_rates", {}), sort_keys=True),
                    "device": tr["device"],
                    "train_seconds": tr["seconds"],
                    "train_images_per_s": tr["images_per_s"],
                    "train_key": train_ref.key,
                    "evaluate_key": ev_ref.key,
                    "saliency_key": refs.saliency.key,
                }
            )
    return (
        pd.DataFrame(rows).sort_values(["category", "method", "seed"], kind="stable").reset_index(drop=True)
    )


def _threshold_columns(ev_attrs: dict[str, Any]) -> dict[str, Any]:
    """The operating point of an evaluation: the threshold chosen on held-out normal training images and
    what it gives on the test set (``cutswap.detector``); NaN for stores that kept no threshold."""
    th = ev_attrs.get("threshold", {})
    test = th.get("test", {})
    nan = float("nan")
    return {
        "threshold": th.get("value", nan),
        "threshold_fpr_target": th.get("fpr_target", nan),
        "threshold_expected_fpr": th.get("expected_fpr", nan),
        "n_holdout": th.get("n_holdout", 0),
        "threshold_precision": test.get("precision", nan),
        "threshold_recall": test.get("recall", nan),
        "threshold_fpr": test.get("fpr", nan),
    }


def _training_columns(train_attrs: dict[str, Any]) -> dict[str, Any]:
    """What made the model, read from its train store (never from the live settings, which a reused store
    may not share): the keyed schedule, and the trunk with its initialisation. A method that trains
    nothing has no schedule: those cells are empty."""
    keyed = train_attrs.get("settings", {})
    trunk = train_attrs.get("trunk") or {
        "name": keyed.get("trunk", "resnet18"),
        "pretrained": keyed.get("pretrained", False),
    }
    schedule = ("steps", "batch_size", "lr", "momentum", "weight_decay", "swaps")
    return {
        **{k: keyed.get(k) for k in schedule},
        "head_dims": "-".join(map(str, keyed["head_dims"])) if "head_dims" in keyed else None,
        "trunk": trunk["name"],
        "pretrained": bool(trunk["pretrained"]),
        "trunk_sha256": trunk.get("sha256"),
    }


def _figure(
    path: Path, settings: Settings, refs: CategoryRefs, n_images: int = 2, n_negatives: int = 4
) -> None:
    ingest = open_store(refs.ingest)
    idx = train_indices(ingest)[:n_images]
    images = ingest["images"][:][idx]
    sal = open_store(refs.saliency)
    maps = sal["maps"][: len(idx)]
    tops = open_store(refs.cluster)["top"][: len(idx)]
    boxes = open_store(refs.pairs)["boxes"][: len(idx)]
    random = random_swap_bank(
        boxes, *ingest["images"].shape[1:3], settings.pairs.seed
    )  # the same sizes, random places
    pick = np.arange(n_negatives)
    batch = torch.from_numpy(images[pick % len(idx)]).permute(0, 3, 1, 2).float() / 255

    def draws(bank: np.ndarray) -> torch.Tensor:  # a different draw per panel, same draws for both banks
        return torch.from_numpy(
            bank.reshape(len(idx), -1, 6)[pick % len(idx), pick // len(idx)].astype(np.int64)
        )

    negatives = {
        "cutswap": swap_patches(batch, draws(boxes)),
        "random-swap": swap_patches(batch, draws(random)),
        "cutpaste": cut_paste(
            batch, settings.pairs.area, settings.pairs.aspect, torch.Generator().manual_seed(0)
        ),
    }
    as_images = {
        k: (v.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8) for k, v in negatives.items()
    }
    overlay_figure(path, images, maps, tops, as_images, list(sal.attrs["levels"]))


def _metric_contract(refs: CategoryRefs) -> dict[str, Any]:
    """How the metrics of a run are defined and at which resolution, from its first evaluation store."""
    if not refs.evaluations:
        return {}
    attrs = open_store(refs.evaluations[0]).attrs
    return {k: attrs[k] for k in ("metric_definitions", "metric_resolution", "localization") if k in attrs}


#: How the report's comparisons are computed; recorded in ``provenance.json`` under ``comparisons``.
COMPARISON_SETTINGS = {"n_boot": 10000, "confidence": 0.95, "tie": 0.001, "seed": 0}


def _comparisons(results: pd.DataFrame) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The run's comparisons (``cutswap.compare``), or None when no question's two methods both ran."""
    pairs = comparison_pairs(list(results["method"]))
    metrics = metrics_of(results)
    if not pairs or not metrics:
        return None, {}
    return compare(results, pairs, metrics, **COMPARISON_SETTINGS), dict(COMPARISON_SETTINGS)


def write_report(
    settings: Settings, categories: dict[str, CategoryRefs], mode: str = "run", preset: str | None = None
) -> tuple[Path, bool]:
    """Write the report of one run and refresh the index of runs.

    Returns:
        The run's folder and whether it was written now (False: an identical report was already there).
    """
    inputs = {
        f"{c}/{k}": getattr(r, k).key
        for c, r in categories.items()
        for k in ("ingest", "saliency", "cluster", "pairs")
    }
    inputs.update({f"{c}/eval/{e.name}": e.key for c, r in categories.items() for e in r.evaluations})
    key = stage_key("report", {"run": settings.run}, inputs)
    final = Path(settings.reports_root) / settings.run
    prov_path = final / "provenance.json"
    if mode == "reuse":
        if not prov_path.is_file():
            raise StoreError(f"no report at {final}; include 'report' in the stages to run")
        return final, False
    if mode != "force" and prov_path.is_file() and json.loads(prov_path.read_text()).get("key") == key:
        return final, False

    results = results_table(categories)
    comparisons, how = _comparisons(results)
    first = next(iter(categories.values()))
    provenance = {
        "run": settings.run,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "preset": preset,
        "key": key,
        "code_version": CODE_VERSIONS["report"],
        "settings": json.loads(settings.model_dump_json()),
        "backbone": dict(open_store(first.saliency).attrs["backbone"]),
        "versions": library_versions(),
        "stores": {
            c: {k: getattr(r, k).to_dict() for k in ("ingest", "saliency", "cluster", "pairs")}
            for c, r in categories.items()
        },
        "inputs": inputs,
        **_metric_contract(first),
        **({"comparisons": how} if comparisons is not None else {}),
    }
    with atomic_dir(final) as tmp:
        (tmp / "figures").mkdir()
        results.to_csv(tmp / "results.csv", index=False)
        if comparisons is not None:
            comparisons.to_csv(tmp / "comparisons.csv", index=False, columns=list(COLUMNS))
        (tmp / "summary.md").write_text(summary_markdown(results, provenance, comparisons))
        figures = []
        for category, refs in categories.items():
            figures.append(f"figures/{category}.png")
            _figure(tmp / figures[-1], settings, refs)
        (tmp / "index.html").write_text(run_page(results, provenance, figures, comparisons))
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
    write_index(final.parent)
    return final, True
