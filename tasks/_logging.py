"""Shared logging for stage tasks: one line per store, saying whether it was reused or computed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger

from cutswap.stores import StoreRef


def run_logged(stage: str, label: str, call: Callable[[], tuple[Any, bool]], items: int | None = None) -> Any:
    """Run a stage function and log what happened, with throughput when the stage computed."""
    logger = get_run_logger()
    start = time.perf_counter()
    ref, computed = call()
    seconds = time.perf_counter() - start
    where = ref.path if isinstance(ref, StoreRef) else ref
    if not computed:
        logger.info("%s %s: reused %s", stage, label, where)
    elif items:
        logger.info(
            "%s %s: computed in %.1f s (%.1f items/s) -> %s", stage, label, seconds, items / seconds, where
        )
    else:
        logger.info("%s %s: computed in %.1f s -> %s", stage, label, seconds, where)
    return ref
