"""Whether this process was asked to stop (SIGINT or SIGTERM to its run), readable from any thread.

Why a flag of its own: a signal to the run's process group reaches the Dask workers at the same moment as
the run, and they die at once (Dask's workers do not handle it). Dask's event thread hears of their deaths
before the main thread has unwound to the pool's ``close``, so without this flag each death would be
reported as a worker that "died during" a training. ``flows.launch`` sets it from the signal's wake-up
byte, on its own thread, as soon as the signal arrives; the pool reads it.
"""

from __future__ import annotations

import threading

_REQUESTED = threading.Event()


def request() -> None:
    """Say that a stop was asked for; it stays asked for until the process ends."""
    _REQUESTED.set()


def requested() -> bool:
    return _REQUESTED.is_set()
