"""Which methods and which of their seeds the report's pictures show.

Plain inputs only: the results table (``results.csv``, one row per category x method x seed, with
``image_AUROC`` as a fraction) and, per category, its evaluations as :class:`Evaluation` (read from the
evaluate stores by ``cutswap.pipeline.report_inputs``)::

    method           str             the method's registry name
    seed             int
    auroc            float           the stored image AUROC (NaN when undefined)
    scores, labels   float, int (T,) image scores (larger = more anomalous) and 1 = anomalous
    key              str             the evaluate store's key, to read the few maps shown from it
    score_threshold  float | None    the recorded image threshold, None when none or not finite
    pixel_threshold  float | None    the recorded pixel threshold on the stored map scale, None without one
    has_maps         bool            whether the store holds anomaly maps

A page shows a few pictures per category, so it must choose: the methods a reader wants to see side by
side (:func:`shown_methods`) and, per method, the seed that shows what it typically does
(:func:`representative`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cutswap.method.registry import UNTRAINED_METHODS
from cutswap.report.compare import BASELINE


@dataclass(frozen=True)
class Evaluation:
    """One evaluate store as the figures need it (module docstring); scores and labels are small, so read
    whole, the maps are not: only the few shown are read, by ``key``."""

    method: str
    seed: int
    auroc: float
    scores: np.ndarray
    labels: np.ndarray
    key: str
    score_threshold: float | None = None
    pixel_threshold: float | None = None
    has_maps: bool = False


def by_method(evaluations: list[Evaluation]) -> dict[str, list[Evaluation]]:
    """Evaluations by method, in the order the run lists them, each method's sorted by seed: the order the
    legends and panels follow."""
    out: dict[str, list[Evaluation]] = {}
    for evaluation in evaluations:
        out.setdefault(evaluation.method, []).append(evaluation)
    return {m: sorted(evs, key=lambda e: e.seed) for m, evs in out.items()}


def representative(evaluations: list[Evaluation]) -> Evaluation:
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
