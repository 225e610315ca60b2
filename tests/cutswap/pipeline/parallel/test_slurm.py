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
    """Put ``sinfo`` and ``scontrol`` on PATH that print ``outputs[name]`` (and exit with its code)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def install(name: str, text: str, code: int = 0) -> None:
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{text}\nEOF\nexit {code}\n")
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


def test_a_partition_slurm_lacks_and_a_walltime_it_refuses_are_named(fake_slurm):
    fake_slurm("sinfo", "debug*|infinite\nshort|10:00\nshort|10:00")
    assert slurm.partitions() == {"debug": None, "short": 600}
    slurm.check_slurm(None, "48:00:00")  # the default partition has no limit
    slurm.check_slurm("short", "00:10:00")
    with pytest.raises(CutswapError) as caught:
        slurm.check_slurm("gpu", "01:00:00")
    assert str(caught.value) == (
        "parallel.slurm.partition 'gpu': SLURM has no such partition (it has: debug, short); set one of them"
    )
    with pytest.raises(
        CutswapError, match=r"walltime 00:20:00 is longer than partition short allows \(00:10:00\)"
    ):
        slurm.check_slurm("short", "00:20:00")


def test_a_slurm_that_does_not_answer_is_said_in_one_line(fake_slurm, monkeypatch):
    fake_slurm("sinfo", "slurm_load_partitions: Unable to contact slurm controller (connect failure)", code=1)
    with pytest.raises(CutswapError, match=r"SLURM does not answer \(`sinfo` exit 1: slurm_load_partitions"):
        slurm.check_slurm(None, "01:00:00")
    monkeypatch.setenv("PATH", str(Path(os.devnull).parent / "no-such-folder"))
    with pytest.raises(CutswapError, match="`sinfo` is not on PATH"):
        slurm.check_slurm(None, "01:00:00")


def test_a_loopback_scheduler_is_refused_when_the_nodes_are_other_hosts(fake_slurm):
    fake_slurm("scontrol", "NodeName=here NodeAddr=127.0.0.1 CPUs=2")
    slurm.check_scheduler_host("127.0.0.1")  # a single-node SLURM on this host
    fake_slurm("scontrol", "NodeName=n1 NodeAddr=10.1.0.11 CPUs=64\nNodeName=n2 NodeAddr=10.1.0.12 CPUs=64")
    with pytest.raises(
        CutswapError, match=r"scheduler_host 127.0.0.1: SLURM's nodes \(10.1.0.11, 10.1.0.12\)"
    ):
        slurm.check_scheduler_host("127.0.0.1")
    slurm.check_scheduler_host("10.1.0.2")  # this host's address on the cluster's network


def test_slurm_settings_are_checked_where_they_are_read(tmp_path):
    settings = load_settings(
        "configs/demo.yaml", {"parallel.slurm.gpus": 2, "parallel.slurm.extra": ["--qos=long"]}
    )
    assert settings.parallel.slurm.gpus == 2 and settings.parallel.slurm.partition is None
    for bad, word in [
        ({"parallel.slurm.walltime": "2 hours"}, "is not a SLURM time"),
        ({"parallel.slurm.memory": "16"}, "parallel.slurm.memory"),
        ({"parallel.slurm.cpus": 0}, "parallel.slurm.cpus"),
        ({"parallel.slurm.partition": "debug", "parallel.address": "tcp://127.0.0.1:8786"}, "two clusters"),
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
