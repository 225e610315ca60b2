"""Dask workers as SLURM jobs: dask-jobqueue's ``SLURMCluster``, and the checks a SLURM run makes first.

The scheduler runs in the flow's process; each SLURM job runs ``dask worker`` processes (one per GPU the
job asks for, else one) that connect back to it::

    flow host: Dask scheduler (this process) <── tcp ── SLURM job 1201: worker(s) ── cuda:0 (claimed by UUID)
                                              <── tcp ── SLURM job 1202: worker(s)
    every job: #SBATCH -J cutswap-<run> -p <partition> -A <account> -t <walltime> -n 1
               --cpus-per-task=<cpus> --mem=<memory> [--gres=gpu:<gpus>] <extra lines>

Why dask-jobqueue rather than our own ``sbatch`` of ``dask worker``: it writes the job script from the
same settings, grows and shrinks the jobs with the scheduler's queue (``adapt``: a job starts when the run
has work for it and ends when it has none, at most ``max_jobs`` at once), cancels its jobs at close
(``scancel``), and its workers leave when the scheduler is gone (``death_timeout``): the four things a
hand-written loop would need. Its last release, 0.9.0 (2024), works with the distributed installed here
(``tests/e2e/test_slurm.py`` runs it against a real SLURM); it names the job-script options
``job_extra_directives`` and ``worker_extra_args``, which are the ones used below.

Jobs end when the run ends, however it ends: ``close`` cancels them (the pool closes it on success, on
failure and on SIGINT/SIGTERM); a run killed at once (Ctrl-C twice) cancels them by job name from
``cutswap.app.stopping``'s last call; a run that is SIGKILLed leaves workers that exit ``DEATH_TIMEOUT``
seconds after their scheduler went silent, which ends their jobs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
import sys
from typing import Any

from cutswap.errors import CutswapError

log = logging.getLogger(__name__)

#: Seconds a worker waits for a scheduler that went away before it exits (and its job with it).
DEATH_TIMEOUT = 60
#: Seconds the checks give a SLURM command (``sinfo``) before saying SLURM does not answer.
ANSWER_SECONDS = 20


def slurm_seconds(text: str) -> int | None:
    """A SLURM time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) in seconds;
    None for ``infinite`` / ``UNLIMITED``. These are ``sbatch --time``'s formats (``man sbatch``)."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:
        h, m, s = (parts + [0, 0])[:3]
    elif len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts
    return ((int(days or 0) * 24 + h) * 60 + m) * 60 + s


def _sinfo(*args: str) -> str:
    if shutil.which("sinfo") is None:
        raise CutswapError(
            "parallel.slurm is set, but SLURM's `sinfo` is not on PATH: run from a host of the cluster "
            "(a login node) with SLURM's commands, or unset parallel.slurm"
        )
    try:
        done = subprocess.run(
            ["sinfo", *args], capture_output=True, text=True, timeout=ANSWER_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise CutswapError(
            f"parallel.slurm: SLURM does not answer (`sinfo` took more than {ANSWER_SECONDS} s); check "
            "slurmctld (`scontrol ping`) or unset parallel.slurm"
        ) from None
    if done.returncode != 0:
        said = ((done.stderr or done.stdout).strip().splitlines() or ["no message"])[-1]
        raise CutswapError(
            f"parallel.slurm: SLURM does not answer (`sinfo` exit {done.returncode}: {said}); check "
            "slurmctld (`scontrol ping`) or unset parallel.slurm"
        )
    return done.stdout


def partitions() -> dict[str, int | None]:
    """The cluster's partitions and each one's time limit in seconds (None: none); the default one first."""
    rows = [line.split("|") for line in _sinfo("-h", "-o", "%P|%l").splitlines() if "|" in line]
    found: dict[str, int | None] = {}
    for name, limit in sorted(rows, key=lambda r: not r[0].endswith("*")):
        name = name.rstrip("*")
        if name not in found:
            found[name] = slurm_seconds(limit)
    return found


def check_slurm(partition: str | None, walltime: str) -> None:
    """Refuse, before any work, a SLURM that does not answer, a partition it does not have and a walltime
    longer than the partition allows, each in one line naming the setting and the fix. (The account is
    checked by SLURM at the first ``sbatch``: without accounting, ``sacctmgr`` cannot tell.)"""
    found = partitions()
    if not found:
        raise CutswapError("parallel.slurm: SLURM lists no partition (`sinfo`); ask the cluster's admins")
    name = partition or next(iter(found))
    if name not in found:
        raise CutswapError(
            f"parallel.slurm.partition {name!r}: SLURM has no such partition (it has: {', '.join(found)}); "
            "set one of them"
        )
    limit, asked = found[name], slurm_seconds(walltime)
    if limit is not None and asked is not None and asked > limit:
        raise CutswapError(
            f"parallel.slurm.walltime {walltime} is longer than partition {name} allows "
            f"({_clock(limit)}); set parallel.slurm.walltime to at most {_clock(limit)} (trainings resume "
            "from their checkpoints in the next job) or choose another partition"
        )


def _clock(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def job_name(run: str) -> str:
    """The SLURM job name of a run's workers: ``scancel --name`` finds them, people read it in squeue."""
    return "cutswap-" + re.sub(r"[^A-Za-z0-9_.-]", "_", run)[:40]


def slurm_cluster(
    run: str,
    partition: str | None,
    account: str | None,
    walltime: str,
    cpus: int,
    memory: str,
    gpus: int,
    extra: list[str],
    max_jobs: int,
    python: str | None,
    scheduler_host: str,
    log_folder: str,
    failures: int,
) -> Any:
    """A ``SLURMCluster`` whose jobs scale with the run's queue (at most ``max_jobs``), its scheduler on
    this host. A job runs one worker per GPU it asks for (each claims its own, ``identity.worker_gpu``,
    and advertises ``GPU=1`` so that a GPU job waits for one), else one worker with the job's CPUs.
    ``failures``: deaths of a job's worker before the job fails (the scheduler's ``allowed_failures``)."""
    SLURMCluster = _slurm_cluster_class()
    processes = max(gpus, 1)
    directives = [*([f"--gres=gpu:{gpus}"] if gpus else []), *extra]
    worker_args = ["--resources", "GPU=1"] if gpus else []
    if _is_loopback(scheduler_host):  # a single-node SLURM: the workers listen on loopback too
        worker_args += ["--host", scheduler_host]
    cluster = SLURMCluster(
        queue=partition,
        account=account,
        walltime=walltime,
        cores=cpus,
        processes=processes,
        memory=memory,
        job_name=job_name(run),
        job_extra_directives=directives,
        worker_extra_args=worker_args,
        python=python or sys.executable,
        death_timeout=DEATH_TIMEOUT,
        log_directory=log_folder,
        # The jobs start in this folder with this process's environment (PATH, PYTHONPATH, CUTSWAP_*,
        # credentials), as a local pool's workers do: sbatch's defaults (submission folder, --export=ALL).
        scheduler_options={
            "host": scheduler_host,
            "dashboard_address": f"{scheduler_host}:0",
            "allowed_failures": failures,
        },
    )
    cluster.adapt(minimum_jobs=0, maximum_jobs=max_jobs)
    return cluster


def _slurm_cluster_class() -> Any:
    """``dask_jobqueue.SLURMCluster``, imported without its side effect: dask-jobqueue 0.9.0's
    ``runner`` module sets ``signal.signal(SIGINT, lambda *_: sys.exit())`` when imported. In the main
    thread that would replace the run's own SIGINT handling (``flows.launch``: mark the flow run crashed,
    close the pool, cancel the jobs) with a bare exit; in any other thread (the pool starts in a task's
    thread) the import fails with ``ValueError: signal only works in main thread``. Its runner is not
    used here, so the handler it asks for is not installed."""
    import signal

    install = signal.signal
    signal.signal = lambda signum, handler: signal.getsignal(signum)  # type: ignore[assignment]
    try:
        from dask_jobqueue import SLURMCluster
    finally:
        signal.signal = install
    return SLURMCluster


def check_scheduler_host(scheduler_host: str) -> None:
    """Refuse a loopback scheduler address when SLURM's nodes are other hosts: their workers could not
    reach it, and every job would wait ``parallel.worker_timeout`` for nothing."""
    if not _is_loopback(scheduler_host):
        return
    addresses = re.findall(r"NodeAddr=(\S+)", _scontrol("show", "nodes", "-o"))
    elsewhere = sorted({a for a in addresses if not _is_this_host(a)})
    if elsewhere:
        raise CutswapError(
            f"parallel.slurm.scheduler_host {scheduler_host}: SLURM's nodes ({', '.join(elsewhere[:5])}) "
            "cannot reach a scheduler on this host's loopback; set it to this host's address on the "
            "cluster's network (`hostname -i`)"
        )


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host == "localhost"


def _is_this_host(address: str) -> bool:
    import socket

    if address.startswith("127.") or address in ("localhost", socket.gethostname()):
        return True
    with contextlib.suppress(OSError):
        return socket.gethostbyname(address).startswith("127.")
    return False


def _scontrol(*args: str) -> str:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=ANSWER_SECONDS)
        if done.returncode == 0:
            return done.stdout
    return ""


def cancel_jobs(run: str) -> None:
    """``scancel`` the run's worker jobs by name: the last call of a run killed at once, when the pool
    had no time to close its cluster. Never raises: the process is ending."""
    with contextlib.suppress(Exception):
        subprocess.run(
            ["scancel", "--name", job_name(run), "--user", _user()], capture_output=True, timeout=10
        )


def _user() -> str:
    import getpass

    return getpass.getuser()
