"""Object storage that stops answering is said once per stall, and once more when it answers again
(``cutswap.stalls``): in this process, and from a Dask worker, on a real S3 server paused with SIGSTOP."""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from cutswap import roots, stalls


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The stall lines, clock times as ``T`` and seconds waited as ``N``."""
    lines = [r.getMessage() for r in caplog.records if r.name == "cutswap.stalls"]
    return [re.sub(r"\d\d:\d\d:\d\d", "T", re.sub(r"\b\d+(\.\d)? s\b", "N s", line)) for line in lines]


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A stall is said after 0.2 s instead of 30 s, by a watcher of its own: one started by an earlier test
    polls at the 30 s limit's pace (once a second) and would sleep through these sub-second stalls."""
    monkeypatch.setenv(stalls.STALL_ENV, "0.2")
    monkeypatch.setattr(stalls, "_WATCH", stalls._Watch())
    caplog.set_level(logging.INFO, logger="cutswap.stalls")


def test_only_object_storage_is_watched_and_it_is_named_by_its_bucket():
    assert stalls.storage_of("s3://bucket/cutswap/storage/train") == "s3://bucket"
    assert stalls.storage_of("GS://bucket") == "gs://bucket"
    assert stalls.storage_of("az://container/x") == "az://container"
    assert [stalls.storage_of(u) for u in ("/data/cutswap", "file:///mnt/x", "memory://t/x")] == [None] * 3


def _call(url: str, seconds: float, raises: BaseException | None = None) -> threading.Thread:
    """A call to the storage at ``url`` that waits ``seconds``, then returns or raises, in a thread."""

    def call() -> None:
        with stalls.waiting(url):
            time.sleep(seconds)
            if raises is not None:
                raise raises

    def quiet() -> None:
        with contextlib.suppress(BaseException):  # the raise is the point
            call()

    thread = threading.Thread(target=quiet)
    thread.start()
    return thread


def test_calls_that_wait_past_the_limit_are_one_stall_said_once_and_its_end_once(quick, caplog):
    calls = [_call("s3://b/x", 0.5), _call("s3://b/y/z", 0.6), _call("s3://other/x", 0.05)]
    for call in calls:
        call.join()
    assert _said(caplog) == [
        "storage s3://b has not answered for N s (since T; still waiting)",
        "storage s3://b answers again after N s",
    ]
    assert [r.levelname for r in caplog.records if r.name == "cutswap.stalls"] == ["WARNING", "INFO"]
    caplog.clear()
    _call("s3://b/x", 0.5).join()  # a second stall: said again
    assert len(_said(caplog)) == 2


def test_a_missing_object_is_an_answer_and_a_call_that_gives_up_ends_the_stall_silently(quick, caplog):
    _call("s3://b/x", 0.5, FileNotFoundError("no such key")).join()
    assert _said(caplog)[1:] == ["storage s3://b answers again after N s"]
    caplog.clear()
    _call("s3://b/x", 0.5, OSError("timed out after 10 retries")).join()  # its caller says the error
    assert _said(caplog) == ["storage s3://b has not answered for N s (since T; still waiting)"]
    caplog.clear()
    _call("s3://b/x", 0.5).join()
    assert len(_said(caplog)) == 2, "the next wait is a new stall"


@contextlib.contextmanager
def _paused(server, seconds: float) -> Iterator[None]:
    """The S3 server's process stopped (SIGSTOP) now, and continued ``seconds`` later, whatever happens."""
    timer = threading.Timer(seconds, server.process.send_signal, (signal.SIGCONT,))
    server.process.send_signal(signal.SIGSTOP)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        server.process.send_signal(signal.SIGCONT)


@pytest.mark.slow
def test_a_paused_s3_server_is_said_and_so_is_its_answer_again(s3_server, bucket, monkeypatch, caplog):
    monkeypatch.setenv(stalls.STALL_ENV, "1")
    caplog.set_level(logging.INFO, logger="cutswap.stalls")
    roots.write_bytes(roots.join(bucket, "a"), b"1")
    roots.open_group(roots.join(bucket, "g"), "w").attrs["n"] = 1
    storage = bucket.rsplit("/", 1)[0]  # s3://<bucket>
    with _paused(s3_server, 2.5):  # obstore's own timeout is 30 s: the call waits and then gets its answer
        assert roots.read_bytes(roots.join(bucket, "a")) == b"1"
    with _paused(s3_server, 2.5):  # Zarr's calls too (roots.zarr_store)
        assert roots.open_group(roots.join(bucket, "g"), "r").attrs["n"] == 1
    assert (
        _said(caplog)
        == [
            f"storage {storage} has not answered for N s (since T; still waiting)",
            f"storage {storage} answers again after N s",
        ]
        * 2
    )


@pytest.mark.slow
def test_a_stall_on_a_dask_worker_is_said_here_naming_the_worker(s3_server, bucket, monkeypatch, caplog):
    """A training waiting on its checkpoint: the worker's lines come back to the run (``WORKER_LOGS``)."""
    from cutswap.pipeline.parallel import dask_pool, run_job

    monkeypatch.setenv(stalls.STALL_ENV, "1")  # before the workers start: they read it from their environment
    caplog.set_level(logging.INFO, logger="cutswap.stalls")
    storage = bucket.rsplit("/", 1)[0]  # s3://<bucket>
    expected = [
        f"storage {storage} has not answered for N s (since T; still waiting) (Dask worker 0)",
        f"storage {storage} answers again after N s (Dask worker 0)",
    ]
    with dask_pool(workers=1, gpus=0) as dask:
        # A first job, so that the worker has started, imported what jobs import and met the storage
        # before the server pauses: the second one's call is the one that waits.
        run_job(roots.write_bytes, roots.join(bucket, "checkpoint"), b"", pool=dask)
        with _paused(s3_server, 4.0):
            run_job(roots.write_bytes, roots.join(bucket, "checkpoint"), b"x", pool=dask)
        deadline = time.monotonic() + 10  # the worker's lines travel as Dask events, beside the result
        while _said(caplog) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
    assert roots.read_bytes(roots.join(bucket, "checkpoint")) == b"x"
    assert _said(caplog) == expected
