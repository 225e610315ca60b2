"""Prefect task of the ingest stage."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from cutswap.pipeline.feasibility import check_feasible
from cutswap.pipeline.run_dataset import resolve_dataset
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.ingest import ingest_category
from cutswap.pipeline.stores import StoreRef
from tasks._logging import run_logged


@task(name="resolve-dataset", cache_policy=NONE)
def resolve(settings: Settings) -> tuple[Path, pd.DataFrame]:
    """Build the embedded dataset if needed, validate it and list its samples, and check what its image
    counts allow: a run they make impossible ends here; what a test set cannot measure is logged."""
    root, table = resolve_dataset(settings)
    for warning in check_feasible(settings, table):
        get_run_logger().warning(warning)
    return root, table


@task(name="ingest", cache_policy=NONE, task_run_name="ingest-{category}")
def ingest(settings: Settings, root: Path, category: str, table: pd.DataFrame, mode: str = "run") -> StoreRef:
    n = int((table["category"] == category).sum())
    return run_logged("ingest", category, lambda: ingest_category(settings, root, category, table, mode), n)
