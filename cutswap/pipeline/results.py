"""The results table of a run (``results.csv``): one row per evaluation, every cell read from the attrs of
the stores that made it (``reports/README.md`` says what the columns hold).

Per category, the stores behind its rows (:class:`CategoryRefs`; each evaluation with the saliency,
cluster and pairs stores of its own row, :class:`Evaluated`), and the attrs read from each::

    ingest      settings.dataset, settings.image_size
    saliency    backbone {name, sha256, fallback_reason}, levels, input_size, settings.target_class,
                settings.shallow_tanh, settings.cam
    cluster     settings {method, k, m, bins, anchor}
    pairs       settings {draws, area, aspect, seed}, fallback_rate, step_rates
    evaluate    method, seed, metrics, threshold {value, fpr_target, expected_fpr, n_holdout, source, test,
                check}, n_train, n_test, localization, scorer, l2_normalize, coreset.fraction,
                inputs.train (the train store that made the model), metric_definitions,
                metric_resolution
    train       settings (the keyed schedule), trunk, num_classes, amp, nproc, device, seconds,
                images_per_s
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cutswap.pipeline.settings import FINE_TUNING_NEUTRAL
from cutswap.pipeline.stores import StoreRef, open_store


@dataclass(frozen=True)
class Evaluated:
    """One evaluation of a row (``cutswap.pipeline.variants.Row``) and the precomputed stores its model's
    training read (the run's own for a method's row; a variant's own where it changes them)."""

    row: str
    evaluation: StoreRef
    saliency: StoreRef
    cluster: StoreRef
    pairs: StoreRef


@dataclass(frozen=True)
class CategoryRefs:
    """The stores behind one category's rows: the run's own precomputed stores (those of every method's
    row, which the figures of saliency and negatives show) and each evaluation."""

    ingest: StoreRef
    saliency: StoreRef
    cluster: StoreRef
    pairs: StoreRef
    evaluations: list[Evaluated]


def results_table(categories: dict[str, CategoryRefs]) -> pd.DataFrame:
    """One row per evaluation, every cell read from the attrs of the stores that made it.

    Never from the live settings: a reused store need not share them (a store made under other execution
    knobs, or a stage deployment that only looked upstream stores up), and a row must state what made it.
    """
    rows = []
    for category, refs in categories.items():
        ing = open_store(refs.ingest).attrs["settings"]
        for evaluated in refs.evaluations:
            ev_ref = evaluated.evaluation
            ev = open_store(ev_ref).attrs
            train_ref = StoreRef.recorded(ev["inputs"]["train"], ev_ref.root)
            tr = open_store(train_ref).attrs
            sal = open_store(evaluated.saliency).attrs
            clu = open_store(evaluated.cluster).attrs["settings"]
            pairs = open_store(evaluated.pairs).attrs
            # CutPaste draws its rectangles from the pairs settings its train store is keyed by.
            drawn = {**pairs["settings"], **tr.get("settings", {}).get("pairs", {})}
            rows.append(
                {
                    "dataset": ing["dataset"],
                    "category": category,
                    "method": evaluated.row,
                    "base_method": ev["method"],
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
                    "saliency_cam": sal["settings"].get("cam", "layercam"),  # keyed only when not LayerCAM
                    # What made the maps, from the saliency store (whose key covers these settings).
                    "target_class": sal["settings"].get("target_class"),
                    "saliency_input_size": sal.get("input_size"),
                    "shallow_tanh": bool(sal["settings"].get("shallow_tanh", False)),
                    "cluster_method": clu.get("method"),
                    "cluster_k": clu.get("k"),
                    "cluster_m": clu.get("m"),
                    "cluster_bins": clu.get("bins"),
                    "cluster_anchor": clu.get("anchor", "top"),  # keyed only when not the top cluster
                    "draws": drawn["draws"],
                    "pair_area": "-".join(map(str, drawn["area"])),
                    "pair_aspect": "-".join(map(str, drawn["aspect"])),
                    "pair_seed": drawn["seed"],
                    "localization": json.dumps(ev["localization"], sort_keys=True),
                    "scorer": ev.get("scorer", "gde"),
                    "l2_normalize": bool(ev.get("l2_normalize", False)),
                    "coreset_fraction": ev.get("coreset", {}).get("fraction"),
                    "pair_fallback_rate": round(pairs["fallback_rate"], 4),
                    "pair_step_rates": json.dumps(pairs.get("step_rates", {}), sort_keys=True),
                    "device": tr["device"],
                    "train_seconds": tr["seconds"],
                    "train_images_per_s": tr["images_per_s"],
                    "train_key": train_ref.key,
                    "evaluate_key": ev_ref.key,
                    "saliency_key": evaluated.saliency.key,
                    "pairs_key": evaluated.pairs.key,
                }
            )
    return (
        pd.DataFrame(rows).sort_values(["category", "method", "seed"], kind="stable").reset_index(drop=True)
    )


def _threshold_columns(ev_attrs: dict[str, Any]) -> dict[str, Any]:
    """The operating point of an evaluation: the threshold chosen on normal calibration images, what it
    gives on the test set, and whether that is within what the calibration sample allows
    (``cutswap.score.detector``); NaN (None: unchecked) for stores that kept no threshold or no check."""
    th = ev_attrs.get("threshold", {})
    test, check = th.get("test", {}), th.get("check", {})
    nan = float("nan")
    allowed = check.get("allowed_fp")
    return {
        "threshold": th.get("value", nan),
        "threshold_fpr_target": th.get("fpr_target", nan),
        "threshold_expected_fpr": th.get("expected_fpr", nan),
        "n_holdout": th.get("n_holdout", 0),
        "threshold_source": th.get("source", "train holdout" if th else None),
        "threshold_precision": test.get("precision", nan),
        "threshold_recall": test.get("recall", nan),
        "threshold_fpr": test.get("fpr", nan),
        "threshold_fp": test.get("fp", nan),
        "threshold_fp_allowed": nan if allowed is None else allowed,
        "threshold_holds": check.get("holds"),
        "threshold_check_level": check.get("level", nan),
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
        # absent from the key at their neutral values (``FINE_TUNING_NEUTRAL``): a pretrained trunk then
        # fine-tuned without warm-up, at the full learning rate, with batch statistics
        **({k: keyed.get(k, v) for k, v in FINE_TUNING_NEUTRAL.items()} if "steps" in keyed else {}),
        "head_dims": "-".join(map(str, keyed["head_dims"])) if "head_dims" in keyed else None,
        "trunk": trunk["name"],
        "pretrained": bool(trunk["pretrained"]),
        "trunk_sha256": trunk.get("sha256"),
    }


def metric_contract(refs: CategoryRefs) -> dict[str, Any]:
    """How the metrics of a run are defined and at which resolution, from its first evaluation store."""
    if not refs.evaluations:
        return {}
    attrs = open_store(refs.evaluations[0].evaluation).attrs
    return {k: attrs[k] for k in ("metric_definitions", "metric_resolution", "localization") if k in attrs}
