"""What the benchmarks share: a median wall time after a warm-up, synchronised with the device."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> tuple[float, object]:
    """Median wall time of ``repeats`` runs after a warm-up; returns it with the last result. ``sync``
    waits for the device (``torch.cuda.synchronize``), so asynchronous kernels are counted."""
    out = fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out
