"""Prefect task of the train stage: one classifier per (category, method, seed)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from cutswap.settings import Settings
from cutswap.stages.train import train_run
from cutswap.stores import StoreRef
from tasks._logging import run_logged


@task(name="train", cache_policy=NONE, task_run_name="train-{ingest.name}-{method}-s{seed}")
def train(
    settings: Settings, ingest: StoreRef, method: str, seed: int, pairs: StoreRef | None, mode: str = "run"
) -> StoreRef:
    logger = get_run_logger()
    total = settings.train.steps

    def progress(entry: dict[str, float]) -> None:
        logger.info(
            "step %d/%d loss %.4f acc(neg) %.2f acc(normal) %.2f %.0f img/s",
            entry["step"], total, entry["loss"], entry["acc_negative"], entry["acc_normal"], entry["images_per_s"],
        )  # fmt: skip

    label = f"{ingest.name}/{method}/seed {seed}"
    return run_logged(
        "train",
        label,
        lambda: train_run(settings, ingest, method, seed, pairs, mode, progress, log_line=logger.info),
    )
