"""Workers that run other code are refused by name; workers of one host claim different GPUs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cutswap.errors import CutswapError
from cutswap.pipeline.parallel import DaskPool
from cutswap.pipeline.parallel.identity import claim_gpu, code_fingerprint, differences

REPO = Path(__file__).resolve().parents[4]


def test_fingerprints_name_what_differs():
    ours = code_fingerprint()
    theirs = {**ours, "torch": "2.0.0", "stages": {**ours["stages"], "train": "0"}}
    assert differences(ours, ours) == []
    assert differences(ours, theirs) == [
        f"torch {ours['torch']} here, 2.0.0 there",
        f"stage train code version {ours['stages']['train']} here, 0 there",
    ]


@pytest.mark.slow
def test_a_worker_running_other_code_is_refused_by_name(tmp_path):
    """A real scheduler and two real workers; one imports a copy of cutswap whose train stage has another
    code version (as a host with another checkout would): connecting names that worker, and only it."""
    from tests.support.topology import Topology

    other = tmp_path / "other"
    shutil.copytree(REPO / "cutswap", other / "cutswap", ignore=shutil.ignore_patterns("__pycache__"))
    keys = other / "cutswap" / "pipeline" / "stores" / "keys.py"
    keys.write_text(keys.read_text().replace('"train": "1",', '"train": "2",', 1))
    hidden = tmp_path / "none"
    hidden.mkdir()
    same = Topology(tmp_path / "hosts", hidden, {})
    try:
        same.start(["same"])
        same.env = {"PYTHONPATH": str(other)}
        same._start("stale", [sys.executable, "-m", "distributed.cli.dask_worker", same.address,
                              "--name", "stale", "--nthreads", "1", "--no-nanny", "--no-dashboard",
                              "--host", "127.0.0.1"], False)  # fmt: skip
        from distributed import Client

        with Client(same.address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            stale = next(
                a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["name"] == "stale"
            )
        cluster = DaskPool(0, address=same.address)
        with pytest.raises(CutswapError) as info:
            cluster.client  # noqa: B018 (connecting is what is tested)
        cluster.close()
        message = str(info.value)
        assert "1 Dask worker(s)" in message and stale in message
        assert "stage train code version 1 here, 2 there" in message and "code " in message
    finally:
        same.stop()


_CLAIM = """
import sys, time
from pathlib import Path
from cutswap.pipeline.parallel.identity import claim_gpu
print(claim_gpu(2, Path(sys.argv[1])), flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_workers_of_one_host_claim_different_gpus(tmp_path):
    """The pinning logic without GPUs: processes of one host each claim a free device index, a third
    finds none, and a claim ends with its process (a restarted worker takes the GPU back)."""

    def claimer(seconds: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_CLAIM), str(tmp_path), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )

    first, second = claimer(30), claimer(30)
    try:
        claims = {first.stdout.readline().strip(), second.stdout.readline().strip()}
        assert claims == {"0", "1"}
        third = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_CLAIM), str(tmp_path), "0"],
            capture_output=True,
            text=True,
        )
        assert third.stdout.strip() == "None"
        first.kill()
        first.wait()
        time.sleep(0.2)
        again = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_CLAIM), str(tmp_path), "0"],
            capture_output=True,
            text=True,
        )
        assert again.stdout.strip() in claims and again.stdout.strip() != "None"
    finally:
        for process in (first, second):
            process.kill()
            process.wait()
    assert claim_gpu(0, tmp_path / "none") is None  # no GPUs: nothing to claim


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@pytest.mark.slow
@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="one core: every budget is one thread")
def test_a_cpu_job_on_a_cluster_by_address_keeps_to_its_workers_threads():
    """Two workers of one host started with ``--nthreads 1`` each run torch on one thread, not on every
    core (which made them oversubscribe the host: benchmarks/bench_storage.py, remote ways)."""
    from distributed import LocalCluster

    from cutswap.pipeline.parallel import run_job

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as local:  # fmt: skip
        dask = DaskPool(0, address=local.scheduler_address)
        try:
            assert run_job(_torch_threads, pool=dask) == 1
        finally:
            dask.close()


def test_a_worker_uses_its_own_visible_gpu_else_claims_one(monkeypatch, caplog):
    """The pinning rule without GPUs: CUDA_VISIBLE_DEVICES set (one device, or dask-cuda's rotated list
    whose first is the worker's own) means cuda:0; otherwise the worker's claim, with a warning when
    every GPU of the host is claimed."""
    import torch

    from cutswap.pipeline.parallel import identity

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    claims = []
    monkeypatch.setattr(identity, "claim_gpu", lambda count: claims.append(count) or 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2,3,0")  # dask cuda worker's second worker
    assert identity.worker_gpu() == 0 and claims == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert identity.worker_gpu() == 2 and claims == [4]
    monkeypatch.setattr(identity, "claim_gpu", lambda count: None)
    assert identity.worker_gpu() is None
    assert "all 4 GPUs of this host are claimed" in caplog.text


def test_a_job_reaching_a_worker_with_other_code_is_refused_naming_it():
    """A worker restarted on other code after the cluster was checked: the fingerprint each job carries
    does not match the worker's, so the job answers with a JobError instead of running."""
    import cloudpickle

    from cutswap.pipeline.parallel import JobError, jobs

    ran = []
    payload = cloudpickle.dumps(({**code_fingerprint(), "code": "0" * 16}, lambda: ran.append(1)))
    answer = jobs._run_pickled(payload)
    assert answer[0] == "code" and not ran
    with pytest.raises(
        JobError, match=r"job train_run\(x\) reached the Dask worker \?, which runs other code"
    ):
        jobs._unpacked("train_run(x)", answer)
    assert jobs._run_pickled(jobs._pickled("ok", lambda: 7)) == ("done", 7)
