"""Prefect task of the train stage: one classifier per (category, method, seed), as a pool job."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import task_run

from cutswap.app import console
from cutswap.pipeline.parallel import DaskPool, run_job
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.train import progress_line, train_run
from cutswap.pipeline.stores import StoreRef
from tasks._logging import relay_to, run_logged


def _run_name() -> str:
    """The task run's name: ``train-<category>-<row>-s<seed>``."""
    p = task_run.parameters
    return f"train-{p['ingest'].name}-{p.get('row') or p['method']}-s{p['seed']}"


@task(name="train", cache_policy=NONE, task_run_name=_run_name)
def train(
    settings: Settings,
    ingest: StoreRef,
    method: str,
    seed: int,
    pairs: StoreRef | None,
    mode: str = "run",
    dask: DaskPool | None = None,
    row: str | None = None,
) -> StoreRef:
    """``dask``: the pool that runs the job (None: in-process). Its progress lines come to this log.
    ``row``: the row it trains for (a variant's name; default the method's).

    A data-parallel job (``train.nproc > 1``) on a pool by address is a job asking one worker for
    ``nproc`` GPUs (start such workers with ``--resources GPU=<n>`` and n visible devices); on a local
    pool, whose workers own one GPU each, it runs here, where its torchrun launch takes every GPU.
    """
    logger = get_run_logger()
    nproc = settings.train.nproc
    pool = dask if nproc == 1 or (dask is not None and dask.address is not None) else None
    label = f"{ingest.name}/{row or method}/seed {seed}"
    total = settings.train.steps

    def step(entry: dict) -> None:
        """A training step, on the console's progress display (not as a console line: see _logging)."""
        rate = entry["images_per_s"]
        console.display().job_step(f"train {label}", f"train {label}", entry["step"], total, rate)

    def log_step(entry: dict) -> None:
        logger.info(progress_line(entry, total), extra={"console": False})
        step(entry)

    # On the pool, the library's own progress lines are relayed (their entries to the display); here,
    # they go straight to this log.
    progress = None if pool else log_step
    log_line = None if pool else logger.info
    job = (train_run, settings, ingest, method, seed, pairs, mode, progress, log_line)
    return run_logged(
        "train",
        label,
        lambda: run_job(
            *job, pool=pool, relay=relay_to(logger), name=f"train {label}", progress=step, gpus=nproc
        ),
    )
