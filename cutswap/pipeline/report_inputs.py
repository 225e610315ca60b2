"""What the report's figures and redraws read from a run's stores, handed on as the plain data of
``cutswap.report`` (which never opens a store).

Per category (:class:`cutswap.pipeline.results.CategoryRefs`):

    evaluate stores   (each as its row, ``Evaluated.row``) attrs ``seed``, ``metrics``, ``map_scale``,
                      ``threshold.value``, ``holdout_map_max`` where present and ``inputs.train``;
                      arrays ``scores`` and ``labels`` (whole), ``index`` (the shown seeds', and every
                      one's for the redraws), ``maps``: for the figures only the few shown, plus the
                      normal images' maps for the display scale when the store records no
                      ``holdout_map_max``; whole for the redraws where the stored pixel metrics are defined
    ingest store      ``images`` and ``masks`` at the picked rows, ``masks`` at the test rows (redraws),
                      the first normal training images, the sample table (defect type, mask file)
    train stores      ``log`` with its ``log_columns`` (the figures; every evaluation's for the trackers)
    saliency, cluster, pairs   ``maps`` (and attr ``levels``), ``top``, ``boxes`` of the first normal
                      training images

Only what is drawn is read: a category's test maps can be far larger than everything else together.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import zarr

from cutswap.pipeline.readers import read_rows, samples, train_indices
from cutswap.pipeline.results import CategoryRefs
from cutswap.pipeline.stores import StoreRef, open_store
from cutswap.report.examples import ExampleSet, PickedImage
from cutswap.report.figures import Pick, extremes
from cutswap.report.gallery import CategoryFigures
from cutswap.report.negatives import SaliencyExamples
from cutswap.report.picking import Evaluation, by_method, representative
from cutswap.report.redraws import ScoredTestSet


def _evaluation(row: str, ref: StoreRef, group: zarr.Group) -> Evaluation:
    """An evaluate store's scores, labels and recorded thresholds, as row ``row`` of the tables; a threshold
    that is not finite is none."""
    attrs = group.attrs
    has_maps = "maps" in group
    scale = float(attrs.get("map_scale") or 1.0)
    holdout = attrs.get("holdout_map_max")
    value = (attrs.get("threshold") or {}).get("value")
    return Evaluation(
        row,
        int(attrs["seed"]),
        float(attrs["metrics"].get("image_AUROC", float("nan"))),
        group["scores"][:],
        group["labels"][:],
        ref.key,
        score_threshold=float(value) if value is not None and np.isfinite(value) else None,
        pixel_threshold=float(holdout) / scale if has_maps and holdout is not None else None,
        has_maps=has_maps,
    )


def _normal_max(group: zarr.Group, ev: Evaluation) -> float | None:
    """The display scale of an evaluation without a pixel threshold: its largest map value over the normal
    test images (1 without any); None where it is not needed (no maps, or a recorded threshold)."""
    if not ev.has_maps or ev.pixel_threshold is not None:
        return None
    normal = np.flatnonzero(ev.labels == 0)
    return float(group["maps"].oindex[normal].max()) if len(normal) else 1.0


def _picked(
    pick: Pick, row: int, table: pd.DataFrame, images: dict, masks: dict, group: zarr.Group
) -> PickedImage:
    """One picked test image: its ingest row's image, mask and sample, and its map where the store
    has maps."""
    sample = table.iloc[row]
    amap = group["maps"][pick.position] if "maps" in group else None
    has_mask_file = isinstance(sample["mask_path"], str)
    return PickedImage(pick, images[row], masks[row], has_mask_file, sample["defect_type"], amap)


def _example_sets(
    ingest_ref: StoreRef, groups: dict[str, zarr.Group], shown: list[Evaluation]
) -> list[ExampleSet]:
    """The picked test images of each shown evaluation, read in one go from the ingest store."""
    ingest = open_store(ingest_ref)
    table = samples(ingest)
    picks = [extremes(ev.scores, ev.labels) for ev in shown]
    indexes = [groups[ev.key]["index"][:] for ev in shown]
    rows = sorted({int(index[p.position]) for index, ps in zip(indexes, picks, strict=True) for p in ps})
    # Only the picked rows of the ingest store are read (a few images, not the category).
    images = dict(zip(rows, ingest["images"].oindex[rows], strict=True)) if rows else {}
    masks = dict(zip(rows, ingest["masks"].oindex[rows], strict=True)) if rows else {}
    sets = []
    for ev, index, ps in zip(shown, indexes, picks, strict=True):
        group = groups[ev.key]
        picked = [_picked(p, int(index[p.position]), table, images, masks, group) for p in ps]
        sets.append(ExampleSet(ev, picked, _normal_max(group, ev)))
    return sets


def _training_log(evaluation: zarr.Group, root: str) -> tuple[list[str], np.ndarray] | None:
    """The log of the training an evaluation store read, with its column names; None when it has no rows
    (a method that trains nothing logs nothing)."""
    train = open_store(StoreRef.recorded(evaluation.attrs["inputs"]["train"], root))
    log = train["log"][:] if "log" in train else np.empty((0, 0))
    if log.ndim != 2 or not len(log):
        return None
    return list(train.attrs.get("log_columns") or []), log


def _training_logs(
    root: str, groups: dict[str, zarr.Group], evaluations: dict[str, list[Evaluation]]
) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """Every evaluation's training log that has rows, by method, and the logs' column names."""
    logs: dict[str, list[np.ndarray]] = {}
    columns: list[str] = []
    for method, evs in evaluations.items():
        for ev in evs:
            found = _training_log(groups[ev.key], root)
            if found is not None:
                logs.setdefault(method, []).append(found[1])
                columns = found[0] or columns
    return logs, columns


def training_logs(
    categories: dict[str, CategoryRefs],
) -> dict[tuple[str, str, int], tuple[list[str], np.ndarray]]:
    """Per evaluation ``(category, row, seed)``, its training's log and column names, for the trackers
    (``cutswap.track``); an evaluation of a method that trains nothing has none."""
    out = {}
    for category, refs in categories.items():
        for e in refs.evaluations:
            group = open_store(e.evaluation)
            found = _training_log(group, refs.ingest.root)
            if found is not None:
                out[(category, e.row, int(group.attrs["seed"]))] = found
    return out


def read_category_figures(refs: CategoryRefs, shown: list[str]) -> CategoryFigures:
    """What one category's figures are drawn from (``cutswap.report.gallery``): every evaluation, the picked
    images of the ``shown`` methods' representative seeds, and the training logs."""
    groups = {e.evaluation.key: open_store(e.evaluation) for e in refs.evaluations}
    evaluations = by_method(
        [_evaluation(e.row, e.evaluation, groups[e.evaluation.key]) for e in refs.evaluations]
    )
    if not evaluations:
        return CategoryFigures({})
    representatives = [representative(evaluations[m]) for m in shown if m in evaluations]
    examples = _example_sets(refs.ingest, groups, representatives) if representatives else []
    logs, columns = _training_logs(refs.ingest.root, groups, evaluations)
    return CategoryFigures(evaluations, examples, logs, columns)


def read_saliency_examples(refs: CategoryRefs, n_images: int = 2) -> SaliencyExamples:
    """The first ``n_images`` normal training images with their saliency maps, top clusters and pair draws
    (``cutswap.report.negatives``)."""
    ingest = open_store(refs.ingest)
    idx = train_indices(ingest)[:n_images]
    saliency = open_store(refs.saliency)
    return SaliencyExamples(
        read_rows(ingest["images"], idx),
        saliency["maps"][: len(idx)],
        open_store(refs.cluster)["top"][: len(idx)],
        open_store(refs.pairs)["boxes"][: len(idx)],
        list(saliency.attrs["levels"]),
    )


def scored_test_sets(categories: dict[str, CategoryRefs]) -> Iterator[ScoredTestSet]:
    """Every evaluation's stored test-set outputs (``cutswap.report.redraws``), category by category, read
    one at a time; its maps only where its stored pixel metrics are defined."""
    for category, refs in categories.items():
        for evaluated in refs.evaluations:
            ref = evaluated.evaluation
            group = open_store(ref)
            attrs = group.attrs
            pixel_defined = np.isfinite(attrs["metrics"].get("pixel_AUROC", float("nan")))
            maps = group["maps"][:] if "maps" in group and pixel_defined else None
            arrays = (group["index"][:], group["labels"][:], group["scores"][:])
            yield ScoredTestSet(ref.name, category, evaluated.row, int(attrs["seed"]), *arrays, maps)


def ingest_masks(categories: dict[str, CategoryRefs], category: str, index: np.ndarray) -> np.ndarray:
    """The category's ingest masks at rows ``index`` (its test images)."""
    return read_rows(open_store(categories[category].ingest)["masks"], index)
