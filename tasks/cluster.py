"""Prefect task of the cluster stage."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from cutswap.pipeline.parallel import DaskPool
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.cluster import cluster_category
from cutswap.pipeline.stores import StoreRef
from tasks._logging import run_logged


@task(name="cluster", cache_policy=NONE, task_run_name="cluster-{saliency.name}")
def cluster(
    settings: Settings, saliency: StoreRef, mode: str = "run", dask: DaskPool | None = None
) -> StoreRef:
    """``dask``: the pool of Dask workers to shard the work over (None: in-process)."""
    return run_logged("cluster", saliency.name, lambda: cluster_category(settings, saliency, mode, dask))
