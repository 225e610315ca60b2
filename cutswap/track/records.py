"""What a tracker is given of a run: one record per evaluation (a row's category and seed), plain data.

::

    TrackedEvaluation
        category, row, seed       the evaluation (row: a method or a variant, cutswap.pipeline.variants)
        params         {name: value}   the results.csv columns that are settings (method, steps, lr, ...)
        metrics        {name: float}   the evaluation's outcomes (image_AUROC, ..., :data:`METRICS`), finite
        log_columns    [str]           the training log's columns (step, loss, acc_negative, acc_normal,
        log            (steps, columns) lr, images_per_s); empty for a method that trains nothing

Built by :func:`evaluations` from ``results.csv`` and the training logs, so a training reused from an
earlier run is tracked like one computed now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cutswap.report.compare import METRICS as REPORT_METRICS

#: results.csv columns that are the evaluation's outcomes, logged as metrics: the metrics the report compares,
#: the decision threshold's measured precision, recall and false-positive rate, the training's time and speed.
#: The other plain values are settings, logged as params.
METRICS = (*REPORT_METRICS, "threshold", "threshold_precision", "threshold_recall", "threshold_fpr",
           "threshold_fp", "train_seconds", "train_images_per_s", "pair_fallback_rate")  # fmt: skip
#: results.csv columns that are neither (identifiers, keys, provenance of stores).
SKIPPED = ("category", "seed", "dataset")


@dataclass(frozen=True)
class TrackedEvaluation:
    """One evaluation as a tracker logs it (module docstring)."""

    category: str
    row: str
    seed: int
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    log_columns: list[str] = field(default_factory=list)
    log: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))

    @property
    def name(self) -> str:
        """``<category>/<row>/seed<seed>``: one name per evaluation, as a tracker's run name or folder."""
        return f"{self.category}/{self.row}/seed{self.seed}"


def _text(value: object) -> str:
    """A setting as text; a whole number read as a float (a column with NaN rows) without its ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_metric(column: str) -> bool:
    return column in METRICS


def evaluations(
    results: pd.DataFrame, logs: Mapping[tuple[str, str, int], tuple[list[str], np.ndarray]]
) -> list[TrackedEvaluation]:
    """One record per row of ``results`` (``results.csv``), with its training log from ``logs``
    (``(category, row, seed) -> (columns, array)``) where it has one."""
    out = []
    for r in results.to_dict(orient="records"):
        key = (str(r["category"]), str(r["method"]), int(r["seed"]))
        columns, log = logs.get(key, ([], np.empty((0, 0))))
        metrics = {
            c: float(v)
            for c, v in r.items()
            if _is_metric(c) and isinstance(v, int | float) and np.isfinite(v)
        }
        params = {
            c: _text(v)
            for c, v in r.items()
            if not _is_metric(c) and c not in SKIPPED and pd.notna(v) and v != ""
        }
        out.append(TrackedEvaluation(key[0], key[1], key[2], params, metrics, list(columns), np.asarray(log)))
    return out
