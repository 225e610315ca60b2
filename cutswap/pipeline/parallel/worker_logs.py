"""Log records of the workers, back to the process that started the work: a job's records to its own
Dask topic (with the training's progress entries), other ``cutswap`` records to ``WORKER_LOGS``; Dask's own
records on a worker as one line each (see the package docstring)."""

from __future__ import annotations

import logging
from typing import Any

#: The Dask event topic of ``cutswap`` records that workers log outside a relayed job.
WORKER_LOGS = "cutswap-worker-logs"


def log_worker_record(event: tuple) -> None:
    """Here: a ``cutswap`` record a worker logged outside a relayed job, logged again under its name."""
    level, name, message, worker = event[1]
    logging.getLogger(name).log(level, "%s (Dask worker %s)", message, worker)


class _WorkerLogs(logging.Handler):
    """On a worker, the one handler of the ``cutswap`` loggers: a record of a relayed job's thread goes to
    that job's topic, any other to ``WORKER_LOGS``; both come back to the process that started the work.

    (A worker may run several jobs at once, one per thread, so records are told apart by thread.)
    """

    def __init__(self, worker: Any) -> None:
        super().__init__(logging.INFO)
        self.worker = worker
        self.topics: dict[int, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            topic = self.topics.get(record.thread)
            if topic is not None:
                entry = getattr(record, "progress", None)
                self.worker.log_event(topic, (record.levelno, record.getMessage(), entry))
            else:
                who = str(self.worker.name)
                self.worker.log_event(WORKER_LOGS, (record.levelno, record.name, record.getMessage(), who))
        except Exception:  # a lost log line must not fail the job
            self.handleError(record)


def route_worker_logs(worker: Any) -> _WorkerLogs:
    """Make ``_WorkerLogs`` the only way out of the ``cutswap`` loggers on this worker (idempotent).

    It replaces the handlers a runner's import attached there (Prefect's API handler, whose records here
    belong to no run) and stops propagation to the worker's root handlers (a second copy of each line on
    the worker's stderr): every record is logged once, by the process that started the work.
    """
    logger = logging.getLogger("cutswap")
    for handler in logger.handlers:
        if type(handler).__name__ == "_WorkerLogs":
            return handler
    router = _WorkerLogs(worker)
    logger.handlers[:] = [router]
    logger.propagate = False
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return router


class _OneLine(logging.Formatter):
    """A record's first line, without its traceback: ``01:02:03 ERROR message (logger)``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s (%(name)s on a Dask worker)", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.split("\n", 1)[0]
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return ""


def _not_a_job_failure(record: logging.LogRecord) -> bool:
    """Dask's "Compute Failed" record repeats a job's exception, which reaches the run that reports it."""
    return not (record.name == "distributed.worker" and str(record.msg).startswith("Compute Failed"))


def _one_line_dask_logs() -> None:
    """On a local worker: Dask's own records (WARNING and up, see ``DaskPool._start``) as one line each on the
    worker's stderr, the terminal of the run. A worker's closing races its scheduler's, and the heartbeat
    that loses logs an error with a 40-line traceback that says nothing to act on."""
    logger = logging.getLogger("distributed")
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLine())
    handler.addFilter(_not_a_job_failure)
    logger.handlers[:] = [handler]
    logger.propagate = False  # not also through a root handler a runner's import set up (Prefect's)


def route_logs_plugin() -> Any:
    """A Dask worker plugin that routes the ``cutswap`` logs of every worker of a local pool from its
    start, shards included (jobs route them themselves, on any pool)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class RouteLogs(WorkerPlugin):
        def setup(self, worker: Any) -> None:
            route_worker_logs(worker)
            _one_line_dask_logs()

    return RouteLogs()
