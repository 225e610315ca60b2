"""Whether this process was asked to stop (SIGINT or SIGTERM to its run), readable from any thread.

Why a flag of its own: a signal to the run's process group reaches the Dask workers at the same moment as
the run, and they die at once (Dask's workers do not handle it). Dask's event thread hears of their deaths
before the main thread has unwound to the pool's ``close``, so without this flag each death would be
reported as a worker that "died during" a training. ``flows.launch`` sets it from the signal's wake-up
byte, on its own thread, as soon as the signal arrives; the pool reads it.

When the run is ended at once (``flows.launch``: Ctrl-C twice, or no clean stop within the grace), what
registered with ``at_exit_now`` runs first: work the run started outside its process tree, its SLURM
jobs, is cancelled there.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

_REQUESTED = threading.Event()
_LAST_CALLS: list[Callable[[], None]] = []


def request() -> None:
    """Say that a stop was asked for; it stays asked for until the process ends."""
    _REQUESTED.set()


def requested() -> bool:
    return _REQUESTED.is_set()


def at_exit_now(call: Callable[[], None]) -> Callable[[], None]:
    """Have ``call`` run when the run is ended at once (Ctrl-C twice, or the grace after a signal ran
    out), before its child processes are killed: what must not outlive it elsewhere (SLURM jobs). Returns
    ``call``, for ``forget`` once what it would end has ended by itself."""
    _LAST_CALLS.append(call)
    return call


def forget(call: Callable[[], None]) -> None:
    """No longer run ``call`` at the end (its pool closed normally)."""
    with contextlib.suppress(ValueError):
        _LAST_CALLS.remove(call)


def last_calls() -> None:
    """Run the ``at_exit_now`` calls, newest first; none may stop the others."""
    for call in reversed(_LAST_CALLS):
        with contextlib.suppress(Exception):
            call()
