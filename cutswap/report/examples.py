"""The examples figure of one evaluation: its most and least anomalous test images of each class.

What it is drawn from (read by ``cutswap.pipeline.report_inputs``: only the picked images and maps)::

    ExampleSet
        evaluation   Evaluation           the seed shown (``cutswap.report.picking.representative``)
        picked       list[PickedImage]    one per ``cutswap.report.figures.extremes`` pick, in its order
        normal_max   float | None         the largest map value over the normal test images; only read
                                          when the store has maps but records no pixel threshold
    PickedImage
        pick           Pick               position in the evaluation's arrays, class, end, score
        image          uint8 (S, S, 3)    the ingested test image
        mask           bool  (S, S)       its ingested mask (all False where the dataset has none)
        has_mask_file  bool               whether the dataset has a mask file for it
        defect_type    str                its sample table's defect type
        amap           float (S, S)       its stored anomaly map (divided by ``map_scale``), or None
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cutswap.report import figures as plots
from cutswap.report.captions import evaluation_label, examples_ref
from cutswap.report.html import FigureRef
from cutswap.report.picking import Evaluation


@dataclass(frozen=True)
class PickedImage:
    """One picked test image with what the stores hold about it (module docstring)."""

    pick: plots.Pick
    image: np.ndarray
    mask: np.ndarray
    has_mask_file: bool
    defect_type: str
    amap: np.ndarray | None


@dataclass(frozen=True)
class ExampleSet:
    """The picked test images of one evaluation (module docstring)."""

    evaluation: Evaluation
    picked: list[PickedImage]
    normal_max: float | None = None


def _row(picked: PickedImage, score_threshold: float | None) -> plots.Example:
    """One row of the figure. An anomalous image whose dataset has no mask file gets no mask panel (an
    empty one would claim the defect covers nothing); a normal image's empty mask is the truth."""
    pick = picked.pick
    no_mask = pick.label == 1 and not picked.has_mask_file
    flagged = ""
    if score_threshold is not None:
        flagged = " · flagged" if pick.score > score_threshold else " · passed"
    defect = f"{picked.defect_type} · " if pick.label == 1 and picked.defect_type else ""
    return plots.Example(
        picked.image,
        None if picked.amap is None else picked.amap.astype(np.float32),
        None if no_mask else picked.mask.astype(bool),
        f"{pick.description}\n{defect}score {pick.score:.3g}{flagged}",
    )


def draw_examples(path: Path, category: str, examples: ExampleSet) -> FigureRef:
    """The examples figure of one evaluation, on the display scale and with the pixel threshold it records.

    The maps are stored divided by the test maximum (``map_scale``). Drawn on that scale, every image but
    the hottest looks cold; the display scale is therefore what a normal image reaches: the store's
    ``holdout_map_max`` (held-out normal training images) when recorded, which is also the predicted-mask
    threshold (a pixel above anything normal), else the largest map value over the normal test images
    (for display only; no predicted mask is drawn then).
    """
    ev = examples.evaluation
    threshold = ev.pixel_threshold
    vmax = threshold if threshold is not None else examples.normal_max
    rows = [_row(picked, ev.score_threshold) for picked in examples.picked]
    plots.examples_figure(path, rows, f"{category}: {evaluation_label(ev)}", vmax or 1.0, threshold)
    return examples_ref(path.name, category, ev)
