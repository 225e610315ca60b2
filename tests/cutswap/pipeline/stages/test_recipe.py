"""The recipe as data: stage modes from --stages/--force, and the progress totals of a run."""

from __future__ import annotations

import pytest

from cutswap.errors import CutswapError
from cutswap.pipeline.stages import STAGES, stage_modes, stage_tasks


def test_stage_modes_run_what_is_named_force_what_is_forced_and_look_up_the_rest():
    assert stage_modes(None, None) == dict.fromkeys(STAGES, "run")
    modes = stage_modes(["train", "evaluate", "report"], ["evaluate"])
    assert modes == {
        "ingest": "reuse",
        "saliency": "reuse",
        "cluster": "reuse",
        "pairs": "reuse",
        "train": "run",
        "evaluate": "force",
        "report": "run",
    }
    with pytest.raises(CutswapError, match=r"unknown stage\(s\) \['trian'\]"):
        stage_modes(["trian"], None)


def test_progress_totals_count_every_stage_task_and_every_cluster_job():
    # 2 categories x (4 precompute tasks + 3 method-seed pairs x (train, evaluate)) + the report;
    # 3 pairs x 2 job stages x 2 categories cluster jobs.
    assert stage_tasks(2, 3) == (2 * (4 + 3 * 2) + 1, 12)
    assert stage_tasks(1, 0) == (5, 0)
    # a variant with its own cluster and pairs stores adds two precompute tasks per category
    assert stage_tasks(2, 3, precomputed=5) == (2 * (1 + 5 + 3 * 2) + 1, 12)
