"""Running the flow from a command line (``cutswap run``, ``python -m flows.benchmark``): the same options,
and every input checked before Prefect or Dask start.

``check`` reads the preset and the overrides (``cutswap.pipeline.settings.load_settings``), the stage
names, what the run needs from the machine (``cutswap.pipeline.preflight``: writable roots, a scheduler
that answers, ImageNet weights at hand), the dataset's root and layout
(``cutswap.pipeline.run_dataset.resolve_dataset``) and what its image counts allow
(``cutswap.pipeline.feasibility``), without importing Prefect, so a typo or a wrong path ends in about a
second with one line naming the setting or file and the fix, and exit code 2 (a traceback only with
``--debug``). ``execute`` then runs the flow in-process inside the
console session (``cutswap.app.console``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutswap.app import stopping
from cutswap.errors import CutswapError
from cutswap.pipeline.stages import STAGES, stage_modes


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="configs/demo.yaml", help="YAML preset (configs/)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=50"
    )
    parser.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--force", default=None, help="comma-separated stages to recompute")
    parser.add_argument("--debug", action="store_true", help="tracebacks on errors")


@dataclass(frozen=True)
class Checked:
    """A run's inputs, checked."""

    settings: Any
    preset: str
    overrides: dict[str, str]
    stages: list[str] | None
    force: list[str] | None


def _split(value: str | None) -> list[str] | None:
    return [x.strip() for x in value.split(",") if x.strip()] if value else None


def check(args: argparse.Namespace) -> Checked:
    """The settings, stage names and dataset of a run, checked; ``CutswapError`` names what is wrong.

    Each check imports what it needs only once the checks before it passed: a mistyped setting ends
    before pandas (the dataset's table) is imported, let alone torch or Prefect.
    """
    from cutswap.pipeline.settings import load_settings

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CutswapError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=50")
        overrides[key] = value
    stages, force = _split(args.stages), _split(args.force)
    stage_modes(stages, force)
    settings = load_settings(args.preset, overrides)
    from cutswap.pipeline.feasibility import check_feasible
    from cutswap.pipeline.preflight import check_environment
    from cutswap.pipeline.run_dataset import resolve_dataset

    check_environment(settings)
    _, table = resolve_dataset(settings)
    check_feasible(settings, table)  # its warnings are the flow's to log (tasks.ingest.resolve), once
    return Checked(settings, args.preset, overrides, stages, force)


def fail(exc: BaseException, debug: bool, log: Path | None = None, code: int = 2) -> int:
    """Say what went wrong in one line (the traceback too with ``--debug``); returns ``code``."""
    if debug:
        traceback.print_exception(exc)
    print(f"error: {exc}", file=sys.stderr)
    if log is not None and log.is_file():
        print(f"full log: {log}", file=sys.stderr)
    return code


#: Seconds a run has, after SIGINT or SIGTERM, to mark its flow run, close its pool and exit cleanly
#: before it and its child processes are ended at once.
STOP_GRACE = 10.0
#: Seconds after the first SIGINT from which a second one ends the run at once (before: the same one).
REPEAT_SECONDS = 1.0


class _Stop:
    """SIGINT and SIGTERM while a run is in flight.

    The first signal interrupts the main thread (``KeyboardInterrupt``; during the flow Prefect's own
    SIGTERM handler raises ``TerminationSignal`` instead), so the flow run is marked crashed and the
    pool closes on the way out, and it starts a deadline: after ``STOP_GRACE`` seconds the process and
    its children (Dask workers, a training's torchrun) are killed. The deadline is armed from the signal's
    wake-up byte, which Python writes for every signal it handles, so it holds while Prefect's handler
    stands in for ours. A second SIGINT (Ctrl-C twice, ``REPEAT_SECONDS`` or more apart) ends the run at
    once.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def __enter__(self) -> _Stop:
        self._handlers = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        self._wakeup = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, daemon=True, name="stop-deadline").start()
        return self

    def __exit__(self, *exc: object) -> None:
        signal.set_wakeup_fd(self._wakeup)
        for s, handler in self._handlers.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum, self._first = signum, time.monotonic()
            stopping.request()
            raise KeyboardInterrupt
        # Asked twice: a second Ctrl-C, a person's, comes a while after the first. Prefect re-sends SIGTERM
        # to itself, so not that one; and a SIGINT to the run's process group was seen to reach this
        # process a second time within a tenth of a second (under a loaded 2-core machine), which is the
        # same request, not a second one.
        if signum == signal.SIGINT and time.monotonic() - self._first >= REPEAT_SECONDS:
            self._end_now("stopping at once, as asked twice")

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._read, 64)
            except OSError:
                return
            received = [b for b in data if b in (signal.SIGINT, signal.SIGTERM)]
            if received:
                break
        self.signum = self.signum or received[0]
        stopping.request()  # before the main thread gets to it: the workers are dying now
        time.sleep(STOP_GRACE)
        self._end_now(f"the run did not stop within {STOP_GRACE:.0f} s of {signal.Signals(self.signum).name}")

    def _end_now(self, why: str) -> None:
        import psutil

        _say(f"\n{why}: ending it and its child processes now\n")
        stopping.last_calls()
        children = [c for c in psutil.Process().children(recursive=True) if not _is_resource_tracker(c)]
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(children, timeout=3)
        os._exit(128 + (self.signum or signal.SIGTERM))


def _say(text: str) -> None:
    """Write ``text`` to file descriptor 2 itself: the last words of a process about to ``os._exit``, so
    nothing buffered in Python stands between them and the terminal."""
    with contextlib.suppress(OSError):
        sys.stderr.flush()
        os.write(2, text.encode())


def _is_resource_tracker(process: Any) -> bool:
    """Python's (or joblib's) multiprocessing resource tracker: left to end by itself. It ignores SIGINT
    and SIGTERM and exits when the last process that shares it has gone, unlinking the semaphores those
    left behind (a killed Dask worker's Blosc lock). Killed with them, it leaves those in /dev/shm, and the
    first of this process's threads to unregister one starts a new tracker that prints a ``KeyError``
    traceback for each name it never saw."""
    with contextlib.suppress(Exception):
        return "resource_tracker" in " ".join(process.cmdline())
    return False


def execute(
    checked: Checked, flow: Callable[..., str], debug: bool = False, owns_process: bool = False
) -> int:
    """Run the flow in-process, in the console session, reporting to ``flows.api.run_api``'s API.

    Returns:
        0 when every job finished; 1 when the run failed (jobs failed: the report holds the others;
        or a stage failed); 2 on a ``CutswapError`` about input or settings; 128 + the signal's number
        when SIGINT or SIGTERM stopped it.

    ``owns_process``: the command ends the process after the run, so the console stays ours until the exit
    (Prefect logs at exit), signals are handled here (``_Stop``), and the temporary API serves until then.
    """
    from cutswap import roots
    from cutswap.app import console
    from cutswap.errors import RunFailed
    from flows.api import run_api

    log = console.log_path(checked.settings.reports_root, checked.settings.run).resolve()
    stop = _Stop() if owns_process else contextlib.nullcontext()
    started = False  # the flow began: its log file says more
    try:
        with stop, console.session(debug, restore=not owns_process), run_api(stop_on_exit=not owns_process):
            started = True
            folder = Path(flow(checked.preset, checked.overrides, checked.stages, checked.force)).resolve()
    except RunFailed as exc:
        return fail(exc, debug, log if started else None, code=1)
    except CutswapError as exc:
        return fail(exc, debug, log if started else None)
    except BaseException as exc:
        signum = getattr(stop, "signum", None) or getattr(exc, "signal", None)
        if signum is None and not isinstance(exc, KeyboardInterrupt):
            raise
        name = signal.Signals(signum or signal.SIGINT).name
        _say(
            f"\nstopped by {name}: the flow run is marked crashed; complete stores are kept and the next "
            f"run reuses them. Full log: {log}\n"
        )
        return 128 + (signum or signal.SIGINT)
    page = folder / "index.html"
    print(f"\nDone. Report: {folder}/summary.md" + (f" and {page}" if page.is_file() else ""))
    if not roots.is_local(root := checked.settings.reports_root):  # built on this host, then uploaded
        print(
            f"In the bucket: {roots.join(root, checked.settings.run)}/ (index.html, summary.md, run.log, ...)"
        )
    print(f"Full log: {log}")
    return 0


def main(
    doc: str,
    load_flow: Callable[[], Callable[..., str]],
    argv: list[str] | None = None,
    owns_process: bool = True,
) -> int:
    """``python -m flows.benchmark``: its options, described by the first paragraph of ``doc``."""
    parser = argparse.ArgumentParser(prog="python -m flows.benchmark", description=doc.split("\n\n")[0])
    add_run_arguments(parser)
    return run(parser.parse_args(argv), load_flow, owns_process)


def run(
    args: argparse.Namespace, load_flow: Callable[[], Callable[..., str]], owns_process: bool = False
) -> int:
    """``check``, then ``load_flow()`` (the import of Prefect), then ``execute``."""
    try:
        checked = check(args)
    except CutswapError as exc:
        return fail(exc, args.debug)
    return execute(checked, load_flow(), args.debug, owns_process)
