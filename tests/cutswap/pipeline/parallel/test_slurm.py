"""The SLURM checks and job settings without a SLURM: ``sinfo`` and ``scontrol`` stand-ins on PATH that print
what the real ones print (``tests/e2e/test_slurm.py`` runs against a real single-node SLURM)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from cutswap.errors import CutswapError
from cutswap.pipeline.parallel import slurm
from cutswap.pipeline.settings import load_settings


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``install(name, text, code=0, body=None)`` puts a ``sinfo``, ``scontrol`` or ``sbatch`` on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def install(name: str, text: str, code: int = 0, body: str | None = None) -> None:
        """``name`` prints ``text`` and exits ``code``; or runs the shell ``body``."""
        script = bin_dir / name
        script.write_text(
            f"#!/bin/sh\n{body}\n" if body else f"#!/bin/sh\ncat <<'EOF'\n{text}\nEOF\nexit {code}\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return install


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 300),
        ("05:30", 330),
        ("01:00:00", 3600),
        ("2-03", 183600),
        ("1-00:00:01", 86401),
        ("UNLIMITED", None),
    ],
)
def test_slurm_times_read_as_sbatch_reads_them(text, seconds):
    assert slurm.slurm_seconds(text) == seconds


def _check(partition: str | None, walltime: str, **job) -> None:
    request = {"account": None, "cpus": 4, "memory": "16GB", "gpus": 0, "extra": [], **job}
    slurm.check_slurm(partition, request["account"], walltime, request["cpus"], request["memory"],
                      request["gpus"], request["extra"])  # fmt: skip


def test_a_partition_slurm_lacks_and_a_walltime_it_refuses_are_named(fake_slurm):
    fake_slurm("sinfo", "debug*|infinite\nshort|10:00\nshort|10:00")
    fake_slurm("sbatch", "sbatch: Job 7 to start at 2026-12-06T21:00:00 using 4 processors on nodes here")
    assert slurm.partitions() == {"debug": None, "short": 600}
    _check(None, "48:00:00")  # the default partition has no limit
    _check("short", "00:10:00")
    with pytest.raises(CutswapError) as caught:
        _check("gpu", "01:00:00")
    assert str(caught.value) == (
        "parallel.slurm.partition 'gpu': SLURM has no such partition (it has: debug, short); set one of them"
    )
    with pytest.raises(
        CutswapError, match=r"walltime 00:20:00 is longer than partition short allows \(00:10:00\)"
    ):
        _check("short", "00:20:00")


def test_what_sbatch_refuses_of_the_job_is_said_with_the_request(fake_slurm, tmp_path):
    """The account, the GPUs and the extra lines reach ``sbatch --test-only`` as the jobs will ask them."""
    fake_slurm("sinfo", "gpu*|2-00:00:00")
    refusal = "sbatch: error: Invalid account or account/partition combination specified"
    fake_slurm("sbatch", "", body=f'echo "$@" > {tmp_path}/asked; echo "{refusal}" >&2; exit 1')
    with pytest.raises(CutswapError) as caught:
        _check("gpu", "04:00:00", account="nolab", gpus=2, cpus=8, memory="32GB", extra=["--qos=long"])
    assert str(caught.value).endswith(
        "Invalid account or account/partition combination specified; change the parallel.slurm setting it "
        "names (account, gpus, memory, cpus or extra)"
    )
    assert (tmp_path / "asked").read_text().split() == [
        "--test-only", "--partition=gpu", "--account=nolab", "--time=04:00:00", "--ntasks=1",
        "--cpus-per-task=8", "--mem=32000M", "--gres=gpu:2", "--qos=long", "--wrap", "true",
    ]  # fmt: skip


def test_a_slurm_that_does_not_answer_is_said_in_one_line(fake_slurm, monkeypatch):
    fake_slurm("sinfo", "slurm_load_partitions: Unable to contact slurm controller (connect failure)", code=1)
    with pytest.raises(CutswapError, match=r"SLURM does not answer \(`sinfo` exit 1: slurm_load_partitions"):
        _check(None, "01:00:00")
    monkeypatch.setenv("PATH", str(Path(os.devnull).parent / "no-such-folder"))
    with pytest.raises(CutswapError, match="`sinfo` is not on PATH"):
        _check(None, "01:00:00")


def test_the_scheduler_address_is_one_the_nodes_reach(fake_slurm, monkeypatch):
    fake_slurm("scontrol", "NodeName=here NodeAddr=127.0.0.1 CPUs=2")
    assert slurm.resolve_scheduler_host(None) == "127.0.0.1"  # a single-node SLURM on this host
    fake_slurm("scontrol", "NodeName=n1 NodeAddr=10.1.0.11 CPUs=64\nNodeName=n2 NodeAddr=10.1.0.12 CPUs=64")
    monkeypatch.setattr(slurm, "_route_to", lambda address: "10.1.0.2")  # this host, on the cluster's network
    assert slurm.resolve_scheduler_host(None) == "10.1.0.2"
    assert slurm.resolve_scheduler_host("10.1.0.3") == "10.1.0.3"
    with pytest.raises(CutswapError, match=r"127.0.0.1: SLURM's nodes \(10.1.0.11, 10.1.0.12\) cannot reach"):
        slurm.resolve_scheduler_host("127.0.0.1")
    with pytest.raises(CutswapError, match="names no host the jobs can connect to"):
        slurm.resolve_scheduler_host("0.0.0.0")


def test_the_worker_job_script_asks_for_what_the_settings_say(tmp_path):
    """The job script of a 2-GPU job, built by dask-jobqueue from our arguments (no SLURM needed: a cluster
    that adapts from zero jobs submits none until there is work)."""
    cluster = slurm.slurm_cluster(
        "demo", partition="gpu", account="lab", walltime="04:00:00", cpus=8, memory="32GB", gpus=2,
        extra=["--qos=long"], max_jobs=3, python="/opt/venv/bin/python", scheduler_host="127.0.0.1",
        log_folder=str(tmp_path), failures=3,
    )  # fmt: skip
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    directives = [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH")]
    for wanted in ["-J cutswap-demo", "-p gpu", "-A lab", "-n 1", "--cpus-per-task=8", "--mem=32000M",
                   "-t 04:00:00", "--gres=gpu:2", "--qos=long"]:  # fmt: skip
        assert wanted in directives, (wanted, directives)
    command = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert command.startswith("/opt/venv/bin/python -m distributed.cli.dask_worker tcp://127.0.0.1:")
    flags = ["--nthreads 1", "--nworkers 2", "--resources GPU=1", "--lifetime 13680s", "--host 127.0.0.1"]
    for wanted in [*flags, "--death-timeout 60"]:
        assert wanted in command, (wanted, command)
    assert f"cd {os.getcwd()}" in script
    assert slurm.threads_per_worker(8, 2) == 4 and slurm.threads_per_worker(8, 0) == 8


def test_memory_is_booked_as_written():
    assert [slurm._slurm_memory(m) for m in ("16GB", "16GiB", "500MB", "1.5TB")] == [
        "16000M", "16384M", "500M", "1500000M"
    ]  # fmt: skip


def test_slurm_settings_are_checked_where_they_are_read():
    settings = load_settings(
        "configs/demo.yaml", {"parallel.slurm.gpus": 2, "parallel.slurm.extra": ["--qos=long"]}
    )
    assert settings.parallel.slurm.gpus == 2 and settings.parallel.slurm.partition is None
    for bad, word in [
        ({"parallel.slurm.walltime": "2 hours"}, "is not a SLURM time"),
        ({"parallel.slurm.memory": "16"}, "parallel.slurm.memory"),
        ({"parallel.slurm.cpus": 0}, "parallel.slurm.cpus"),
        ({"parallel.slurm.partition": "debug", "parallel.address": "tcp://127.0.0.1:8786"}, "two clusters"),
        ({"parallel.slurm.gpus": 4, "parallel.slurm.cpus": 2}, "each GPU's worker needs at least one core"),
        (
            {"parallel.slurm.gpus": 2, "train.nproc": 2, "train.batch_size": 8},
            "train.nproc 2 with parallel.slurm",
        ),
    ]:
        with pytest.raises((CutswapError, ValidationError), match=word):
            load_settings("configs/demo.yaml", bad)


def test_job_names_are_safe_for_scancel():
    assert slurm.job_name("demo") == "cutswap-demo"
    assert slurm.job_name("my run; rm -rf /") == "cutswap-my_run__rm_-rf__"


def test_dask_jobqueue_is_imported_in_any_thread_without_taking_sigint():
    """dask-jobqueue 0.9.0 sets a SIGINT handler when imported: from a task's thread that fails, and from
    the main thread it would replace the run's own stop; ``_slurm_cluster_class`` keeps both from
    happening."""
    script = textwrap.dedent(
        """
        import signal, threading
        from cutswap.pipeline.parallel.slurm import _slurm_cluster_class
        ours = lambda *_: None
        signal.signal(signal.SIGINT, ours)
        found = []
        thread = threading.Thread(target=lambda: found.append(_slurm_cluster_class().__name__))
        thread.start(); thread.join()
        print(found, signal.getsignal(signal.SIGINT) is ours)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "['SLURMCluster'] True", done.stderr[-2000:]
