"""Report: gather evaluated runs into ``reports/<run>/`` (see ``cutswap.report.tables`` for the layout).

The report folder is written beside its final place and swapped in whole, and it is skipped when its
``provenance.json`` already names the same input keys.

The figures (``cutswap.report.figures``) read, per category: the evaluate stores' ``scores``, ``labels``,
``index`` and ``maps`` (only the few maps shown, plus the normal images' maps for the display scale when
the store records no ``holdout_map_max``) and their attrs ``metrics``, ``map_scale``, ``threshold.value``
and ``holdout_map_max`` where present; the ingest store's ``images`` and ``masks`` at the picked rows
and its sample table (defect type, whether a mask exists); the train stores' ``log`` with its
``log_columns``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cutswap import roots
from cutswap.atomic import atomic_dir
from cutswap.errors import StoreError
from cutswap.method.pairs import random_swap_bank
from cutswap.method.registry import UNTRAINED_METHODS, get_method
from cutswap.method.sampler import NegativeSampler
from cutswap.pipeline.readers import samples, train_indices
from cutswap.pipeline.settings import FINE_TUNING_NEUTRAL, Settings
from cutswap.pipeline.stores import CODE_VERSIONS, StoreRef, library_versions, open_store, stage_key
from cutswap.report import figures as plots
from cutswap.report.compare import (
    BASELINE,
    COLUMNS,
    POWER,
    compare,
    comparison_pairs,
    paired_differences,
)
from cutswap.report.html import FigureRef, run_page, write_index
from cutswap.report.prose import comparison_settings, summary_markdown
from cutswap.report.tables import metrics_of
from cutswap.score.resample import (
    N_REDRAWS,
    image_metric_redraws,
    pixel_histograms,
    pixel_metric_redraws,
    redraws,
)


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
            train_ref = StoreRef.recorded(ev["inputs"]["train"], ev_ref.root)
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
                    "saliency_key": refs.saliency.key,
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


def _figure(
    path: Path, settings: Settings, refs: CategoryRefs, n_images: int = 2, n_negatives: int = 4
) -> None:
    """Training images with each saliency level and its top cluster, then the negatives of every trained
    method of the run, each made by that method's own sampler (``cutswap.method.sampler``) from the same
    images, so a method added to the registry appears here without a change."""
    ingest = open_store(refs.ingest)
    idx = train_indices(ingest)[:n_images]
    images = ingest["images"][:][idx]
    sal = open_store(refs.saliency)
    maps = sal["maps"][: len(idx)]
    tops = open_store(refs.cluster)["top"][: len(idx)]
    boxes = open_store(refs.pairs)["boxes"][: len(idx)]
    banks = {  # the random control's bank: the same patch sizes at random places
        "saliency": boxes,
        "random": random_swap_bank(boxes, *ingest["images"].shape[1:3], settings.pairs.seed),
    }
    rows = torch.arange(n_negatives) % len(idx)
    batch = torch.from_numpy(images[rows.numpy()]).permute(0, 3, 1, 2).float() / 255
    negatives = {}
    for method in settings.train.methods:
        spec = get_method(method)
        if not spec.trains:
            continue
        bank = torch.from_numpy(banks[spec.bank].astype(np.int64)) if spec.bank else None
        sampler = NegativeSampler(
            method, bank, settings.train.swaps, settings.pairs.area, settings.pairs.aspect
        )
        made = sampler(batch, rows, torch.Generator().manual_seed(0))
        negatives[method] = (made.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    plots.overlay_figure(path, images, maps, tops, negatives, list(sal.attrs["levels"]))


@dataclass(frozen=True)
class _Evaluation:
    """One evaluate store as the figures need it (scores and labels are small: read whole)."""

    method: str
    seed: int
    auroc: float
    scores: np.ndarray
    labels: np.ndarray
    group: Any  # the open zarr group, for the few maps shown and the attrs


def _evaluations(refs: CategoryRefs) -> dict[str, list[_Evaluation]]:
    """A category's evaluations by method (in the order the run lists them), each sorted by seed."""
    out: dict[str, list[_Evaluation]] = {}
    for ref in refs.evaluations:
        group = open_store(ref)
        attrs = group.attrs
        out.setdefault(attrs["method"], []).append(
            _Evaluation(
                attrs["method"],
                int(attrs["seed"]),
                float(attrs["metrics"].get("image_AUROC", float("nan"))),
                group["scores"][:],
                group["labels"][:],
                group,
            )
        )
    return {m: sorted(evs, key=lambda e: e.seed) for m, evs in out.items()}


def _representative(evaluations: list[_Evaluation]) -> _Evaluation:
    """The seed whose image AUROC is the (lower) median of the method's seeds: neither its luckiest nor its
    unluckiest model, so its pictures show what the method typically does."""
    ranked = sorted(evaluations, key=lambda e: (np.nan_to_num(e.auroc, nan=-1.0), e.seed))
    return ranked[(len(ranked) - 1) // 2]


def best_method(results: pd.DataFrame, trained: bool = False) -> str | None:
    """The method with the highest mean image AUROC (the mean over categories of each category's mean, as
    the tables' mean row); with ``trained``, among the methods that train only. None when no row has one.
    """
    if trained:
        results = results[~results["method"].isin(UNTRAINED_METHODS)]
    if "image_AUROC" not in results.columns or results["image_AUROC"].notna().sum() == 0:
        return None
    means = results.groupby(["method", "category"])["image_AUROC"].mean().groupby("method").mean()
    return str(means.idxmax())


def shown_methods(results: pd.DataFrame) -> list[str]:
    """Whose test images the report shows: the best method and the no-training baseline, or, when a
    no-training row is the best, the best trained method beside it (what training gives is the question
    then)."""
    best = best_method(results)
    untrained = best in UNTRAINED_METHODS
    first = best_method(results, trained=True) if untrained else best
    second = best if untrained else BASELINE
    return [m for m in dict.fromkeys([first, second]) if m is not None and m in set(results["method"])]


def _score_threshold(ev: _Evaluation) -> float | None:
    value = (ev.group.attrs.get("threshold") or {}).get("value")
    return float(value) if value is not None and np.isfinite(value) else None


def _label(ev: _Evaluation) -> str:
    return f"{ev.method}, seed {ev.seed} (image AUROC {100 * ev.auroc:.1f})"


def _examples(
    path: Path, category: str, ev: _Evaluation, images: Any, masks: Any, table: pd.DataFrame
) -> FigureRef:
    """The examples figure of one evaluation, on the display scale and with the pixel threshold it records.

    The maps are stored divided by the test maximum (``map_scale``). Drawn on that scale, every image but
    the hottest looks cold; the display scale is therefore what a normal image reaches: the store's
    ``holdout_map_max`` (held-out normal training images) when recorded, which is also the predicted-mask
    threshold (a pixel above anything normal), else the largest map value over the normal test images
    (for display only; no predicted mask is drawn then).
    """
    attrs = ev.group.attrs
    has_maps = "maps" in ev.group
    scale = float(attrs.get("map_scale") or 1.0)
    holdout = attrs.get("holdout_map_max")
    threshold = float(holdout) / scale if has_maps and holdout is not None else None
    vmax = threshold
    if has_maps and vmax is None:
        normal = np.flatnonzero(ev.labels == 0)
        vmax = float(ev.group["maps"].oindex[normal].max()) if len(normal) else 1.0
    index = ev.group["index"][:]
    score_threshold = _score_threshold(ev)
    rows = []
    for pick in plots.extremes(ev.scores, ev.labels):
        row = int(index[pick.position])
        sample = table.iloc[row]
        no_mask = pick.label == 1 and not isinstance(sample["mask_path"], str)
        flagged = ""
        if score_threshold is not None:
            flagged = " · flagged" if pick.score > score_threshold else " · passed"
        defect = f"{sample['defect_type']} · " if pick.label == 1 and sample["defect_type"] else ""
        rows.append(
            plots.Example(
                images[row],
                ev.group["maps"][pick.position].astype(np.float32) if has_maps else None,
                None if no_mask else masks[row].astype(bool),
                f"{pick.description}\n{defect}score {pick.score:.3g}{flagged}",
            )
        )
    plots.examples_figure(path, rows, f"{category}: {_label(ev)}", vmax or 1.0, threshold)
    scale_words = (
        "the heat is full at the largest map value of the held-out normal training images; the predicted "
        "mask is every pixel above it"
        if threshold is not None
        else "the heat is full at the largest map value over the normal test images (display only; the "
        "store records no pixel threshold, so no predicted mask is drawn)"
    )
    return FigureRef(
        f"figures/{path.name}",
        f"Test images: {ev.method}" + (" (no training)" if ev.method in UNTRAINED_METHODS else ""),
        f"The most and least anomalous test image of each class for {_label(ev)}, the seed with the median "
        f"AUROC; the anomaly map over the image (inferno, opaque in proportion to the value; {scale_words}) "
        "with the true mask outlined in cyan, and the true mask"
        + (
            ""
            if score_threshold is None
            else f"; `flagged`: score above the recorded threshold {score_threshold:.3g}"
        )
        + ".",
        category,
        row="examples",
    )


def _category_figures(folder: Path, category: str, refs: CategoryRefs, shown: list[str]) -> list[FigureRef]:
    """The category's pictures of what the detectors found (examples, scores, ROC, training curves)."""
    evaluations = _evaluations(refs)
    if not evaluations:
        return []
    figs: list[FigureRef] = []
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in category)
    shown = [m for m in shown if m in evaluations]
    if shown:
        ingest = open_store(refs.ingest)
        table = samples(ingest)
        rows = sorted(
            {int(ev.group["index"][p.position]) for m in shown for ev in [_representative(evaluations[m])]
             for p in plots.extremes(ev.scores, ev.labels)}
        )  # fmt: skip
        # Only the picked rows of the ingest store are read (a few images, not the category).
        images = dict(zip(rows, ingest["images"].oindex[rows], strict=True)) if rows else {}
        masks = dict(zip(rows, ingest["masks"].oindex[rows], strict=True)) if rows else {}
        for method in shown:
            path = folder / "figures" / f"{stem}-examples-{method}.png"
            figs.append(_examples(path, category, _representative(evaluations[method]), images, masks, table))
    panels = {_label(ev): (ev.scores, ev.labels) for ev in map(_representative, evaluations.values())}
    thresholds = {_label(ev): _score_threshold(ev) for ev in map(_representative, evaluations.values())}
    plots.score_histograms(folder / "figures" / f"{stem}-scores.png", panels, category, thresholds)
    figs.append(
        FigureRef(
            f"figures/{stem}-scores.png",
            "Score distributions",
            "Image scores of the normal (blue) and anomalous (red) test images, one panel per method for "
            "its median-AUROC seed (scores of different models are not on one scale); little overlap means "
            "a high AUROC. Dashed: the recorded image threshold, where there is one.",
            category,
        )
    )
    curves = {m: [(ev.scores, ev.labels) for ev in evs] for m, evs in evaluations.items()}
    plots.roc_figure(folder / "figures" / f"{stem}-roc.png", curves, f"{category}: image-level ROC")
    figs.append(
        FigureRef(
            f"figures/{stem}-roc.png",
            "ROC curves",
            "True- against false-positive rate as the image threshold sweeps the scores, one line per seed; "
            "the legend gives each method's mean image AUROC (the area under its curves).",
            category,
        )
    )
    logs: dict[str, list[np.ndarray]] = {}
    columns: list[str] = []
    for method, evs in evaluations.items():
        for ev in evs:
            train = open_store(StoreRef.recorded(ev.group.attrs["inputs"]["train"], refs.ingest.root))
            log = train["log"][:] if "log" in train else np.empty((0, 0))
            if log.ndim == 2 and len(log):
                logs.setdefault(method, []).append(log)
                columns = list(train.attrs.get("log_columns") or columns)
    if logs and {"step", "loss", "acc_negative"} <= set(columns):
        path = folder / "figures" / f"{stem}-training.png"
        plots.training_figure(path, logs, columns, f"{category}: training, one line per seed")
        figs.append(
            FigureRef(
                f"figures/{path.name}",
                "Training curves",
                "Loss and accuracy on the negatives (the synthetic anomalies each method trains on) at "
                "every logged step; methods that train nothing have no curve.",
                category,
            )
        )
    return figs


def _run_figures(
    folder: Path, results: pd.DataFrame, comparisons: pd.DataFrame | None, how: dict
) -> list[FigureRef]:
    """The run-level picture: the comparisons' paired differences with their intervals."""
    if comparisons is None or comparisons.empty:
        return []
    slim = results[["category", "method", "seed", *metrics_of(results)]]  # pandas is slow on 40 columns
    diffs = {}
    for r in comparisons.itertuples(index=False):
        pair = slim[slim["method"].isin((r.a, r.b))]
        diffs[(r.a, r.b, r.metric)] = paired_differences(pair, r.a, r.b, r.metric)["diff"].to_numpy(float)
    settings = comparison_settings({"comparisons": how})
    path = folder / "figures" / "differences.png"
    plots.differences_figure(
        path, comparisons, diffs, settings.get("confidence", 0.95), settings.get("tie", 0.001)
    )
    return [
        FigureRef(
            "figures/differences.png",
            "Paired differences",
            "Each question's mean difference a − b in points with its t interval (the Comparisons "
            "table), one panel per metric; grey dots are the single (category, seed) differences, the grey "
            "band the tie zone. An interval clear of zero is coloured (green: a better, red: b better).",
        )
    ]


def _metric_contract(refs: CategoryRefs) -> dict[str, Any]:
    """How the metrics of a run are defined and at which resolution, from its first evaluation store."""
    if not refs.evaluations:
        return {}
    attrs = open_store(refs.evaluations[0]).attrs
    return {k: attrs[k] for k in ("metric_definitions", "metric_resolution", "localization") if k in attrs}


#: How the report's comparisons are computed; recorded in ``provenance.json`` under ``comparisons``.
COMPARISON_SETTINGS = {"confidence": 0.95, "power": POWER, "tie": 0.001, "redraws": N_REDRAWS}


def test_redraws(categories: dict[str, CategoryRefs], n_redraws: int = N_REDRAWS) -> pd.DataFrame:
    """Every evaluation re-scored on the same redraws of its category's test images (``cutswap.score.resample``).

    Image metrics from the stored scores; pixel metrics from the stored maps against the ingest masks, for
    the evaluations whose stored pixel metrics are defined. One row per evaluation x redraw.
    """
    frames = []
    for category, refs in categories.items():
        counts, index, masks = None, None, None
        for ref in refs.evaluations:
            group = open_store(ref)
            attrs = group.attrs
            labels = group["labels"][:]
            if counts is None:
                index = group["index"][:]
                counts = redraws(labels, n_redraws, seed=0)
            elif not np.array_equal(group["index"][:], index):
                raise StoreError(f"{ref.name}: its test images differ from the category's other evaluations")
            values = image_metric_redraws(group["scores"][:], labels, counts)
            pixel_defined = np.isfinite(attrs["metrics"].get("pixel_AUROC", float("nan")))
            if "maps" in group and pixel_defined:
                if masks is None:
                    masks = open_store(refs.ingest)["masks"][:][index]
                values |= pixel_metric_redraws(pixel_histograms(group["maps"][:], masks), counts)
            frames.append(
                pd.DataFrame(
                    {
                        "category": category,
                        "method": attrs["method"],
                        "seed": int(attrs["seed"]),
                        "redraw": np.arange(n_redraws),
                        **values,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _comparisons(
    results: pd.DataFrame, categories: dict[str, CategoryRefs]
) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The run's comparisons (``cutswap.report.compare``), or None when no question's two methods both ran."""
    pairs = comparison_pairs(list(results["method"]))
    metrics = metrics_of(results)
    if not pairs or not metrics:
        return None, {}
    how = dict(COMPARISON_SETTINGS)
    again = test_redraws(categories, how["redraws"])
    comparisons = compare(results, pairs, metrics, again, how["confidence"], how["power"], how["tie"])
    return comparisons, how


def machine() -> dict[str, Any]:
    """The machine a report was made on: per-seed numbers do not carry across machines (module docstring)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
    }


def write_report(
    settings: Settings,
    categories: dict[str, CategoryRefs],
    mode: str = "run",
    preset: str | None = None,
    failed: list[dict[str, Any]] | None = None,
) -> tuple[Path, bool]:
    """Write the report of one run and refresh the index of runs.

    Args:
        failed: the jobs that failed (``category``, ``method``, ``seed``, ``stage``, ``cause``): the report
            of the others is marked incomplete and lists them.

    A report under a URL ``reports_root`` is built in this host's folder for that root
    (``cutswap.roots.local_folder``) and uploaded, ``provenance.json`` last: a reader takes the report
    as complete only once it is there.

    Returns:
        The run's folder on this host and whether it was written now (False: an identical report was
        already there).
    """
    inputs = {
        f"{c}/{k}": getattr(r, k).key
        for c, r in categories.items()
        for k in ("ingest", "saliency", "cluster", "pairs")
    }
    inputs.update({f"{c}/eval/{e.name}": e.key for c, r in categories.items() for e in r.evaluations})
    failed = [{k: f[k] for k in ("category", "method", "seed", "stage", "cause")} for f in failed or []]
    # (an incomplete report is keyed by its failures, so a rerun that completes it writes it anew)
    key = stage_key("report", {"run": settings.run, **({"failed_jobs": failed} if failed else {})}, inputs)
    root = roots.normalize(settings.reports_root)
    final = roots.local_folder(root) / settings.run
    where = roots.join(root, settings.run)
    recorded = roots.read_bytes(roots.join(where, "provenance.json"))
    if mode == "reuse" and recorded is None:
        raise StoreError(f"no report at {where}; include 'report' in the stages to run")
    if mode == "reuse" or (mode != "force" and recorded and json.loads(recorded).get("key") == key):
        if not roots.is_local(root):
            roots.download_tree(where, final)
        return final, False

    results = results_table(categories)
    comparisons, how = _comparisons(results, categories)
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
        "machine": machine(),
        "stores": {
            c: {k: getattr(r, k).to_dict() for k in ("ingest", "saliency", "cluster", "pairs")}
            for c, r in categories.items()
        },
        "inputs": inputs,
        "failed_jobs": failed,
        **_metric_contract(first),
        **({"comparisons": how} if comparisons is not None else {}),
    }
    with atomic_dir(final) as tmp:
        (tmp / "figures").mkdir()
        results.to_csv(tmp / "results.csv", index=False)
        if comparisons is not None:
            comparisons.to_csv(tmp / "comparisons.csv", index=False, columns=list(COLUMNS))
        (tmp / "summary.md").write_text(summary_markdown(results, provenance, comparisons))
        figures = _run_figures(tmp, results, comparisons, how)
        shown = shown_methods(results)
        for category, refs in categories.items():
            figures += _category_figures(tmp, category, refs, shown)
            figures.append(
                FigureRef(
                    f"figures/{category}.png",
                    "Saliency and negatives",
                    "Training images with each saliency level and its top cluster outlined, then the "
                    "negatives each method trains on.",
                    category,
                )
            )
            _figure(tmp / figures[-1].path, settings, refs)
        (tmp / "index.html").write_text(run_page(results, provenance, figures, comparisons))
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
    if not roots.is_local(root):  # built here, then uploaded with provenance.json (its marker) last
        roots.upload_tree(final, where, last="provenance.json")
    write_index(final.parent)
    return final, True
