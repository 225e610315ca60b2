"""Prefect task of the saliency stage."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from cutswap.pipeline.parallel import DaskPool
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.saliency import saliency_category
from cutswap.pipeline.stores import StoreRef
from tasks._logging import run_logged


@task(name="saliency", cache_policy=NONE, task_run_name="saliency-{ingest.name}")
def saliency(
    settings: Settings, ingest: StoreRef, mode: str = "run", dask: DaskPool | None = None
) -> StoreRef:
    """``dask``: the pool of Dask workers to shard the work over (None: in-process)."""
    return run_logged("saliency", ingest.name, lambda: saliency_category(settings, ingest, mode, dask))
