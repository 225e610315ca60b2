"""The benchmark with its workers as jobs of a real SLURM: a single-node slurm-wlm with its own munged on
127.0.0.1 (``scripts/slurm-lib.sh``), ``cutswap run`` with ``parallel.slurm`` as a user runs it.

Needs root and Debian's slurm-wlm and munge (``make test`` installs them, ``scripts/ensure-slurm.sh``);
skips with the reason otherwise. Each test prints what it measured (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import tiny_config

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "a single-node SLURM here runs as root"
    for tool in ("slurmctld", "slurmd", "munged", "sbatch"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (scripts/ensure-slurm.sh installs Debian's slurm-wlm and munge)"
    return None


def _lib(base: Path, call: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"source scripts/slurm-lib.sh && {call} {base}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def slurm():
    """A running SLURM whose ``SLURM_CONF`` this process's commands (and the runs it starts) use."""
    if why := _missing():
        pytest.skip(why)
    # Not under pytest's folder: munged runs as the munge user, who may not enter it (mode 0700).
    base = Path(tempfile.mkdtemp(prefix="cutswap-slurm-"))
    started = time.monotonic()
    up = _lib(base, "slurm_start")
    if up.returncode != 0:
        pytest.fail(f"SLURM did not start: {up.stderr[-3000:]}")
    print(f"single-node SLURM up in {time.monotonic() - started:.1f} s")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(base / "slurm.conf")
    try:
        yield base
    finally:
        _lib(base, "slurm_stop")
        shutil.rmtree(base, ignore_errors=True)
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before


def _queue() -> list[str]:
    listed = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True, check=True)
    return listed.stdout.splitlines()


def _empty_queue_within(seconds: float) -> float:
    start = time.monotonic()
    while _queue():
        assert time.monotonic() - start < seconds, (
            f"SLURM jobs left {seconds:.0f} s after the run: {_queue()}"
        )
        time.sleep(0.5)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from cutswap.data.builtin.textures import build_textures

    return build_textures(
        tmp_path_factory.mktemp("data") / "textures",
        seed=1,
        image_size=64,
        n_train=8,
        n_test_good=3,
        n_test_defect=1,
    )


def _preset(base: Path, data: Path, **train) -> Path:
    dataset = {"name": "mvtec", "root": str(data), "categories": ["brick"], "image_size": 32}
    config = tiny_config("slurm", dataset)
    config["train"].update(train)
    config.update(storage_root=str(base / "storage"), reports_root=str(base / "reports"))
    config["parallel"] = {
        "slurm": {
            "partition": "debug",
            "walltime": "00:20:00",
            "cpus": 1,
            "memory": "2GB",
            "max_jobs": 2,
            "log_folder": str(base / "slurm-logs"),
        }
    }
    path = base / "slurm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(preset: Path, *args: str, **kw) -> subprocess.Popen:
    """``cutswap run --preset PRESET ARGS...`` as its own process, output in ``.stdout``."""
    argv = [sys.executable, "-m", "flows.cli", "run", "--preset", str(preset), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(preset.parent / "prefect")}
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    )


def _stores(base: Path, stage: str) -> dict[str, dict]:
    return {
        p.parent.name: json.loads(p.read_text())["attributes"]
        for p in sorted((base / "storage" / stage).glob("*/zarr.json"))
        if not p.parent.name.startswith(".")  # a killed job's partial store, collected by later runs
    }


def test_a_run_on_slurm_jobs_ends_with_a_report_and_an_empty_queue(slurm, data, tmp_path):
    started = time.monotonic()
    run = _run(_preset(tmp_path, data))
    out, _ = run.communicate(timeout=900)
    took = time.monotonic() - started
    assert run.returncode == 0, out[-4000:]
    drained = _empty_queue_within(30)
    print(f"cutswap run on SLURM jobs: {took:.0f} s, queue empty {drained:.1f} s after its exit")
    assert "dask: workers as SLURM jobs cutswap-slurm on partition debug (at most 2 at once)" in out
    assert (tmp_path / "reports" / "slurm" / "summary.md").is_file()
    jobs = {
        stage: {a["provenance"]["writer"].get("slurm_job_id") for a in _stores(tmp_path, stage).values()}
        for stage in ("train", "evaluate")
    }
    assert all(ids and None not in ids for ids in jobs.values()), jobs  # every one written in a job
    assert list((tmp_path / "slurm-logs").glob("cutswap-slurm-*.out"))  # the jobs' own output


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("parallel.slurm.partition=nosuch", "parallel.slurm.partition 'nosuch': SLURM has no such partition"),
        ("parallel.slurm.walltime=00:20:00", "is longer than partition short allows (00:10:00)"),
    ],
)
def test_a_partition_or_walltime_slurm_refuses_is_named_before_any_work(slurm, data, tmp_path, setting, said):
    overrides = (
        ["--set", setting]
        if "partition" in setting
        else ["--set", "parallel.slurm.partition=short", "--set", setting]
    )
    run = _run(_preset(tmp_path, data), *overrides)
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 2, out
    assert said in out and len(out.strip().splitlines()) == 1, out
    assert not list((tmp_path / "storage").glob("*/*")) and _queue() == []  # no store, no job


def test_a_worker_job_cancelled_mid_training_resumes_in_another_and_ends_as_uninterrupted(
    slurm, data, tmp_path
):
    preset = _preset(tmp_path, data, methods=["cutpaste"], steps=300, checkpoint_every=4, log_every=4)
    run = _run(preset)
    work = tmp_path / "storage" / "train" / ".work"
    deadline = time.monotonic() + 600
    while not list(work.glob("*/resume.pt")):
        assert run.poll() is None and time.monotonic() < deadline, run.stdout.read()[-4000:]
        time.sleep(0.5)
    (cancelled,) = [line.split()[0] for line in _queue() if "RUNNING" in line][:1]
    subprocess.run(["scancel", cancelled], check=True)
    out, _ = run.communicate(timeout=900)
    assert run.returncode == 0, out[-4000:]
    _empty_queue_within(30)
    (train,) = _stores(tmp_path, "train").values()
    assert train["resumed_from"] >= 4, train
    assert train["provenance"]["writer"]["slurm_job_id"] != cancelled
    # The same training, uninterrupted, in a SLURM job of the same size (one core: torch's reductions, and so
    # the float rounding that training amplifies, depend on its thread count): the same weights.
    alone = tmp_path / "alone"
    alone.mkdir()
    config = yaml.safe_load(preset.read_text())
    config.update(storage_root=str(alone / "storage"), reports_root=str(alone / "reports"))
    (alone / "slurm.yaml").write_text(yaml.safe_dump(config))
    again = _run(alone / "slurm.yaml")
    assert again.wait(900) == 0, again.stdout.read()[-4000:]
    (name,) = _stores(tmp_path, "train")
    assert set(_stores(alone, "train")) == {name}  # one key: the same training
    from cutswap.learn.checkpoint import load_model_file

    ours = load_model_file(tmp_path / "storage" / "train" / name / "checkpoint.pt").state_dict()
    theirs = load_model_file(alone / "storage" / "train" / name / "checkpoint.pt").state_dict()
    for key, value in ours.items():
        np.testing.assert_array_equal(value.numpy(), theirs[key].numpy(), err_msg=key)


def test_a_stopped_run_leaves_no_job_in_the_queue(slurm, data, tmp_path):
    run = _run(_preset(tmp_path, data, steps=5000), start_new_session=True)
    deadline = time.monotonic() + 600
    while not [line for line in _queue() if "RUNNING" in line]:
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.5)
    time.sleep(5)  # a training under way in a job
    os.killpg(run.pid, signal.SIGINT)
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 130, out[-4000:]
    drained = _empty_queue_within(30)
    print(f"SIGINT: exit 130, queue empty {drained:.1f} s later")


def test_the_flow_runs_as_a_batch_job_with_its_workers_as_further_jobs(slurm, data, tmp_path):
    """``sbatch scripts/slurm-run.sh PRESET``: the documented way to run the flow itself inside SLURM."""
    preset = _preset(tmp_path, data)
    config = yaml.safe_load(preset.read_text())
    config["parallel"]["slurm"]["max_jobs"] = 1  # the flow's job holds one of the node's cores
    preset.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    sbatch = ["sbatch", "--wait", "--parsable", "--cpus-per-task=1", "--mem=3G"]
    env = {**os.environ, "CUTSWAP_PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    done = subprocess.run(
        [*sbatch, "--output", str(tmp_path / "flow-%j.out"), "scripts/slurm-run.sh", str(preset)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    flow_job = done.stdout.strip().split(";")[0]
    out = next(tmp_path.glob("flow-*.out"), None)
    said = out.read_text() if out else ""
    assert done.returncode == 0, done.stderr + said[-4000:]
    print(f"sbatch scripts/slurm-run.sh: {time.monotonic() - started:.0f} s")
    assert "Done. Report:" in said and (tmp_path / "reports" / "slurm" / "summary.md").is_file()
    writers = [a["provenance"]["writer"] for a in _stores(tmp_path, "train").values()]
    assert writers and all(w.get("slurm_job_id") not in (None, flow_job) for w in writers), writers
    _empty_queue_within(30)


def test_a_worker_near_its_walltime_hands_its_training_on_without_a_failure(slurm, data, tmp_path):
    """A 3-minute walltime: workers retire after 60-90 s (``--lifetime``), so a longer training moves to a
    new job, resumes from its checkpoint, and no death counts against it (``allowed_failures: 0`` would fail
    the run at the first)."""
    preset = _preset(tmp_path, data, methods=["cutpaste"], steps=100000, checkpoint_every=20, log_every=20)
    config = yaml.safe_load(preset.read_text())
    config["parallel"]["slurm"].update(walltime="00:03:00", max_jobs=1)
    config["parallel"]["allowed_failures"] = 0
    preset.write_text(yaml.safe_dump(config))
    run = _run(preset, "--set", "train.steps=2000")
    out, _ = run.communicate(timeout=900)
    assert run.returncode == 0, out[-4000:]
    (train,) = _stores(tmp_path, "train").values()
    print(f"retired near the walltime: resumed from step {train['resumed_from']}")
    assert train["resumed_from"] and train["resumed_from"] > 0, train
    assert "died during" not in out, out[-4000:]
