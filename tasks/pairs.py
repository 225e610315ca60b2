"""Prefect task of the pairs stage."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from cutswap.pipeline.parallel import DaskPool
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.pairs import pairs_category
from cutswap.pipeline.stores import StoreRef
from tasks._logging import run_logged


@task(name="pairs", cache_policy=NONE, task_run_name="pairs-{cluster.name}")
def pairs(settings: Settings, cluster: StoreRef, mode: str = "run", dask: DaskPool | None = None) -> StoreRef:
    """``dask``: the pool of Dask workers to shard the work over (None: in-process)."""
    return run_logged("pairs", cluster.name, lambda: pairs_category(settings, cluster, mode, dask))
