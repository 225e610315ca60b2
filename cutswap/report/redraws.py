"""Every evaluation re-scored on the same redraws of its category's test images (``cutswap.score.resample``),
the test-set noise that the comparisons (``cutswap.report.compare``) put into their intervals.

Input, one :class:`ScoredTestSet` per evaluation (read by ``cutswap.pipeline.report_inputs``), a
category's evaluations one after another::

    name      str               the evaluate store's name (for errors)
    category  str
    method    str
    seed      int
    index     int   (T,)        the test images' rows in the category's ingest store
    labels    int   (T,)        1 = anomalous
    scores    float (T,)        image scores
    maps      float (T, H, W)   anomaly maps, or None: no maps, or the stored pixel metrics are undefined

and the category's masks at ``index``, bool (T, H, W), asked for once per category and only when one of
its evaluations has maps. Output: one row per evaluation x redraw,
``category  method  seed  redraw  <metrics>``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cutswap.errors import StoreError
from cutswap.score.resample import (
    N_REDRAWS,
    image_metric_redraws,
    pixel_histograms,
    pixel_metric_redraws,
    redraws,
)


@dataclass(frozen=True)
class ScoredTestSet:
    """One evaluation's stored outputs on its category's test images (module docstring)."""

    name: str
    category: str
    method: str
    seed: int
    index: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    maps: np.ndarray | None = None


def _category(
    scored: Iterable[ScoredTestSet], masks: Callable[[np.ndarray], np.ndarray], n_redraws: int
) -> list[pd.DataFrame]:
    """One category's evaluations on the same redraws, drawn from the first one's labels.

    The same redraws for every method and seed is what makes the redraws' differences paired; so every
    evaluation must score the same test images, else its stores come from different ingests.
    """
    frames, counts, index, category_masks = [], None, None, None
    for ev in scored:
        if counts is None:
            index, counts = ev.index, redraws(ev.labels, n_redraws, seed=0)
        elif not np.array_equal(ev.index, index):
            raise StoreError(f"{ev.name}: its test images differ from the category's other evaluations")
        values = image_metric_redraws(ev.scores, ev.labels, counts)
        if ev.maps is not None:
            if category_masks is None:
                category_masks = masks(index)
            values |= pixel_metric_redraws(pixel_histograms(ev.maps, category_masks), counts)
        columns = {"category": ev.category, "method": ev.method, "seed": ev.seed}
        frames.append(pd.DataFrame({**columns, "redraw": np.arange(n_redraws), **values}))
    return frames


def redraw_test_sets(
    scored: Iterable[ScoredTestSet],
    masks: Callable[[str, np.ndarray], np.ndarray],
    n_redraws: int = N_REDRAWS,
) -> pd.DataFrame:
    """Every evaluation's metrics on ``n_redraws`` redraws of its test images (module docstring).

    Args:
        scored: the evaluations, a category's consecutive; read lazily, one at a time (maps are large).
        masks: ``masks(category, index)``, the category's ingest masks at those rows.
    """
    frames = []
    for category, group in itertools.groupby(scored, key=lambda ev: ev.category):
        frames += _category(group, lambda index, c=category: masks(c, index), n_redraws)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
