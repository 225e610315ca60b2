"""The Dask pool a run works on: a local one started and stopped here, or an existing one by address,
and what every job asks of it (see the package docstring)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cutswap.app import stopping
from cutswap.errors import CutswapError
from cutswap.pipeline.parallel.identity import code_fingerprint, differences
from cutswap.pipeline.parallel.worker_logs import WORKER_LOGS, log_worker_record, route_logs_plugin

log = logging.getLogger(__name__)

#: The Dask event topic on which a worker says that it starts a job or shard: ``(key, worker address)``.
STARTED = "cutswap-started"


class JobError(CutswapError):
    """A pool job cannot run: it does not unpickle on the workers, its workers keep dying, or no worker
    can take it. The message names the job, the reason and what to do."""


class DaskPool:
    """A Dask client started on first use, so a run whose stages are all reused starts no pool.

    Args:
        workers: processes of a local pool started (and stopped) here, when it has no GPUs.
        address: scheduler of an existing pool (``tcp://host:8786``); takes precedence.
        threads_per_worker: threads per local worker process; torch parallelises inside a task already.
        gpus: GPUs of a local pool; with any, it starts one worker per GPU, each advertising
            ``{"GPU": 1}``. None: every visible CUDA device. With ``address``: 1 or more, every job asks
            for a GPU; 0, none does; None, jobs ask for one when any worker advertises GPUs.
        cpu_jobs: jobs at once on a local pool without GPUs (at most, and by default, one per worker).
        allowed_failures: deaths of a job's worker before the job fails, on a local pool (a remote
            scheduler uses its own ``distributed.scheduler.allowed-failures``).
        worker_timeout: seconds a job may wait while no connected worker can run it (a SLURM pool's time
            in SLURM's queue aside).
        slurm: ``SlurmSettings`` as a dict: the workers are SLURM jobs (``cutswap.pipeline.parallel.slurm``).
        run: the run's name, which names its SLURM jobs.
    """

    def __init__(
        self,
        workers: int,
        address: str | None = None,
        threads_per_worker: int = 1,
        gpus: int | None = None,
        cpu_jobs: int | None = None,
        allowed_failures: int = 3,
        worker_timeout: float = 300.0,
        slurm: dict[str, Any] | None = None,
        run: str = "run",
    ) -> None:
        self.slurm, self.run = slurm, run
        if slurm is not None:  # jobs ask for a GPU exactly when the SLURM jobs have GPUs
            gpus = slurm.get("gpus", 0)
        if gpus is None and address is None:
            import torch

            gpus = torch.cuda.device_count()
        self.address, self.threads_per_worker, self.gpus = address, threads_per_worker, gpus
        self.workers = gpus or workers
        self.cpu_jobs = min(cpu_jobs or self.workers, self.workers) if self.local_cpu else None
        self._slots = threading.BoundedSemaphore(self.cpu_jobs) if self.cpu_jobs else None
        self.allowed_failures, self.worker_timeout = allowed_failures, worker_timeout
        self._stack = contextlib.ExitStack()
        self._client: Any = None
        self._lock = threading.Lock()  # jobs are submitted from several threads
        # Deaths of workers that ran our work (``_worker_removed``), read on Dask's event thread.
        self._watched: dict[str, tuple[str, str]] = {}  # Dask key -> ("job" or "shard", its name)
        self._started_on: dict[str, str] = {}  # Dask key -> the worker it last started on
        self._deaths: dict[str, int] = {}  # Dask key -> deaths of workers it was assigned to
        self._resuming: dict[str, str] = {}  # Dask key -> the worker that died running it, until it reruns
        self._watched_lock = threading.Lock()
        self._closing = False
        self._cluster: Any = None  # a SLURM pool's cluster (its jobs)
        self._scheduler_failures: int | None = None  # a remote scheduler's allowed-failures, once read

    @property
    def local_cpu(self) -> bool:
        """A local pool without GPUs: the one whose cores the jobs share."""
        return self.address is None and self.slurm is None and not self.gpus

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._start()
        return self._client

    def _start(self) -> Any:
        import dask
        from distributed import Client, LocalCluster

        # Not as context managers: the client may be started in a task's thread and closed in another,
        # and Client.__exit__ resets a context variable it set in the first thread.
        if self.address is not None:
            client = Client(self.address, set_as_default=False)
            self._stack.callback(client.close)
            _check_workers_run_this_code(client, self.address)
            client.subscribe_topic(WORKER_LOGS, log_worker_record)
            self._watch_workers(client)
            log.info("dask: connected to %s", self.address)
            return client
        if self.slurm is not None:
            return self._start_slurm()
        # Dask sets MALLOC_TRIM_THRESHOLD_ in its workers, which turns off glibc's adaptive mmap threshold:
        # every large tensor is then a fresh mmap, and its page faults made training jobs there slower
        # than in-process (benchmarks/bench_jobs.py: 0.55x with it, 1.02x without, 2 cores).
        # Workers read their Dask logging levels at start-up, from the environment they are spawned with.
        # (The nanny sets that environment in this process too; it is put back below, so that processes
        # started from here later log Dask's INFO lines as usual.)
        quiet = "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED"
        before = os.environ.get(quiet)
        config = {
            "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
            f"distributed.nanny.pre-spawn-environ.{quiet}": "warning",
        }
        with dask.config.set(config), _restored_env(quiet, before):
            pool = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=self.threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                resources={"GPU": 1} if self.gpus else None,
                scheduler_kwargs={"allowed_failures": self.allowed_failures},
            )
        self._stack.callback(pool.close)
        client = Client(pool, set_as_default=False)
        self._stack.callback(client.close)
        _check_workers_see_this_package(client)
        _check_workers_run_this_code(client, "the local pool")
        client.subscribe_topic(WORKER_LOGS, log_worker_record)
        client.register_plugin(route_logs_plugin(), name="cutswap-logs")
        self._watch_workers(client)
        log.info(
            "dask: local pool of %d workers%s, dashboard %s",
            self.workers,
            " (one GPU each)" if self.gpus else "",
            client.dashboard_link,
        )
        return client

    def _start_slurm(self) -> Any:
        """Workers as SLURM jobs (``slurm``), cancelled when the pool closes, or, when the run is ended at
        once, by its last call (``cutswap.app.stopping``)."""
        from distributed import Client

        import cutswap.pipeline.parallel.slurm as slurm

        spec = self.slurm
        host = slurm.resolve_scheduler_host(spec["scheduler_host"])
        cluster = slurm.slurm_cluster(
            self.run,
            partition=spec["partition"],
            account=spec["account"],
            walltime=spec["walltime"],
            cpus=spec["cpus"],
            memory=spec["memory"],
            gpus=spec["gpus"],
            extra=spec["extra"],
            max_jobs=spec["max_jobs"],
            python=spec["python"],
            scheduler_host=host,
            log_folder=spec["log_folder"],
            failures=self.allowed_failures,
        )
        self._cluster = cluster
        self._stack.callback(cluster.close)
        last_call = stopping.at_exit_now(lambda: slurm.cancel_jobs(slurm.job_ids(cluster)))
        self._stack.callback(stopping.forget, last_call)
        client = Client(cluster, set_as_default=False)
        self._stack.callback(client.close)
        client.subscribe_topic(WORKER_LOGS, log_worker_record)
        client.register_plugin(route_logs_plugin(), name="cutswap-logs")
        self._watch_workers(client)
        log.info(
            "dask: workers as SLURM jobs %s on partition %s (at most %d at once%s), scheduler on %s, "
            "job logs in %s",
            slurm.job_name(self.run),
            spec["partition"] or "(default)",
            spec["max_jobs"],
            f", {self.gpus} GPUs each" if self.gpus else "",
            host,
            Path(spec["log_folder"]).resolve(),
        )
        return client

    def _queued_jobs(self) -> dict[str, str]:
        """The pool's SLURM jobs that SLURM has not started yet, with its reason; empty for other pools."""
        if self._cluster is None:
            return {}
        import cutswap.pipeline.parallel.slurm as slurm

        return slurm.pending(slurm.job_ids(self._cluster))

    # -- workers that die running our work ------------------------------------------------------------------
    def _watch_workers(self, client: Any) -> None:
        """Say on the console, in one line each, when a worker dies running a job or shard of ours and when
        that work starts again on a worker. Dask alone logs neither where a run shows it (a local nanny's
        "Restarting worker" names no job; a remote worker's death shows nowhere here), and the job's progress
        line just stops. The scheduler publishes every worker it loses on its ``all`` topic, with the tasks
        assigned to it; our workers say when they start one on ``STARTED`` (``jobs._run_pickled``), which
        tells the work that ran there from the work that only waited in its queue."""
        if self.address is not None:

            def allowed(dask_scheduler: Any) -> int:  # nested: travels by value, needs no cutswap there
                return int(dask_scheduler.allowed_failures)

            with contextlib.suppress(Exception):  # a scheduler that refuses to run functions: unknown
                self._scheduler_failures = client.run_on_scheduler(allowed)
        client.subscribe_topic("all", self._worker_removed)
        client.subscribe_topic(STARTED, self._started)

        def unsubscribe() -> None:  # else the scheduler sends the closing client its own removal
            with contextlib.suppress(Exception):
                client.unsubscribe_topic("all")

        self._stack.callback(unsubscribe)  # before the client closes: the stack runs backwards

    @contextlib.contextmanager
    def watching(self, work: dict[str, tuple[str, str]]) -> Iterator[None]:
        """While ``work`` (Dask key -> (``job`` or ``shard``, its name: ``train brick/cutswap/seed 0``)) is
        submitted here, a death of the worker running it is said (``_watch_workers``)."""
        with self._watched_lock:
            self._watched.update(work)
        try:
            yield
        finally:
            with self._watched_lock:
                for key in work:
                    for state in (self._watched, self._started_on, self._deaths, self._resuming):
                        state.pop(key, None)

    def _worker_removed(self, event: tuple) -> None:
        """Dask's event thread: a worker left the scheduler; one line per job or shard of ours it ran."""
        message = event[1]
        if not isinstance(message, dict) or message.get("action") != "remove-worker":
            return
        if message.get("expected") or self._closing or stopping.requested():  # retired, or closed by us
            return
        worker = message.get("worker", "?")
        allowed = self.allowed_failures if self.address is None else self._scheduler_failures
        lines = []
        with self._watched_lock:
            for key in message.get("processing-tasks") or ():
                if key not in self._watched:
                    continue
                # Dask counts the death against every task assigned to the worker (``allowed_failures``);
                # a person hears of the work that was running there.
                deaths = self._deaths[key] = self._deaths.get(key, 0) + 1
                if self._started_on.get(key) != worker:
                    continue
                kind, name = self._watched[key]
                if allowed is not None and deaths > allowed:
                    then = f"the {kind} fails: its workers died {deaths} times (allowed_failures: {allowed})"
                else:
                    then = f"the {kind} runs again when a worker can take it"
                    self._resuming[key] = worker
                lines.append(f"worker {worker} died during {name}; {then}")
        for line in lines:
            log.warning(line)

    def _started(self, event: tuple) -> None:
        """Dask's event thread: a worker started a task; said when it is work of ours whose worker died."""
        try:
            key, worker = event[1]
        except (TypeError, ValueError):
            return
        with self._watched_lock:
            if key not in self._watched:
                return
            self._started_on[key] = worker
            dead = self._resuming.pop(key, None)
            name = self._watched[key][1]
        if dead is not None:
            log.info("%s resumed on worker %s (worker %s died running it)", name, worker, dead)

    def job_resources(self) -> dict[str, float] | None:
        """What every job asks for: ``{"GPU": 1}`` or None (no constraint).

        A local pool's jobs ask for a GPU when it has GPUs; a remote one's when ``gpus`` says so, or,
        without it, when any worker of the pool advertises GPUs.
        """
        if self.gpus is not None:
            return {"GPU": 1} if self.gpus else None
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return {"GPU": 1} if any(w.get("resources", {}).get("GPU") for w in workers) else None

    def _where(self) -> str:
        if self.slurm is not None:
            return "the SLURM jobs' workers"
        return f"the Dask scheduler at {self.address}" if self.address else "the local Dask pool"

    def check_can_run(self, name: str, resources: dict[str, float] | None) -> None:
        """Fail at once when the pool has workers but none offers ``resources``."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        if workers and resources and not _capable(workers, resources):
            offers = sorted({_format(w.get("resources") or {}) for w in workers.values()})
            raise JobError(
                f"job {name} needs a worker with the resource {_format(resources)}, but none of the "
                f"{len(workers)} workers of {self._where()} advertises it (they offer: {', '.join(offers)}); "
                "start GPU workers with `dask worker ... --resources GPU=1`, or set parallel.gpus: 0 to run "
                "jobs on any worker"
            )

    def wait(self, future: Any, name: str, resources: dict[str, float] | None) -> Any:
        """The job's result; ``JobError`` once it has waited ``worker_timeout`` s with no worker to run it
        (none connected, or none offering ``resources``), or once its workers died too often. The time a
        SLURM pool's jobs wait in SLURM's queue does not count: a busy cluster is no fault."""
        from distributed import KilledWorker

        poll = min(2.0, self.worker_timeout / 4)
        stranded_since = None
        said_queued = -math.inf
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        while not done.wait(poll):
            workers = self.client.scheduler_info(n_workers=-1)["workers"]
            if _capable(workers, resources):
                stranded_since = None
                continue
            now = time.monotonic()
            if queued := self._queued_jobs():  # SLURM has not started them: waiting is not stranded
                stranded_since = None
                if now - said_queued > 60:
                    said_queued = now
                    reasons = ", ".join(f"{job} ({why})" for job, why in sorted(queued.items()))
                    log.info("job %s waits for SLURM to start worker jobs: %s", name, reasons)
                continue
            stranded_since = now if stranded_since is None else stranded_since
            if now - stranded_since < self.worker_timeout:
                continue
            if workers:
                why = (
                    f"no worker of {self._where()} advertises the resource {_format(resources)} it "
                    "asks for (those that did died or left)"
                )
            else:
                why = f"no worker is connected to {self._where()} (they died or left, or never joined)"
            raise JobError(
                f"job {name} waited {self.worker_timeout:g} s with no worker able to run it: {why}. "
                "Restart the pool's workers, or raise parallel.worker_timeout when they take longer "
                "to come back"
            )
        try:
            return future.result()
        except KilledWorker as exc:
            last = getattr(exc.last_worker, "address", exc.last_worker)
            raise JobError(
                f"job {name} failed: the Dask workers running it died {exc.allowed_failures + 1} times "
                f"(the last was {last}). A job that kills its worker process (out of memory, a crash "
                "in native code, a kill from outside) is retried at most parallel.allowed_failures "
                f"({exc.allowed_failures}) times. Read the worker logs for why it died; if it ran out "
                "of memory, lower train.batch_size or give the workers more memory"
            ) from exc

    def job_threads(self) -> int | None:
        """Torch threads per job on a local CPU pool (its share of the cores) or a SLURM pool (its worker's
        share of the job's CPUs); None: leave as is."""
        if self.slurm is not None:
            from cutswap.pipeline.parallel.slurm import threads_per_worker

            return threads_per_worker(self.slurm["cpus"], self.slurm["gpus"])
        return max(1, (os.cpu_count() or 1) // self.cpu_jobs) if self.cpu_jobs else None

    def job_slot(self) -> contextlib.AbstractContextManager:
        """Held while a job runs: on a local CPU pool, at most ``cpu_jobs`` jobs hold one at once."""
        return self._slots if self._slots is not None else contextlib.nullcontext()

    def close(self) -> None:
        self._closing = True  # the workers it closes (or a stop signal kills) did not die of our work
        self._stack.close()
        self._client = None


@contextlib.contextmanager
def _restored_env(name: str, value: str | None) -> Iterator[None]:
    try:
        yield
    finally:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _capable(workers: dict[str, dict], resources: dict[str, float] | None) -> bool:
    """Whether any of ``scheduler_info()["workers"]`` can run a job asking for ``resources``."""
    return any(
        all((w.get("resources") or {}).get(k, 0) >= v for k, v in (resources or {}).items())
        for w in workers.values()
    )


def _format(resources: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(resources.items())) or "no resources"


def _check_workers_see_this_package(client: Any) -> None:
    """Fail fast when local workers would import another ``cutswap`` than this process does.

    Workers inherit this process's ``sys.path``; a ``cutswap.py`` on it (a script folder put there by a
    runner) shadows the package there, and every job would fail to unpickle (``JobError``); this says why.
    """
    import importlib.util

    def origin() -> str | None:  # nested, so it travels by value and needs no cutswap import there
        import importlib.util

        spec = importlib.util.find_spec("cutswap")
        return spec.origin if spec else None

    here = importlib.util.find_spec("cutswap").origin
    wrong = {w: o for w, o in client.run(origin).items() if o != here}
    if wrong:
        address, seen = next(iter(wrong.items()))
        raise CutswapError(
            f"Dask worker {address} would import `cutswap` from {seen}, not from {here}: a file or folder "
            "named cutswap on sys.path shadows the package; rename it or run from another directory"
        )


def _check_workers_run_this_code(client: Any, where: str) -> None:
    """Refuse a pool any of whose workers runs other code than this process (``identity``), by name.

    A worker that cannot even import cutswap is named too, with its error.
    """

    def theirs() -> Any:  # nested, so it travels by value and reports a failed import as an answer
        try:
            from cutswap.pipeline.parallel.identity import code_fingerprint

            return code_fingerprint()
        except Exception as exc:  # noqa: BLE001
            return f"cannot import cutswap: {type(exc).__name__}: {exc}"

    ours = code_fingerprint()
    wrong = []
    for address, answer in sorted(client.run(theirs).items()):
        why = answer if isinstance(answer, str) else "; ".join(differences(ours, answer))
        if why:
            wrong.append(f"{address} ({why})")
    if wrong:
        raise CutswapError(
            f"{len(wrong)} Dask worker(s) of {where} run other code than this process, so their stores "
            f"would carry keys naming code that did not run: {', '.join(wrong)}. Install the same cutswap "
            "checkout, torch and zarr on every worker (pip install -e . from the same commit) and restart "
            "them"
        )


@contextlib.contextmanager
def dask_pool(
    workers: int = 0,
    address: str | None = None,
    threads_per_worker: int = 1,
    gpus: int | None = None,
    cpu_jobs: int | None = None,
    allowed_failures: int = 3,
    worker_timeout: float = 300.0,
    slurm: dict[str, Any] | None = None,
    run: str = "run",
) -> Iterator[DaskPool | None]:
    """A lazily started :class:`DaskPool`, or None for in-process work (``workers=0``, no address, no
    SLURM)."""
    if address is None and slurm is None and workers <= 0:
        yield None
        return
    pool = DaskPool(
        workers, address, threads_per_worker, gpus, cpu_jobs, allowed_failures, worker_timeout, slurm, run
    )
    try:
        yield pool
    finally:
        pool.close()
