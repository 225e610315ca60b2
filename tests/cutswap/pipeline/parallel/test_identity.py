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
print(claim_gpu(sys.argv[3].split(","), Path(sys.argv[1])), flush=True)
time.sleep(float(sys.argv[2]))
"""


class _Claimer:
    """A process of the host that sees ``gpus`` (UUIDs, in its own order) and holds its claim ``seconds``."""

    def __init__(self, folder: Path, gpus: str, seconds: float = 30) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_CLAIM), str(folder), str(seconds), gpus],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.claim = self.process.stdout.readline().strip()

    def stop(self) -> str:
        """Ends the process (and its claim); its claim as it printed it."""
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()
        return self.claim


def test_workers_of_one_host_claim_different_gpus(tmp_path):
    """The pinning logic without GPUs: processes of one host each claim a free device, a third finds
    none, and a claim ends with its process (a restarted worker takes the GPU back)."""
    first, second = _Claimer(tmp_path, "GPU-a,GPU-b"), _Claimer(tmp_path, "GPU-a,GPU-b")
    try:
        assert {first.claim, second.claim} == {"0", "1"}
        assert _Claimer(tmp_path, "GPU-a,GPU-b", 0).stop() == "None"
        taken = first.stop()
        time.sleep(0.2)
        assert _Claimer(tmp_path, "GPU-a,GPU-b", 0).stop() == taken
    finally:
        first.stop()
        second.stop()
    assert claim_gpu([], tmp_path / "none") is None  # no GPUs: nothing to claim


def test_claims_follow_the_gpu_not_its_index(tmp_path):
    """SLURM and dask-cuda, simulated by the device lists they give. Two jobs on one node both see
    ``0,1``: with device cgroups those are other GPUs (other UUIDs), so both take their own first one;
    without, the same GPUs, so the second job's worker takes the other. dask-cuda's rotated lists: each
    worker takes its own GPU, listed first."""
    claimers = []
    try:
        claimers += [
            _Claimer(tmp_path / "cgroups", "GPU-a,GPU-b"),
            _Claimer(tmp_path / "cgroups", "GPU-c,GPU-d"),
        ]
        assert [c.claim for c in claimers] == ["0", "0"]
        shared = [_Claimer(tmp_path / "shared", "GPU-a,GPU-b"), _Claimer(tmp_path / "shared", "GPU-a,GPU-b")]
        claimers += shared
        assert sorted(c.claim for c in shared) == ["0", "1"]
        rotated = ["GPU-a,GPU-b,GPU-c", "GPU-b,GPU-c,GPU-a", "GPU-c,GPU-a,GPU-b"]
        cuda = [_Claimer(tmp_path / "dask-cuda", gpus) for gpus in rotated]
        claimers += cuda
        assert [c.claim for c in cuda] == ["0", "0", "0"]
        # SLURM's --gres=gpu:3 job with three workers: all see 0,1,2 in one order and take one each.
        job = [_Claimer(tmp_path / "gres", "GPU-a,GPU-b,GPU-c") for _ in range(3)]
        claimers += job
        assert sorted(c.claim for c in job) == ["0", "1", "2"]
    finally:
        for claimer in claimers:
            claimer.stop()


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


def test_a_worker_uses_its_only_gpu_else_claims_one(monkeypatch, caplog):
    """The pinning rule without GPUs: one visible device means cuda:0 (no claim); several, whatever
    ``CUDA_VISIBLE_DEVICES`` says, the worker's claim among them, with a warning when every one is
    claimed."""
    import torch

    from cutswap.pipeline.parallel import identity

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(identity, "visible_gpus", lambda: ["GPU-b"])
    claims = []
    monkeypatch.setattr(identity, "claim_gpu", lambda gpus: claims.append(gpus) or 2)
    assert identity.worker_gpu() == 0 and claims == []
    monkeypatch.setattr(identity, "visible_gpus", lambda: ["GPU-a", "GPU-b", "GPU-c", "GPU-d"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")  # every worker of a --gres=gpu:4 SLURM job
    assert identity.worker_gpu() == 2 and claims == [["GPU-a", "GPU-b", "GPU-c", "GPU-d"]]
    monkeypatch.setattr(identity, "claim_gpu", lambda gpus: None)
    assert identity.worker_gpu() is None
    assert "all 4 GPUs this worker sees (CUDA_VISIBLE_DEVICES=0,1,2,3) are claimed" in caplog.text


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
