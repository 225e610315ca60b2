"""The benchmark on machines that share nothing but a bucket: a real S3-compatible server, a Dask scheduler
and two workers, each a separate process with its own working folder, HOME, TORCH_HOME and TMPDIR, and
the flow's folder hidden from the workers (a private mount namespace with an empty tmpfs over it).

The flow runs as a user would run it (``cutswap run`` with ``parallel.address``), stores and report in the
bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config
from tests.support.topology import Topology

pytestmark = pytest.mark.slow


@pytest.fixture
def topology(tmp_path, s3_server):
    flow = tmp_path / "flow"
    flow.mkdir()
    made = Topology(tmp_path, flow, s3_server.env)
    try:
        yield made
    finally:
        made.stop()


def _preset(folder: Path, bucket: str, **train) -> Path:
    # 136 training images: two shards of the precompute stages, so they leave the flow's process
    dataset = {"name": "textures", "categories": ["brick"], "image_size": 32,
               "textures": {"n_train": 136, "n_test_good": 6, "n_test_defect": 2}}  # fmt: skip
    config = tiny_config("dist", dataset, evaluate={"max_fit_patches": 400})
    config["saliency"]["input_size"] = 64
    config["train"].update(train)
    config.update(storage_root=f"{bucket}/storage", reports_root=f"{bucket}/reports")
    path = folder / "dist.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _argv(preset: Path, address: str) -> list[str]:
    """``cutswap run`` of a preset on the cluster at ``address``."""
    return [
        sys.executable,
        "-m",
        "flows.cli",
        "run",
        "--preset",
        str(preset),
        "--set",
        f"parallel.address={address}",
    ]


def _run(flow: Path, preset: Path, address: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        _argv(preset, address),
        cwd=flow,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "XDG_CACHE_HOME": str(flow / "cache")},
    )


def _attrs(s3_server, bucket: str, stage: str) -> list[dict]:
    """The root attrs of every committed store of a stage in the bucket."""
    from cutswap import roots
    from cutswap.pipeline.stores import objects

    keys = s3_server.keys(f"{bucket}/storage/{stage}")
    stores = sorted({k.split("/")[0] for k in keys if "/commit-" in k})
    out = []
    for store in stores:
        folder = roots.join(bucket, "storage", stage, store)
        marker = objects.latest_commit(folder)
        meta = roots.read_bytes(roots.join(objects.attempt_url(folder, marker), "zarr.json"))
        out.append(json.loads(meta)["attributes"])
    return out


def _local_store_folders(*folders: Path) -> list[Path]:
    """Folders named like a store root or a URL read as a path (Dask's own spill folder, under its
    ``dask-scratch-space``, is Dask's)."""
    return [
        p
        for f in folders
        for p in f.rglob("*")
        if p.is_dir() and p.name in ("storage", "s3:") and "dask-scratch-space" not in p.parts
    ]


def test_a_run_on_remote_workers_keeps_everything_in_the_bucket(topology, s3_server, tmp_path):
    topology.start(["w1", "w2"])
    bucket = s3_server.bucket()
    flow = topology.hidden
    preset = _preset(flow, bucket, methods=["cutswap", "cutpaste", "random-swap"])
    first = _run(flow, preset, topology.address)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:] + topology.logs()

    for stage in ("ingest", "saliency", "cluster", "pairs", "train", "evaluate"):
        assert _attrs(s3_server, bucket, stage), f"no committed {stage} store"
    workers = set()
    for stage in ("saliency", "cluster", "pairs"):
        workers |= {w for a in _attrs(s3_server, bucket, stage) for w in a["workers"]}
    for stage in ("train", "evaluate"):
        workers |= {a["worker"] for a in _attrs(s3_server, bucket, stage)}
    assert {"w1", "w2"} <= workers, workers  # both workers wrote stores
    assert "in-process" not in {w for a in _attrs(s3_server, bucket, "saliency") for w in a["workers"]}
    assert "reports/dist/provenance.json" in s3_server.keys(bucket)
    assert not _local_store_folders(tmp_path)  # no storage/ or s3: folder anywhere, flow or workers

    listed = s3_server.keys(bucket)
    again = _run(flow, preset, topology.address)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    stores = [k for k in s3_server.keys(bucket) if k.startswith("storage/")]
    assert stores == [k for k in listed if k.startswith("storage/")]  # every store reused, nothing written


def test_a_worker_killed_mid_training_the_job_resumes_on_the_other(topology, s3_server):
    from distributed import Client

    topology.start(["w1", "w2"])
    bucket = s3_server.bucket()
    flow = topology.hidden
    preset = _preset(flow, bucket, methods=["cutpaste"], steps=300, checkpoint_every=4, log_every=4)
    run = subprocess.Popen(
        _argv(preset, topology.address),
        cwd=flow,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(flow / "cache")},
    )
    try:
        deadline = time.monotonic() + 600
        while not any(k.endswith("resume.pt") for k in s3_server.keys(f"{bucket}/storage/train")):
            assert run.poll() is None and time.monotonic() < deadline, topology.logs()
            time.sleep(0.5)
        with Client(topology.address, timeout=30) as client:
            info = client.scheduler_info(n_workers=-1)["workers"]
            busy = [info[a]["name"] for a, keys in client.processing().items() if keys]
        assert len(busy) == 1, busy
        topology.kill(busy[0])
        out, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out[-4000:] + topology.logs()
    (train,) = _attrs(s3_server, bucket, "train")
    survivor = ({"w1", "w2"} - set(busy)).pop()
    assert train["worker"] == survivor and train["resumed_from"] >= 4, train
    # The console says the death, naming the job, and the job's second start, in one line each.
    said = [
        line.split(" ", 1)[1] for line in out.splitlines() if " died during " in line or "resumed on" in line
    ]
    assert len(said) == 2, out[-4000:]
    assert said[0].startswith("WARNING worker tcp://127.0.0.1:") and said[0].endswith(
        " died during train brick/cutpaste/seed 0; the job runs again when a worker can take it"
    ), said
    assert said[1].startswith("train brick/cutpaste/seed 0 resumed on worker tcp://127.0.0.1:"), said


def test_a_data_parallel_training_is_a_job_of_one_worker(topology, s3_server):
    """``train.nproc: 2`` on a cluster by address: torchrun starts on a worker (gloo ranks on its CPU),
    not in the flow's process, and the store says which worker ran it."""
    topology.start(["w1", "w2"])
    bucket = s3_server.bucket()
    flow = topology.hidden
    preset = _preset(flow, bucket, methods=["cutpaste"], steps=4, nproc=2)
    done = _run(flow, preset, topology.address)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:] + topology.logs()
    (train,) = _attrs(s3_server, bucket, "train")
    assert train["nproc"] == 2 and train["worker"] in {"w1", "w2"}, train
