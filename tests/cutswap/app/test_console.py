"""The console of a run: which records a person sees (once each), and the plain progress lines' rate."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import subprocess
import sys
import time

import pytest

from cutswap.app.console import ConsoleHandler, Display, run, session
from cutswap.pipeline.parallel import dask_pool
from tests.support.s3 import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, level: int, message: str, **extra) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


def test_the_console_shows_our_lines_and_others_warnings_each_once():
    out = io.StringIO()
    handler = ConsoleHandler(Display(stream=out, live=False))
    for record in [
        _record("cutswap.pipeline.stages.ingest", logging.INFO, "ingest brick: computed"),
        _record("distributed.scheduler", logging.INFO, "Lost all workers"),
        _record(
            "distributed.nanny", logging.WARNING, "Worker process still alive after 4.0 seconds, killing"
        ),
        _record(
            "distributed.nanny", logging.WARNING, "Worker process still alive after 4.0 seconds, killing"
        ),
        _record("prefect.task_runs", logging.INFO, "Finished in state Completed()"),
        _record("prefect.task_runs", logging.INFO, "saliency brick: computed", console=True),
        _record("prefect.task_runs", logging.INFO, "step 2/2 loss 0.7", console=False),
        _record(
            "cutswap.method.backbones",
            logging.WARNING,
            "saliency backbone: falling back to efficientnet_lite0",
        ),
        _record(
            "cutswap.method.backbones",
            logging.WARNING,
            "saliency backbone: falling back to efficientnet_lite0",
        ),
        # A job's exception, logged again by Prefect's engine and Dask: the run says it once, at its end.
        _record(
            "prefect.task_runs", logging.ERROR, "Task run failed with exception\nTraceback (most recent..."
        ),
        _record("prefect.flow_runs", logging.ERROR, "Finished in state Failed('boom')"),
        _record("distributed.worker", logging.ERROR, "Compute Failed\nKey: train_run-1"),
        _record(
            "cutswap.pipeline.stages.train", logging.ERROR, "checkpoint unreadable\nTraceback (most recent..."
        ),
    ]:
        handler.handle(record)
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "ingest brick: computed",
        "WARNING Worker process still alive after 4.0 seconds, killing",
        "saliency brick: computed",
        "WARNING saliency backbone: falling back to efficientnet_lite0",
        "ERROR checkpoint unreadable",
    ]


def test_plain_progress_lines_are_rate_limited_per_job_plus_one_per_finished_job():
    out, clock = io.StringIO(), FakeClock()
    shown = Display(stream=out, live=False, interval=10.0, clock=clock)
    shown.start(stages_total=9, jobs_total=4)
    for second in range(31):  # two jobs stepping every second for 30 s
        clock.now = float(second)
        shown.job_step("a", "train a", second + 1, 100, 50.0)
        shown.job_step("b", "train b", second + 1, 100, 40.0)
    shown.job_done("a", "train a", 30.0, "computed")
    lines = out.getvalue().splitlines()
    steps = [line for line in lines if ": step " in line]
    assert len([line for line in steps if "train a:" in line]) == 3  # at 10, 20 and 30 s
    assert len([line for line in steps if "train b:" in line]) == 3
    assert "[0/4 jobs, about 3 min left] train a: step 11/100, 50 img/s" in lines[0]
    assert lines[-1].endswith("[1/4 jobs, about 62 s left] train a: computed in 30.0 s")
    assert shown.eta() == pytest.approx(30 * (4 - 1.31) / 1.31)


def test_the_live_display_renders_stages_jobs_and_steps():
    out = io.StringIO()
    shown = Display(stream=out, live=True)
    shown.start(stages_total=3, jobs_total=2)
    shown.stage_started("saliency brick")
    shown.stage_done()
    shown.job_step("a", "train brick/cutswap/seed 0", 5, 10, 42.0)
    shown.print("a log line")
    shown.close()
    text = out.getvalue()
    assert "a log line" in text and "stages" in text and "jobs" in text
    assert "train brick/cutswap/seed 0" in text and "42 img/s" in text


def test_a_run_writes_its_full_log_beside_its_report_and_restores_the_console(tmp_path, monkeypatch):
    root = logging.getLogger()
    before = list(root.handlers)
    monkeypatch.setattr(logging.getLogger("distributed"), "level", logging.INFO)  # as Dask sets it
    with run(tmp_path, "r1"):
        logging.getLogger("distributed.scheduler").info("State start")
        logging.getLogger("cutswap.x").info("a line of ours")
        (tmp_path / "r1").mkdir()  # the report stage swaps its folder in meanwhile
    assert root.handlers == before
    text = (tmp_path / "r1" / "run.log").read_text()
    assert "distributed.scheduler: State start" in text and "cutswap.x: a line of ours" in text
    assert not list(tmp_path.glob(".*"))


def test_a_session_is_reentrant():
    with session(stream=io.StringIO(), live=False) as outer, session() as inner:
        assert inner is outer


def test_dask_records_that_say_nothing_or_that_the_run_says_itself_are_no_console_lines():
    out = io.StringIO()
    handler = ConsoleHandler(Display(stream=out, live=False))
    scheduler = logging.LogRecord(
        "distributed.scheduler",
        logging.ERROR,
        __file__,
        1,
        "Task %s marked as failed because %d workers died while trying to run it",
        ("train_run-1", 2),
        None,
    )
    for record in [
        # distributed.utils.log_errors: ``logger.exception(exc)`` of the client's cancelled reconnection.
        _record("distributed.client", logging.ERROR, "", exc_info=_raised(asyncio.CancelledError())),
        _record("distributed.utils", logging.ERROR, "", exc_info=_raised(TimeoutError())),
        _record("distributed.core", logging.ERROR, "   "),
        # A worker's death and a job failed by its workers' deaths: the run's own lines say them.
        _record("distributed.nanny", logging.WARNING, "Restarting worker (status=Status.running)"),
        scheduler,
        _record(
            "distributed.nanny", logging.WARNING, "Worker process still alive after 4.0 seconds, killing"
        ),
    ]:
        handler.handle(record)
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "ERROR TimeoutError (from distributed.utils)",
        "WARNING Worker process still alive after 4.0 seconds, killing",
    ]


def _raised(exc: BaseException) -> tuple:
    try:
        raise exc
    except BaseException:
        return sys.exc_info()


@pytest.mark.slow
def test_a_remote_scheduler_that_dies_leaves_no_bare_error_line_on_the_console(tmp_path):
    """The client's reconnection is cancelled when it closes with its scheduler gone, and Dask logs that
    ``CancelledError`` as an ERROR with an empty message: the run's log keeps it, the console says nothing."""
    port = free_port()
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    out = io.StringIO()
    try:
        with (
            session(stream=out, live=False),
            run(tmp_path, "r1"),
            dask_pool(address=f"tcp://127.0.0.1:{port}", gpus=0) as dask,
        ):
            dask.client  # noqa: B018 - connect
            scheduler.kill()
            scheduler.wait()
            time.sleep(0.5)  # the client notices, and tries to reconnect until it closes
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait()
    logged = (tmp_path / "r1" / "run.log").read_text()
    assert re.search(r"ERROR +distributed\.\S+: \n.*CancelledError", logged, re.DOTALL), logged
    assert not [line for line in out.getvalue().splitlines() if re.fullmatch(r"\S+ ERROR\s*", line)]
    assert "dask: connected to" in out.getvalue()
