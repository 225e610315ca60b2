"""Prefect task of the MLflow tracker: the run's report and trainings logged after the report
(``cutswap.pipeline.tracking``); TensorBoard's files are written by the report stage itself."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from cutswap.pipeline.results import CategoryRefs
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.tracking import log_mlflow


@task(name="mlflow", cache_policy=NONE)
def mlflow_run(settings: Settings, folder: Path, categories: dict[str, CategoryRefs]) -> str:
    """Log the run to ``tracking.mlflow_uri``; returns the MLflow run id."""
    run_id = log_mlflow(settings, folder, categories)
    get_run_logger().info(
        "MLflow run %s in experiment %s at %s",
        run_id,
        settings.tracking.mlflow_experiment,
        settings.tracking.mlflow_uri,
        extra={"console": True},
    )
    return run_id
