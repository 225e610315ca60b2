"""Shared logging for stage tasks: one line per store, saying whether it was reused or computed.

Lines go to the task's Prefect log (the UI, the run's log file) and, for the precompute stages and the
report, to the console; a job's lines (train, evaluate) go to the console's progress display instead
(``cutswap.app.console``), which also counts every stage task done. (Other records of the Prefect run
loggers, the engine's and a job's relayed lines, reach the console only from WARNING.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger

from cutswap.app import console
from cutswap.errors import CutswapError, StageFailed, one_line
from cutswap.pipeline.stages import PER_JOB
from cutswap.pipeline.stores import StoreRef, open_store


def relay_to(logger: Any) -> Callable[[int, str], None]:
    """Where a job's relayed lines go: the task's log, and the console from WARNING (the others' errors
    are hidden there: ``cutswap.app.console``)."""

    def relay(level: int, message: str) -> None:
        logger.log(level, message, extra={"console": level >= logging.WARNING})

    return relay


def run_logged(stage: str, label: str, call: Callable[[], tuple[Any, bool]], items: int | None = None) -> Any:
    """Run a stage function and log what happened, with throughput when the stage computed.

    Raises:
        StageFailed: the stage raised something other than a ``CutswapError`` (which already says what is
            wrong and where); the message names the stage, the item and the cause.
    """
    logger = get_run_logger()
    shown = console.display()
    job = stage in PER_JOB  # a job of the pool: the progress display shows it, the console does not
    key = f"{stage} {label}"
    if job:
        shown.job_started(key)
    else:
        shown.stage_started(key)
    start = time.perf_counter()
    try:
        ref, computed = call()
    except BaseException as exc:
        if job:
            shown.job_done(key, key, time.perf_counter() - start, "failed")
        if isinstance(exc, Exception) and not isinstance(exc, CutswapError):
            # A bug or a resource failure deep in the stage: said in one line naming where it happened
            # (the traceback stays in the run's log file).
            raise StageFailed(stage, label, one_line(exc)) from exc
        raise
    seconds = time.perf_counter() - start
    if computed and isinstance(ref, StoreRef):
        # The store's own compute time: the wall time above also counts the wait for a slot in the pool.
        seconds = float(open_store(ref).attrs["provenance"]["seconds"])
    where = ref.path if isinstance(ref, StoreRef) else ref
    extra = {"console": not job}
    if not computed:
        logger.info("%s %s: reused %s", stage, label, where, extra=extra)
    elif items:
        logger.info(
            "%s %s: computed in %.1f s (%.1f items/s) -> %s",
            stage,
            label,
            seconds,
            items / seconds,
            where,
            extra=extra,
        )
    else:
        logger.info("%s %s: computed in %.1f s -> %s", stage, label, seconds, where, extra=extra)
    shown.stage_done()
    if job:
        shown.job_done(key, key, seconds, "computed" if computed else "reused")
    return ref
