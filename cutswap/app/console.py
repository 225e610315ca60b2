"""What a person sees of a run: each event once, a live progress display, and the run's full log in a file.

* **Log lines** (``session``): the console handlers of the root logger (Prefect's, Python's) give way to
  one ``ConsoleHandler`` for the session. It shows ``cutswap`` records from INFO and every other library's
  (Dask, Prefect, ...) from WARNING; a record with ``extra={"console": True}`` is shown (the run's own
  lines through Prefect's run logger), one with ``console: False`` is not (a training step: the progress
  display shows it). A warning or error (Python's warnings included) is said once per session (a fallback
  a run meets in every category, or that several processes log). Tracebacks only with ``debug``.
* **The run's log file** (``run``): every record from INFO (DEBUG for ``cutswap``), Dask's and Prefect's
  included, with tracebacks, in ``<reports_root>/<run>/run.log``. The report stage replaces its folder
  whole, so the file is written beside it (``.<run>.run.log.tmp-<pid>-<token>``) and moved in when the
  run ends; under a URL reports_root it is built in this host's folder for it and uploaded then.
* **Progress** (``Display``): stage tasks done, jobs done of total, each running training's steps and
  throughput and an estimate of the time left: a ``rich`` live display on a terminal, plain lines
  elsewhere (CI, a Prefect worker, a pipe): one per finished job, and at most one per running job every
  ``interval`` seconds.
* **Failures** are said once, by the command when the run ends (``flows.launch``): the errors that
  Prefect's engine and Dask's workers log about the same exception reach the log file only.

No Prefect here: ``tasks/`` and ``flows/`` call it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cutswap import atomic

#: A command's exit status when its reader left early (``cutswap runs | head -1``): 128 + SIGPIPE, what a
#: shell reports for ``yes | head -1``, which the signal ends.
CLOSED_STDOUT_STATUS = 128 + 13

#: Loggers whose Python handlers write straight to a terminal and bypass the root logger.
_OWN_HANDLERS = ("distributed",)

#: Loggers whose errors repeat a failure that the run reports itself, once, when it ends: a task's
#: exception, logged again by Prefect's engine for the task, its state and the flow, and by the Dask
#: worker that ran the job. They go to the log file only.
_REPEATERS = ("prefect.task_runs", "prefect.flow_runs", "prefect.flow_engine", "distributed.worker")

#: Dask's records that the run says better itself, by logger and the start of the message: a worker's death
#: (``cutswap.pipeline.parallel.pool`` names the job it ran and what happens to it), and a job failed by
#: its workers' deaths (the run's last line says so). They go to the log file only.
_SAID_BY_THE_RUN = (
    ("distributed.nanny", "Restarting worker"),
    ("distributed.scheduler", "Task %s marked as failed because %d workers died"),
)


def _without_message(record: logging.LogRecord) -> str | None:
    """What the console says of a record whose message is empty: Dask logs ``logger.exception(exc)``
    (``distributed.utils.log_errors``), and some exceptions have no message. The one a run meets is the
    ``CancelledError`` of the client's reconnection, cancelled when the scheduler is gone and the client
    closes: a bare ``ERROR`` line, nothing to act on (the run says the scheduler was lost), so None: not
    said. Another exception is named with its logger. The log file keeps the record and its traceback.
    """
    import asyncio
    import concurrent.futures

    exc = record.exc_info[1] if record.exc_info else None
    if exc is None or isinstance(exc, asyncio.CancelledError | concurrent.futures.CancelledError):
        return None
    return f"{type(exc).__name__} (from {record.name})"


def _is_terminal_handler(handler: logging.Handler) -> bool:
    """Prefect's console handler, or a plain stream handler on the process's stdout or stderr."""
    if type(handler).__name__ == "PrefectConsoleHandler":
        return True
    if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
        return False
    return handler.stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)


def _clock(record: logging.LogRecord) -> str:
    return time.strftime("%H:%M:%S", time.localtime(record.created))


class ConsoleHandler(logging.Handler):
    """The one console handler of a session: the records a person needs, once each (see the module)."""

    def __init__(self, display: Display, debug: bool = False) -> None:
        super().__init__(logging.DEBUG if debug else logging.INFO)
        self.display, self.debug = display, debug
        self._said: set[str] = set()
        self._lock_said = threading.Lock()

    def shown(self, record: logging.LogRecord) -> bool:
        flag = getattr(record, "console", None)
        if flag is not None:
            return bool(flag)
        if record.levelno >= logging.ERROR and record.name.startswith(_REPEATERS):
            return False
        if any(record.name == name and str(record.msg).startswith(start) for name, start in _SAID_BY_THE_RUN):
            return False
        return record.levelno >= logging.WARNING or record.name.split(".")[0] == "cutswap"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not self.shown(record):
                return
            message = record.getMessage()
            if not message.strip() and (message := _without_message(record)) is None:
                return
            if record.levelno >= logging.WARNING:
                with self._lock_said:
                    if message in self._said:
                        return
                    self._said.add(message)
            if not self.debug:
                message = message.split("\n", 1)[0]  # a failed task's message may hold a traceback
            level = "" if record.levelno == logging.INFO else f"{record.levelname} "
            text = f"{_clock(record)} {level}{message}"
            if self.debug and record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.display.print(text)
        except Exception:
            self.handleError(record)


class _FileFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(where)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        run = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        record.where = f" [{run}]" if run else ""
        return super().format(record)


@dataclass
class _Job:
    label: str
    started: float
    step: float = 0.0
    total: float = 0.0
    rate: float = 0.0
    printed: float = 0.0
    row: Any = None  # the rich task id of its progress bar


@dataclass
class Display:
    """Progress of one run, fed from any thread (tasks, Dask's event thread).

    Args:
        stream: where it writes (default: stderr, where the log lines go too).
        live: a ``rich`` live display; None: when ``stream`` is a terminal.
        interval: plain mode: least seconds between two step lines of one job.
        clock: the time source (tests pass a fake one).
    """

    stream: TextIO | None = None
    live: bool | None = None
    interval: float = 10.0
    clock: Any = time.monotonic
    stages_total: int = 0
    stages_done: int = 0
    jobs_total: int = 0
    jobs_done: int = 0
    current: str = ""
    _jobs: dict[str, _Job] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _first_job: float | None = None
    _progress: Any = None
    _rows: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stream = self.stream or sys.stderr
        if self.live is None:
            self.live = bool(getattr(self.stream, "isatty", lambda: False)())

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self, stages_total: int, jobs_total: int) -> None:
        with self._lock:
            self.stages_total, self.jobs_total = stages_total, jobs_total
            if self.live and self._progress is None:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                )

                self._progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(bar_width=24),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[note]}"),
                    TimeElapsedColumn(),
                    console=Console(file=self.stream),
                    redirect_stdout=False,
                    redirect_stderr=False,
                )
                self._rows["stages"] = self._progress.add_task("stages", total=stages_total or None, note="")
                self._rows["jobs"] = self._progress.add_task("jobs", total=jobs_total or None, note="")
                self._progress.start()

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None

    def print(self, text: str) -> None:
        """A log line: above the live display, or as a plain line."""
        with self._lock:
            if self._progress is not None:
                self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    # -- events --------------------------------------------------------------------------------------------
    def stage_started(self, label: str) -> None:
        with self._lock:
            self.current = label
            self._refresh()

    def stage_done(self) -> None:
        with self._lock:
            self.stages_done += 1
            self._refresh()

    def job_step(self, key: str, label: str, step: float, total: float, rate: float) -> None:
        """A training job's step ``step`` of ``total`` at ``rate`` images/s."""
        with self._lock:
            now = self.clock()
            job = self._jobs.get(key)
            if job is None:
                job = self._jobs[key] = _Job(label, now, printed=now)
                self._first_job = self._first_job if self._first_job is not None else now
            job.step, job.total, job.rate = step, total, rate
            if self._progress is not None:
                if job.row is None:
                    job.row = self._progress.add_task(f"  {label}", total=total or None, note="")
                self._progress.update(job.row, completed=step, total=total or None, note=f"{rate:.0f} img/s")
                self._refresh()
            elif now - job.printed >= self.interval:
                job.printed = now
                self._line(f"{label}: step {step:.0f}/{total:.0f}, {rate:.0f} img/s")

    def job_started(self, key: str) -> None:
        with self._lock:
            self._first_job = self._first_job if self._first_job is not None else self.clock()

    def job_done(self, key: str, label: str, seconds: float, outcome: str = "done") -> None:
        with self._lock:
            job = self._jobs.pop(key, None)
            if job is not None and job.row is not None and self._progress is not None:
                self._progress.remove_task(job.row)
            self.jobs_done += 1
            if self._progress is not None:
                self._refresh()
            else:
                self._line(f"{label}: {outcome}" + (f" in {seconds:.1f} s" if outcome != "reused" else ""))

    # -- internals -----------------------------------------------------------------------------------------
    def eta(self) -> float | None:
        """Seconds left, from the jobs' pace so far (finished jobs and running trainings' steps)."""
        with self._lock:
            if self._first_job is None or not self.jobs_total:
                return None
            running = sum(j.step / j.total for j in self._jobs.values() if j.total)
            done = self.jobs_done + running
            if done <= 0:
                return None
            return (self.clock() - self._first_job) * max(self.jobs_total - done, 0) / done

    def _left(self) -> str:
        eta = self.eta()
        if eta is None or self.jobs_done >= self.jobs_total:
            return ""
        return f"about {eta / 60:.0f} min left" if eta >= 90 else f"about {eta:.0f} s left"

    def _refresh(self) -> None:
        if self._progress is None:
            return
        self._progress.update(
            self._rows["stages"], completed=self.stages_done, note=self.current and f"now: {self.current}"
        )
        self._progress.update(self._rows["jobs"], completed=self.jobs_done, note=self._left())

    def _line(self, text: str) -> None:
        left = self._left()
        jobs = (
            f"[{self.jobs_done}/{self.jobs_total} jobs{', ' + left if left else ''}] "
            if self.jobs_total
            else ""
        )
        self.print(f"{time.strftime('%H:%M:%S')} {jobs}{text}")


class _NoDisplay(Display):
    """Outside a run: events go nowhere."""

    def print(self, text: str) -> None:
        pass

    def _line(self, text: str) -> None:
        pass


#: The display of the process's one session, if any (the tasks' threads read it).
_SESSION: list[Display] = []

#: Whether that session belongs to a command that ends the process after it (``session(restore=False)``).
_OWNS_PROCESS: list[bool] = []


def display() -> Display:
    """The display of the running session, or one that discards everything."""
    return _SESSION[0] if _SESSION else _NoDisplay(live=False)


#: What ``_route_own_handlers`` changed, by logger name: the logger, its ``propagate`` and the terminal
#: handlers it took off.
_OwnHandlers = dict[str, tuple[logging.Logger, bool, list[logging.Handler]]]


def _detach_terminal_handlers(root: logging.Logger) -> list[tuple[int, logging.Handler]]:
    """Take the terminal handlers off the root logger; return each with its position.

    Why: Prefect's console handler (or a plain stream handler) would print every record again, unfiltered,
    beside the session's. The positions let a session that restores put them back where they were.
    """
    removed = [(i, h) for i, h in enumerate(root.handlers) if _is_terminal_handler(h)]
    for _, h in removed:
        root.removeHandler(h)
    return removed


def _reattach_terminal_handlers(root: logging.Logger, removed: list[tuple[int, logging.Handler]]) -> None:
    """Put back what ``_detach_terminal_handlers`` took, each at its position (the lowest first, so that
    every position is the one it had)."""
    for i, h in removed:
        root.handlers.insert(i, h)


def _route_own_handlers() -> _OwnHandlers:
    """Take the terminal handlers off the loggers of ``_OWN_HANDLERS`` and let their records propagate.

    Why: Dask's stderr handler, when it set one up, writes straight to the terminal: past the session's
    handler, which says each warning once and leaves out what the run says itself, and past the run's log
    file. Through the root logger its records reach both.
    """
    own: _OwnHandlers = {}
    for name in _OWN_HANDLERS:
        lg = logging.getLogger(name)
        own[name] = (lg, lg.propagate, [h for h in lg.handlers if _is_terminal_handler(h)])
    for lg, _, handlers in own.values():
        for h in handlers:
            lg.removeHandler(h)
        lg.propagate = True
    return own


def _restore_own_handlers(own: _OwnHandlers) -> None:
    """Undo ``_route_own_handlers``: each logger's handlers and ``propagate`` as they were."""
    for lg, propagate, handlers in own.values():
        lg.propagate = propagate
        for h in handlers:
            lg.addHandler(h)


def _cutswap_from_info() -> tuple[logging.Logger, int]:
    """Let the ``cutswap`` logger pass INFO records; return it and the level it had, to restore.

    Why: a process that configured no logging has the root at WARNING, which drops the run's own INFO lines
    before any handler, the console's or the log file's, sees them. A level already at INFO or below (DEBUG)
    is kept.
    """
    cutswap = logging.getLogger("cutswap")
    level = cutswap.level
    if cutswap.getEffectiveLevel() > logging.INFO:
        cutswap.setLevel(logging.INFO)
    return cutswap, level


@contextlib.contextmanager
def session(
    debug: bool = False, stream: TextIO | None = None, live: bool | None = None, restore: bool = True
) -> Iterator[Display]:
    """The console of this process while it runs: see the module. Re-entrant: an inner call (the flow,
    inside the command line's session) reuses the outer one. ``restore=False`` (a command that owns its
    process) keeps the console handler afterwards, for what Prefect logs at exit."""
    if _SESSION:
        yield _SESSION[0]
        return
    shown = Display(stream=stream, live=live)
    handler = ConsoleHandler(shown, debug)
    root = logging.getLogger()
    removed = _detach_terminal_handlers(root)
    own = _route_own_handlers()
    root.addHandler(handler)
    logging.captureWarnings(True)  # Python warnings too: once each, and in the log file
    cutswap, level = _cutswap_from_info()
    _SESSION.append(shown)
    _OWNS_PROCESS.append(not restore)
    try:
        yield shown
    finally:
        _SESSION.clear()
        _OWNS_PROCESS.clear()
        shown.close()
        if restore:
            logging.captureWarnings(False)
            cutswap.setLevel(level)
            root.removeHandler(handler)
            _reattach_terminal_handlers(root, removed)
            _restore_own_handlers(own)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe (or socket) whose reader is gone; True where poll cannot tell."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), a stdout without a file descriptor
        return True


@contextlib.contextmanager
def quiet_when_stdout_closes() -> Iterator[None]:
    """A command whose reader may stop early (``cutswap show demo | head -1``): when it has, the command
    ends quietly with status ``CLOSED_STDOUT_STATUS``, as ``yes | head -1`` does, not with a
    ``BrokenPipeError`` traceback. The output still buffered is flushed here, where that error is caught;
    stdout then points at /dev/null, so that Python's own flush at exit has nothing to say either. A broken
    pipe of something else (stdout still read) goes on as an error."""
    try:
        try:
            yield
        except SystemExit:  # argparse's --help: its text may still be in the buffer
            sys.stdout.flush()
            raise
        sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        with contextlib.suppress(AttributeError, OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        raise SystemExit(CLOSED_STDOUT_STATUS) from None


def _resource_tracker_to(path: Path) -> None:
    """Start Python's multiprocessing resource tracker now, its stderr appending to ``path`` (the run's
    log file, under its temporary name: it is renamed into place, so the tracker's file stays that one).

    Why: the tracker, a child process that this process and the Dask workers it spawns share, warns
    ``resource_tracker: There appear to be N leaked semaphore objects to clean up at shutdown`` when it
    ends, after this process. The semaphores are numcodecs' Blosc lock, a ``multiprocessing.Lock`` that
    each Dask worker makes at its first Zarr (de)compression and that only a normal exit of the worker
    unlinks; a worker that dies otherwise (SIGTERM or Ctrl-C to the run's process group, which Dask's
    workers do not handle; a worker killed mid-training; the kill after ``flows.launch.STOP_GRACE``)
    leaves it to the tracker, which unlinks it, so nothing leaks. The warning reaches the run's log, not
    the terminal, where it would come after the run's last line. A tracker already running (this process
    used multiprocessing before the run) keeps its stderr; only a command that owns its process does this,
    since the tracker lives as long as the process.
    """
    from multiprocessing import resource_tracker

    with contextlib.suppress(OSError):
        log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(log, 2)
            resource_tracker.ensure_running()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(log)


def log_path(reports_root: str | Path, run: str) -> Path:
    """Where a run's full log ends up: beside its report (in this host's folder for a URL reports_root,
    ``cutswap.roots.local_folder``)."""
    from cutswap import roots

    return roots.local_folder(roots.normalize(reports_root)) / run / "run.log"


@contextlib.contextmanager
def run(reports_root: Path, name: str, debug: bool = False) -> Iterator[Display]:
    """One run: its session (``session``, reused when one is open) and its full log, written to
    ``log_path`` (moved there when the run ends, whether it succeeds or fails). Start the display
    (``Display.start``) once the run knows its size.

    The log is written beside the run's folder under a temporary name of this process's own (two runs of
    one name at once each keep theirs; the last to end is the one in place), and leftovers of killed runs
    are collected first (``cutswap.atomic.remove_leftovers``): log files, report folders and the index.
    """
    final = log_path(reports_root, name)
    final.parent.parent.mkdir(parents=True, exist_ok=True)
    atomic.remove_leftovers(final.parent.parent)
    partial = atomic.temporary_sibling(final.parent.parent / f"{name}.run.log")
    writer = atomic.WriterLock(Path(f"{partial}.lock"))
    # Appending (to a new file): the resource tracker may write to it too (``_resource_tracker_to``).
    file = logging.FileHandler(partial, mode="a", encoding="utf-8")
    file.setLevel(logging.DEBUG)
    file.setFormatter(_FileFormatter())
    root = logging.getLogger()
    root.addHandler(file)
    log = logging.getLogger(__name__)
    try:
        with session(debug) as shown:
            if _OWNS_PROCESS and _OWNS_PROCESS[0]:
                _resource_tracker_to(partial)
            log.info("run %s: full log in %s", name, final.resolve())
            try:
                yield shown
            except BaseException:
                log.error("run %s failed; its full log: %s", name, final.resolve(), extra={"console": False})
                raise
            finally:
                shown.close()
    finally:
        root.removeHandler(file)
        file.close()
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(partial, final)
        writer.release()
        _upload_log(reports_root, name, final)


def _upload_log(reports_root: str | Path, name: str, final: Path) -> None:
    """Under a URL reports_root, the run's log goes beside its report in the bucket (``<run>/run.log``),
    where the report's readers on other hosts find it; whatever the run's outcome, since a failed run's
    log is the one most wanted. An upload that fails leaves the log on this host and says so: the run's
    own outcome stands."""
    from cutswap import roots

    root = roots.normalize(reports_root)
    if roots.is_local(root):
        return
    where = roots.join(root, name, "run.log")
    try:
        roots.write_bytes(where, final.read_bytes())
    except Exception as exc:  # noqa: BLE001 (obstore raises its own classes for every backend error)
        logging.getLogger(__name__).warning(
            "run.log stays on this host (%s): uploading to %s failed: %s", final, where, exc
        )
