"""Prefect task of the evaluate stage, as a pool job."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from cutswap.pipeline.parallel import DaskPool, run_job
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.evaluate import evaluate_run
from cutswap.pipeline.stores import StoreRef, open_store
from tasks._logging import relay_to, run_logged


def _label(train: StoreRef, row: str | None) -> str:
    """The evaluation as the console names it: its train store's name, and the row when a variant's."""
    return train.name if row is None or f"-{row}" in train.name else f"{train.name} ({row})"


@task(name="evaluate", cache_policy=NONE, task_run_name="evaluate-{train.name} ({row})")
def evaluate(
    settings: Settings,
    ingest: StoreRef,
    train: StoreRef,
    mode: str = "run",
    dask: DaskPool | None = None,
    row: str | None = None,
) -> StoreRef:
    """``dask``: the pool that runs the job (None: in-process); ``row``: the row it is an evaluation of
    (a method, or a variant whose stores carry its method's name)."""
    logger = get_run_logger()
    label = _label(train, row)
    job = (evaluate_run, settings, ingest, train, mode)
    name = f"evaluate {label}"  # as the console's progress lines name it (``run_logged``)
    ref = run_logged("evaluate", label, lambda: run_job(*job, pool=dask, relay=relay_to(logger), name=name))
    metrics = open_store(ref).attrs["metrics"]
    logger.info("%s: %s", label, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return ref
