"""A run's experiment trackers (``cutswap.track``), fed from its report folder and its stores.

The report stage writes TensorBoard's event files into the report folder (:func:`tracked`, then
``cutswap.track.tensorboard_events``); after the report, :func:`log_mlflow` logs the run to MLflow. Both read
``results.csv`` and the stored training logs (``cutswap.pipeline.report_inputs.training_logs``), so a
training reused from an earlier run is tracked like one computed now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cutswap.errors import CutswapError, one_line
from cutswap.pipeline.report_inputs import training_logs
from cutswap.pipeline.results import CategoryRefs
from cutswap.pipeline.settings import Settings
from cutswap.track.mlflow_runs import log_benchmark
from cutswap.track.records import TrackedEvaluation, evaluations


def tracked(results: pd.DataFrame, categories: dict[str, CategoryRefs]) -> list[TrackedEvaluation]:
    """Every evaluation of the run with its training log, as the trackers take it."""
    return evaluations(results, training_logs(categories))


def flat_settings(settings: Settings) -> dict[str, str]:
    """Every setting as ``section.name -> value`` (JSON for lists and mappings), as MLflow params."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value and prefix.count(".") < 1:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = value if isinstance(value, str) else json.dumps(value)

    walk("", json.loads(settings.model_dump_json()))
    return out


def log_mlflow(settings: Settings, folder: Path, categories: dict[str, CategoryRefs]) -> str:
    """The run in MLflow (``cutswap.track.mlflow_runs``), from the report at ``folder``; the run's id."""
    results = pd.read_csv(Path(folder) / "results.csv")
    uri = settings.tracking.mlflow_uri
    if uri is None:
        raise ValueError("tracking.mlflow_uri is not set")
    records = tracked(results, categories)
    try:
        return log_benchmark(uri, settings.tracking.mlflow_experiment, settings.run, flat_settings(settings),
                             records, Path(folder))  # fmt: skip
    except Exception as exc:  # MLflow's own, or the HTTP layer's: said in one line, the report stands
        raise CutswapError(
            f"tracking.mlflow_uri {uri}: logging failed after the report was written ({one_line(exc)}); "
            "rerun the same command to log the run (every store and the report are reused)"
        ) from exc
