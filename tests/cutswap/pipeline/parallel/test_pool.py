"""Shard-parallel precompute and training/evaluation jobs on a real local Dask cluster.

The precompute stores do not depend on the worker count.

(In-process work differs from worker processes in the last float16 bit of a few saliency values, because
torch uses another number of threads there and so sums in another order.)
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cutswap.app import stopping
from cutswap.data.builtin.textures import build_textures
from cutswap.data.layouts.mvtec import scan_mvtec
from cutswap.errors import CutswapError
from cutswap.pipeline import parallel
from cutswap.pipeline.parallel import dask_pool, run_job, run_sharded, shard_ranges
from cutswap.pipeline.parallel.pool import DaskPool
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.cluster import cluster_category
from cutswap.pipeline.stages.ingest import ingest_category
from cutswap.pipeline.stages.pairs import pairs_category
from cutswap.pipeline.stages.saliency import saliency_category
from cutswap.pipeline.stores import open_store


def test_shard_ranges_cover_everything_once():
    assert shard_ranges(300, 128) == [(0, 128), (128, 256), (256, 300)]
    assert shard_ranges(0) == []


def _square(start: int, stop: int) -> list[int]:
    return [i * i for i in range(start, stop)]


def test_run_sharded_in_process_keeps_order():
    assert sum(run_sharded(_square, 10, None, shard=3), []) == [i * i for i in range(10)]


@pytest.mark.slow
def test_precompute_stores_identical_with_one_and_two_workers(tmp_path, monkeypatch):
    root = build_textures(
        tmp_path / "data", seed=2, image_size=64, n_train=10, n_test_good=2, n_test_defect=1
    )
    table = scan_mvtec(root, ["brick"])
    stores = {}
    for workers in (1, 2):
        settings = Settings.model_validate(
            {
                "storage_root": tmp_path / f"storage-{workers}",
                "dataset": {"name": "mvtec", "root": root, "image_size": 32},
                "saliency": {"backbone": "efficientnet_lite0", "batch_size": 3},
                "pairs": {"draws": 5},
                "train": {"device": "cpu"},
            }
        )
        with dask_pool(workers=workers) as dask:
            ing, _ = ingest_category(settings, root, "brick", table)
            # shards of 4 images: 10 training images make 3 ranges, so 2 workers really split the work
            monkeypatch.setattr(parallel, "SHARD", 4)
            sal, _ = saliency_category(settings, ing, dask=dask)
            clu, _ = cluster_category(settings, sal, dask=dask)
            pai, _ = pairs_category(settings, clu, dask=dask)
            assert open_store(sal)["maps"].shards[0] == 4
            if dask is not None:
                assert dask._client is not None, "the cluster was never used"
        stores[workers] = (sal, clu, pai)
    for a, b in zip(stores[1], stores[2], strict=True):
        assert a.key == b.key
        ga, gb = open_store(a), open_store(b)
        for name in ga.array_keys():
            np.testing.assert_array_equal(ga[name][:], gb[name][:], err_msg=f"{a.stage}/{name}")


def test_run_job_in_process_jobs_take_turns():
    active, peak, lock = [0], [0], threading.Lock()

    def job(x: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return x * 2

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda x: run_job(job, x), range(6)))
    assert results == [0, 2, 4, 6, 8, 10]
    assert peak[0] == 1


@pytest.mark.slow
def test_jobs_one_gpu_each_several_at_once_with_logs_relayed():
    """A local cluster that advertises 2 GPUs (on CPU): jobs ask for one each, so each worker runs one job
    at a time, both workers work together, log records come back, and a job's exception is raised here."""

    def job(i: int) -> tuple[str, float, float]:
        import logging
        import time

        from distributed import get_worker

        start = time.time()
        logging.getLogger("cutswap.job").info("job %d on worker %s", i, get_worker().name)
        time.sleep(1.0)
        return str(get_worker().name), start, time.time()

    def failing() -> None:
        raise ValueError("bad job")

    lines: list[tuple[int, str]] = []
    with dask_pool(workers=1, gpus=2) as dask:
        assert dask.workers == 2
        assert dask.job_resources() == {"GPU": 1}
        with ThreadPoolExecutor(4) as pool:
            runs = list(
                pool.map(lambda i: run_job(job, i, pool=dask, relay=lambda *a: lines.append(a)), range(4))
            )
        with pytest.raises(ValueError, match="bad job"):
            run_job(failing, pool=dask)
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for name, start, stop in runs:
        by_worker.setdefault(name, []).append((start, stop))
    assert sorted(by_worker) == ["0", "1"], "both GPU workers should take jobs"
    for spans in by_worker.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), "two jobs shared one GPU"
    overlap = any(a[0] < b[1] and b[0] < a[1] for a, b in itertools.product(*by_worker.values()))
    assert overlap, "jobs on different GPUs should run at the same time"
    assert sorted(msg.split(" on ")[0] for _, msg in lines) == [f"job {i}" for i in range(4)]
    assert all(level == logging.INFO for level, _ in lines)


@pytest.mark.slow
@pytest.mark.parametrize("cpu_jobs", [1, None])
def test_cpu_cluster_runs_cpu_jobs_at_once_each_with_its_share_of_the_cores(cpu_jobs):
    def job() -> tuple[int, float, float]:
        import time

        import torch

        start = time.time()
        time.sleep(0.5)
        return torch.get_num_threads(), start, time.time()

    with dask_pool(workers=2, gpus=0, cpu_jobs=cpu_jobs) as dask:
        assert dask.job_resources() is None
        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(lambda _: run_job(job, pool=dask), range(4)))
    at_once = cpu_jobs or 2  # default: one per worker
    assert {threads for threads, _, _ in runs} == {max(1, (os.cpu_count() or 1) // at_once)}
    spans = [(start, stop) for _, start, stop in runs]
    peak = max(sum(a <= t < b for a, b in spans) for t, _ in spans)  # most jobs running at one start
    assert peak == at_once


@pytest.mark.gpu
@pytest.mark.slow
def test_local_cluster_on_cuda_gives_each_job_its_workers_gpu():
    import torch

    def where() -> tuple[str, int]:
        import torch
        from distributed import get_worker

        return str(get_worker().name), torch.cuda.current_device()

    with dask_pool(workers=1) as dask:
        assert dask.gpus == torch.cuda.device_count() and dask.workers == dask.gpus
        assert dask.job_resources() == {"GPU": 1}
        with ThreadPoolExecutor(2 * dask.gpus) as pool:
            seen = list(pool.map(lambda _: run_job(where, pool=dask), range(2 * dask.gpus)))
    assert all(device == int(name) % dask.gpus for name, device in seen)


@pytest.mark.slow
def test_a_shadowing_cutswap_module_on_the_workers_path_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "cutswap.py").write_text("raise SystemExit('not the package')\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers inherit sys.path
    with dask_pool(workers=1, gpus=0) as dask, pytest.raises(CutswapError, match="shadows the package"):
        dask.client  # noqa: B018 - starts the cluster


@pytest.mark.parametrize("asked_to_stop", [False, True], ids=["working", "stop asked"])
def test_a_worker_death_is_said_unless_the_process_was_asked_to_stop(monkeypatch, caplog, asked_to_stop):
    """A signal to the run's process group kills the workers at once, and Dask's event thread hears of it
    before the main thread unwinds to ``close``: those deaths are the stop's, not failures to report."""
    monkeypatch.setattr(stopping, "_REQUESTED", threading.Event())
    pool = DaskPool(workers=1, address="tcp://127.0.0.1:1", gpus=0)
    pool._watched["k"] = ("job", "train brick/cutswap/seed 0")
    pool._started_on["k"] = "tcp://w"
    if asked_to_stop:
        stopping.request()
    event = {"action": "remove-worker", "worker": "tcp://w", "processing-tasks": ["k"], "expected": False}
    with caplog.at_level(logging.WARNING, logger="cutswap"):
        pool._worker_removed((0.0, event))
    said = [r.getMessage() for r in caplog.records if "died during" in r.getMessage()]
    if asked_to_stop:
        assert said == []
    else:
        assert len(said) == 1 and said[0].startswith("worker tcp://w died during train brick/cutswap/seed 0;")
