"""Dask workers as SLURM jobs: dask-jobqueue's ``SLURMCluster``, and the checks a SLURM run makes first.

The scheduler runs in the flow's process; each SLURM job runs ``dask worker`` processes (one per GPU the
job asks for, else one, each running one job at a time with its share of the job's CPUs) that connect
back to it::

    flow host: Dask scheduler (this process) <── tcp ── SLURM job 1201: worker(s) ── cuda:0 (claimed by UUID)
                                              <── tcp ── SLURM job 1202: worker(s)
    every job: #SBATCH -J cutswap-<run> -p <partition> -A <account> -t <walltime> -n 1
               --cpus-per-task=<cpus> --mem=<memory in MB> [--gres=gpu:<gpus>] <extra lines>
               cd <the run's folder>; python -m distributed.cli.dask_worker ... --lifetime <walltime - margin>

Why dask-jobqueue rather than our own ``sbatch`` of ``dask worker``: it writes the job script from the
same settings, grows and shrinks the jobs with the scheduler's queue (``adapt``: a job starts when the run
has work for it and ends when it has none, at most ``max_jobs`` at once), cancels its jobs at close
(``scancel``, pending ones included), and its workers leave when the scheduler is gone
(``death_timeout``): the four things a hand-written loop would need. Its last release, 0.9.0 (2024),
works with the distributed installed here (``tests/e2e/test_slurm.py`` runs it against a real SLURM), with
one exception handled in ``_slurm_cluster_class``: importing it installs a SIGINT handler.

Jobs end when the run ends, however it ends: ``close`` cancels them (the pool closes it on success, on
failure and on SIGINT/SIGTERM); a run ended at once (Ctrl-C twice) cancels them by job id from
``cutswap.app.stopping``'s last call; a run that is SIGKILLed leaves workers that exit once their
scheduler is gone (at once when connected, ``DEATH_TIMEOUT`` seconds for a job that starts later), which
ends their jobs. A worker retires a few minutes before its walltime (``--lifetime``), so the scheduler
moves its training to another job, which resumes from the checkpoint, without counting a failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
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


def check_slurm(
    partition: str | None,
    account: str | None,
    walltime: str,
    cpus: int,
    memory: str,
    gpus: int,
    extra: list[str],
) -> None:
    """Refuse, before any work, what SLURM would refuse of the worker jobs, each in one line naming the
    setting and the fix: a SLURM that does not answer, a partition it does not have, a walltime longer than
    the partition allows; then the whole request (account, GPUs, memory, the extra lines) through
    ``sbatch --test-only``, which SLURM answers without queueing anything."""
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
    lines = sbatch_lines(partition, account, walltime, cpus, memory, gpus, extra)
    try:
        done = subprocess.run(
            ["sbatch", "--test-only", *lines, "--wrap", "true"],
            capture_output=True,
            text=True,
            timeout=ANSWER_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CutswapError(f"parallel.slurm: `sbatch --test-only` did not answer ({exc})") from None
    if done.returncode != 0:
        said = [line.removeprefix("sbatch: error: ") for line in done.stderr.strip().splitlines()] or ["?"]
        raise CutswapError(
            f"parallel.slurm: SLURM refuses the worker jobs ({' '.join(lines)}): {said[-1]}; change the "
            "parallel.slurm setting it names (account, gpus, memory, cpus or extra)"
        )


def _clock(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def job_name(run: str) -> str:
    """The SLURM job name of a run's workers: ``scancel --name`` finds them, people read it in squeue."""
    return "cutswap-" + re.sub(r"[^A-Za-z0-9_.-]", "_", run)[:40]


def sbatch_lines(
    partition: str | None,
    account: str | None,
    walltime: str,
    cpus: int,
    memory: str,
    gpus: int,
    extra: list[str],
) -> list[str]:
    """What every worker job asks SLURM for, as sbatch options (the preflight's ``sbatch --test-only``
    submits exactly these)."""
    lines = [f"--partition={partition}"] if partition else []
    lines += [f"--account={account}"] if account else []
    lines += [f"--time={walltime}", "--ntasks=1", f"--cpus-per-task={cpus}", f"--mem={_slurm_memory(memory)}"]
    return lines + ([f"--gres=gpu:{gpus}"] if gpus else []) + list(extra)


def _slurm_memory(memory: str) -> str:
    """``16GB`` as sbatch's ``--mem`` in whole megabytes (``16000M``; ``16GiB``: ``16384M``), so SLURM books
    what the setting says (dask-jobqueue's own conversion would ask for ``15G``)."""
    number, unit, binary = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT])(i?)B", memory.strip()).groups()
    power = "KMGT".index(unit) - 1  # relative to megabytes
    base = 1024 if binary else 1000
    return f"{max(1, int(float(number) * base**power))}M"


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
    ``scheduler_host`` (``resolve_scheduler_host``).

    A job runs one worker per GPU it asks for (each claims its own, ``identity.worker_gpu``, and advertises
    ``GPU=1`` so that a GPU job waits for one), else one worker; each worker runs one job at a time with
    its share of the job's CPUs as torch threads (``threads_per_worker``). Workers retire a few minutes
    before the walltime (``--lifetime``), so the scheduler reruns their training elsewhere, from its
    checkpoint, without counting a death against it; ``failures`` counts the other deaths (the
    scheduler's ``allowed_failures``)."""
    import dask

    SLURMCluster = _slurm_cluster_class()
    processes = max(gpus, 1)
    worker_args = ["--resources", "GPU=1"] if gpus else []
    if _is_loopback(scheduler_host):  # a single-node SLURM: the workers listen on loopback too
        worker_args += ["--host", scheduler_host]
    if (seconds := slurm_seconds(walltime)) is not None:
        worker_args += [
            "--lifetime",
            f"{max(60, seconds - _retire_margin(seconds))}s",
            "--lifetime-stagger",
            "30s",
        ]
    # dask-jobqueue writes -p, -A, -t, --cpus-per-task and --mem from its own arguments; the GPUs and the
    # user's lines are directives of their own.
    directives = [*([f"--gres=gpu:{gpus}"] if gpus else []), *extra]
    # A task kind the scheduler has not timed yet counts as 1 h of work (not 0.5 s), so ``adapt`` asks for
    # a job per queued training at once rather than one job, then more once that one has run a while.
    with dask.config.set({"distributed.scheduler.unknown-task-duration": "1h"}):
        cluster = SLURMCluster(
            queue=partition,
            account=account,
            walltime=walltime,
            cores=processes,  # one thread per worker: a worker runs one job at a time
            job_cpu=cpus,
            processes=processes,
            memory=memory,
            job_mem=_slurm_memory(memory),
            job_name=job_name(run),
            job_extra_directives=directives,
            worker_extra_args=worker_args,
            python=python or sys.executable,
            death_timeout=DEATH_TIMEOUT,
            log_directory=log_folder,
            silence_logs=False,
            # The jobs start in this folder with this process's environment (PATH, PYTHONPATH, CUTSWAP_*,
            # credentials), as a local pool's workers do.
            job_script_prologue=[f"cd {shlex.quote(os.getcwd())}"],
            scheduler_options={
                "host": scheduler_host,
                "dashboard_address": f"{scheduler_host}:0",
                "allowed_failures": failures,
            },
        )
    cluster.adapt(minimum_jobs=0, maximum_jobs=max_jobs)
    return cluster


def _retire_margin(seconds: int) -> int:
    """How long before its walltime a worker retires: 5 % of it, between 2 and 15 minutes."""
    return min(900, max(120, seconds // 20))


def threads_per_worker(cpus: int, gpus: int) -> int:
    """Torch threads of one worker's job: its share of the SLURM job's CPUs."""
    return max(1, cpus // max(gpus, 1))


def job_ids(cluster: Any) -> list[str]:
    """The SLURM job ids the cluster submitted (running or pending)."""
    return [str(job.job_id) for job in list(cluster.workers.values()) if getattr(job, "job_id", None)]


def pending(ids: list[str]) -> dict[str, str]:
    """Which of ``ids`` SLURM has not started yet, with its reason (``Resources``, ``Priority``, ...)."""
    if not ids:
        return {}
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        listed = subprocess.run(
            ["squeue", "-h", "-t", "PENDING,CONFIGURING", "-o", "%i %r", "-j", ",".join(ids)],
            capture_output=True,
            text=True,
            timeout=ANSWER_SECONDS,
        ).stdout
        return dict(line.split(" ", 1) for line in listed.splitlines() if " " in line)
    return {}


def cancel_jobs(ids: list[str]) -> None:
    """``scancel`` these jobs: the last call of a run ended at once, when the pool had no time to close
    its cluster. Never raises: the process is ending."""
    if ids:
        with contextlib.suppress(Exception):
            subprocess.run(["scancel", *ids], capture_output=True, timeout=10)


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


def resolve_scheduler_host(scheduler_host: str | None) -> str:
    """Where the worker jobs reach the run's scheduler, which listens there.

    None: loopback when SLURM's only nodes are this host, else this host's address on the route to the
    first node (what the kernel would use to reach it; ``hostname -i`` can answer 127.0.1.1). A loopback
    address while the nodes are other hosts is refused: their workers could not reach it, and every job
    would wait for nothing; so is a wildcard address, which names no host to connect to."""
    nodes = sorted(set(re.findall(r"NodeAddr=(\S+)", _scontrol("show", "nodes", "-o"))))
    elsewhere = [a for a in nodes if not _is_this_host(a)]
    if scheduler_host in ("0.0.0.0", "::", ""):
        raise CutswapError(
            f"parallel.slurm.scheduler_host {scheduler_host!r} names no host the jobs can connect to; give "
            "this host's address on the cluster's network, or leave it unset to find it"
        )
    if scheduler_host is None:
        return _route_to(elsewhere[0]) if elsewhere else "127.0.0.1"
    if _is_loopback(scheduler_host) and elsewhere:
        hint = _route_to(elsewhere[0])
        raise CutswapError(
            f"parallel.slurm.scheduler_host {scheduler_host}: SLURM's nodes ({', '.join(elsewhere[:5])}) "
            f"cannot reach a scheduler on this host's loopback; set it to this host's address on the "
            f"cluster's network ({hint} reaches {elsewhere[0]}), or leave it unset"
        )
    return scheduler_host


def _route_to(address: str) -> str:
    """This host's address on the route to ``address`` (a UDP socket's connect sends nothing)."""
    import socket

    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((address, 9))
        return probe.getsockname()[0]
    raise CutswapError(
        f"parallel.slurm.scheduler_host: no route from this host to SLURM's node {address}; set it to this "
        "host's address on the cluster's network"
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
