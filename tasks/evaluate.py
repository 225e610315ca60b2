"""Prefect task of the evaluate stage, as a pool job."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from cutswap.pipeline.parallel import DaskPool, run_job
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.evaluate import evaluate_run
from cutswap.pipeline.stores import StoreRef, open_store
from tasks._logging import relay_to, run_logged


@task(name="evaluate", cache_policy=NONE, task_run_name="evaluate-{train.name}")
def evaluate(
    settings: Settings, ingest: StoreRef, train: StoreRef, mode: str = "run", dask: DaskPool | None = None
) -> StoreRef:
    """``dask``: the pool that runs the job (None: in-process)."""
    logger = get_run_logger()
    job = (evaluate_run, settings, ingest, train, mode)
    name = f"evaluate {train.name}"  # as the console's progress lines name it (``run_logged``)
    ref = run_logged(
        "evaluate", train.name, lambda: run_job(*job, pool=dask, relay=relay_to(logger), name=name)
    )
    metrics = open_store(ref).attrs["metrics"]
    logger.info("%s: %s", train.name, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return ref
