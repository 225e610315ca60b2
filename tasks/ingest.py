"""Prefect task of the ingest stage."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from cutswap.pipeline.datasets import resolve_dataset
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.ingest import ingest_category
from cutswap.pipeline.stores import StoreRef
from tasks._logging import run_logged


@task(name="resolve-dataset", cache_policy=NONE)
def resolve(settings: Settings) -> tuple[Path, pd.DataFrame]:
    """Build the embedded dataset if needed, then validate the dataset and list its samples."""
    return resolve_dataset(settings)


@task(name="ingest", cache_policy=NONE, task_run_name="ingest-{category}")
def ingest(settings: Settings, root: Path, category: str, table: pd.DataFrame, mode: str = "run") -> StoreRef:
    n = int((table["category"] == category).sum())
    return run_logged("ingest", category, lambda: ingest_category(settings, root, category, table, mode), n)
