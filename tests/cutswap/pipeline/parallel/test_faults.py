"""Faults of the Dask workers end the run with a ``JobError`` naming the job and the reason;
they never hang it.

Each test runs a real Dask cluster on 127.0.0.1 and calls the job through ``_within``, so that a
regression to hanging fails the test instead of stalling the suite.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster

from cutswap.pipeline.parallel import JobError, dask_pool, run_job, run_sharded
from cutswap.pipeline.settings import Settings, TrainSettings
from cutswap.pipeline.stages.train import train_run
from cutswap.pipeline.stores import open_store


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``, failing the test when it takes longer than ``seconds`` (a hang, not a slow job)."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(call).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)  # a hung call ends when its cluster closes


def _scheduler(n_workers: int = 0, **kw: Any) -> LocalCluster:
    """A cluster the tests connect to by address, as to a remote one; its workers have joined."""
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        **kw,
    )
    if n_workers:
        cluster.wait_for_workers(n_workers, timeout=30)
    return cluster


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the cluster said of its workers' deaths, in order, with worker addresses as ``W``."""
    return [
        re.sub(r"tcp://127\.0\.0\.1:\d+", "W", r.getMessage())
        for r in caplog.records
        if r.name == "cutswap.pipeline.parallel.pool" and "died" in r.getMessage()
    ]


def _killer(marker: Path, at_step: float | None = None) -> Callable[..., None]:
    """Kills the worker process that calls it, logging one line per kill in ``marker``; with ``at_step``,
    only as a training progress callback at that step, and only once (the rerun goes on)."""

    def kill(entry: dict | None = None) -> None:
        import os
        import signal
        import time

        if at_step is not None and (entry["step"] != at_step or marker.exists()):
            return
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.3)  # a death mid-work: the worker's notice that the job started has left it
        os.kill(os.getpid(), signal.SIGKILL)

    return kill


@pytest.mark.slow
def test_a_job_that_does_not_unpickle_on_the_workers_fails_at_once_and_the_workers_stay_usable(
    tmp_path, monkeypatch
):
    """A module only this process can import (it joined sys.path after the workers started): Dask alone
    would leave the worker unable to read its scheduler stream and the job waiting forever."""
    name = f"only_here_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def job(x):\n    return x\n\ndef shard(a, b):\n    return b - a\n")

    def plus_one(x: int) -> int:
        return x + 1

    with dask_pool(workers=1, gpus=0) as dask:
        dask.client  # noqa: B018 - start the workers before the module is importable here
        monkeypatch.syspath_prepend(str(tmp_path))
        module = importlib.import_module(name)
        with pytest.raises(JobError, match=rf"job job\(7\) does not unpickle on the Dask worker .*{name}"):
            _within(30, lambda: run_job(module.job, 7, pool=dask))
        with pytest.raises(JobError, match=r"job shard\(\) does not unpickle.*ModuleNotFoundError"):
            _within(30, lambda: run_sharded(module.shard, 4, dask, shard=2))
        assert _within(30, lambda: run_job(plus_one, 1, pool=dask)) == 2
        assert _within(30, lambda: run_sharded(lambda a, b: b - a, 4, dask, shard=2)) == [2, 2]


@pytest.mark.slow
def test_a_job_whose_worker_keeps_dying_fails_after_allowed_failures_reruns(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cutswap.pipeline.parallel.pool")
    marker = tmp_path / "deaths"
    with dask_pool(workers=1, gpus=0, allowed_failures=1) as dask, pytest.raises(JobError) as caught:
        _within(60, lambda: run_job(_killer(marker), pool=dask, name="train brick/cutswap/seed 0"))
    message = str(caught.value)
    assert "job train brick/cutswap/seed 0 failed: the Dask workers running it died 2 times" in message
    assert "parallel.allowed_failures (1)" in message and "worker logs" in message
    assert len(marker.read_text().split()) == 2, "the job should run once and be rerun once"
    # One line per death, naming the worker and the job, and one when the job runs again.
    assert _said(caplog) == [
        "worker W died during train brick/cutswap/seed 0; the job runs again when a worker can take it",
        "train brick/cutswap/seed 0 resumed on worker W (worker W died running it)",
        "worker W died during train brick/cutswap/seed 0; the job fails: its workers died 2 times "
        "(allowed_failures: 1)",
    ]


@pytest.mark.slow
def test_a_gpu_job_on_a_remote_cluster_without_gpu_workers_fails_at_once():
    def where() -> str:
        from distributed import get_worker

        return get_worker().address

    with _scheduler(n_workers=1) as remote:
        with dask_pool(address=remote.scheduler_address, gpus=1) as dask:
            start = time.monotonic()
            with pytest.raises(JobError) as caught:
                _within(30, lambda: run_job(where, pool=dask))
            assert time.monotonic() - start < 5
        message = str(caught.value)
        assert message.startswith("job where() needs a worker with the resource GPU=1, but none of the 1")
        assert remote.scheduler_address in message and "--resources GPU=1" in message
        assert "parallel.gpus: 0" in message
        with dask_pool(address=remote.scheduler_address) as dask:  # gpus unset: no worker has one
            assert dask.job_resources() is None
            assert _within(30, lambda: run_job(where, pool=dask)).startswith("tcp://127.0.0.1:")


def test_a_job_on_a_remote_scheduler_without_workers_fails_after_worker_timeout():
    def job() -> int:
        return 1

    with (
        _scheduler(n_workers=0) as remote,
        dask_pool(address=remote.scheduler_address, worker_timeout=1) as dask,
    ):
        start = time.monotonic()
        with pytest.raises(
            JobError, match=r"job job\(\) waited 1 s .*no worker is connected to the Dask sch"
        ):
            _within(30, lambda: run_job(job, pool=dask))
        assert 1 <= time.monotonic() - start < 10


@pytest.mark.slow
def test_a_gpu_job_whose_gpu_workers_are_gone_fails_after_worker_timeout(tmp_path, caplog):
    """A remote cluster with a CPU worker and a GPU worker without a nanny; the job kills the GPU worker,
    so the scheduler would queue its rerun forever. It fails after ``worker_timeout`` instead."""
    caplog.set_level(logging.INFO, logger="cutswap.pipeline.parallel.pool")
    marker = tmp_path / "deaths"
    with _scheduler(n_workers=1) as remote, Client(remote) as watcher:
        gpu_worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", remote.scheduler_address, "--no-nanny",
             "--nthreads", "1", "--resources", "GPU=1", "--host", "127.0.0.1", "--no-dashboard"],
        )  # fmt: skip
        try:
            watcher.wait_for_workers(2, timeout=30)
            with dask_pool(address=remote.scheduler_address, worker_timeout=2) as dask:
                assert dask.job_resources() == {"GPU": 1}
                start = time.monotonic()
                with pytest.raises(JobError) as caught:
                    _within(40, lambda: run_job(_killer(marker), pool=dask, name="gpu job"))
                assert time.monotonic() - start < 30
            assert gpu_worker.wait(timeout=10) != 0 and len(marker.read_text().split()) == 1
        finally:
            if gpu_worker.poll() is None:
                gpu_worker.kill()
                gpu_worker.wait()
    message = str(caught.value)
    assert message.startswith("job gpu job waited 2 s with no worker able to run it: no worker of the Dask")
    assert "advertises the resource GPU=1" in message and "parallel.worker_timeout" in message
    # The remote worker's death is said too (its scheduler's allowed_failures, 3 by default, not reached).
    assert _said(caplog) == ["worker W died during gpu job; the job runs again when a worker can take it"]


@pytest.mark.slow
def test_a_training_job_whose_worker_is_killed_reruns_and_resumes_from_its_checkpoint(
    tmp_path, make_stripes, ingest_store, caplog
):
    """The worker dies at step 4, after the step-2 checkpoint: the nanny restarts it, the scheduler reruns
    the job, and the rerun finds the checkpoint (its path comes from the store key) and goes on from it."""
    ingest = ingest_store(tmp_path, make_stripes(16))
    train = TrainSettings(
        steps=4, batch_size=4, head_dims=[32], log_every=2, checkpoint_every=2, device="cpu"
    )
    settings = Settings(storage_root=tmp_path, train=train)
    marker = tmp_path / "deaths"
    job = functools.partial(train_run, progress=_killer(marker, at_step=4))
    caplog.set_level(logging.INFO, logger="cutswap.pipeline.parallel.pool")
    name = "train brick/cutpaste/seed 0"
    with dask_pool(workers=1, gpus=0) as dask:
        call = functools.partial(run_job, job, settings, ingest, "cutpaste", 0, pool=dask, name=name)
        ref, computed = _within(90, call)
    assert len(marker.read_text().split()) == 1, "the worker should have been killed once"
    assert _said(caplog) == [
        "worker W died during train brick/cutpaste/seed 0; the job runs again when a worker can take it",
        "train brick/cutpaste/seed 0 resumed on worker W (worker W died running it)",
    ]
    attrs = open_store(ref).attrs
    assert computed and attrs["resumed_from"] == 2
    assert open_store(ref)["log"][:, 0].tolist() == [2.0, 4.0]


def _shard_killer(marker: Path) -> Callable[[int, int], int]:
    """A shard function whose first call kills its worker (once: the rerun goes on)."""

    def shard(start: int, stop: int) -> int:
        import os
        import signal
        import time

        if start == 0 and not marker.exists():
            marker.write_text(f"{os.getpid()}\n")
            time.sleep(0.3)  # a death mid-work (see _killer)
            os.kill(os.getpid(), signal.SIGKILL)
        return stop - start

    return shard


@pytest.mark.slow
def test_a_shard_whose_worker_dies_is_said_and_rerun(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cutswap.pipeline.parallel.pool")
    with dask_pool(workers=1, gpus=0) as dask:
        sizes = _within(60, lambda: run_sharded(_shard_killer(tmp_path / "deaths"), 4, dask, shard=2))
    assert sizes == [2, 2]
    assert _said(caplog) == [
        "worker W died during shard() items 0-2; the shard runs again when a worker can take it",
        "shard() items 0-2 resumed on worker W (worker W died running it)",
    ]
    # The subscription to the scheduler's events ends before the client closes (else the scheduler logs a
    # CRITICAL "Closed comm" sending the closing client its own removal).
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.CRITICAL]
