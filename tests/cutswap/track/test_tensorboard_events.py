"""TensorBoard event files of a run's evaluations, read back with TensorBoard's own event reader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cutswap.track.records import evaluations
from cutswap.track.tensorboard_events import write_events

pytest.importorskip("tensorboard", reason="the tracking extra: pip install -e '.[tracking]'")

COLUMNS = ["step", "loss", "acc_negative", "acc_normal", "lr", "images_per_s"]


def _results() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "category": "bottle",
                "method": "cutswap",
                "seed": 0,
                "image_AUROC": 0.9,
                "steps": 40,
                "lr": 0.03,
                "image_size": 64,
            },
            {"category": "bottle", "method": "patchcore", "seed": 0, "image_AUROC": 0.95, "steps": np.nan},
        ]
    )


def test_every_curve_and_metric_reads_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    log = np.array(
        [[0, 1.0, 0.5, 0.5, 0.03, 100.0], [20, 0.5, 0.8, 0.9, 0.02, 110.0], [40, 0.2, 0.9, 0.95, 0.0, 120.0]]
    )
    records = evaluations(_results(), {("bottle", "cutswap", 0): (COLUMNS, log)})
    assert [r.name for r in records] == ["bottle/cutswap/seed0", "bottle/patchcore/seed0"]
    assert records[0].params["steps"] == "40" and "steps" not in records[1].params  # NaN is no setting
    assert records[0].params["image_size"] == "64" and set(records[0].metrics) == {"image_AUROC"}
    folders = write_events(tmp_path, records)
    trained = EventAccumulator(str(folders[0]), size_guidance={SCALARS: 0})
    trained.Reload()
    assert set(trained.Tags()["scalars"]) == {f"train/{c}" for c in COLUMNS[1:]} | {"eval/image_AUROC"}
    loss = trained.Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(0, 1.0), (20, 0.5), (40, pytest.approx(0.2))]
    assert [(e.step, round(e.value, 6)) for e in trained.Scalars("eval/image_AUROC")] == [(40, 0.9)]
    untrained = EventAccumulator(str(folders[1]), size_guidance={SCALARS: 0})
    untrained.Reload()
    assert untrained.Tags()["scalars"] == ["eval/image_AUROC"]  # nothing trained, no curve
