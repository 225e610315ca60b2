"""Parallel work over a Dask cluster: a local one by default, an existing one by address.

Two kinds of work go to the cluster:

* **Shards** (``run_sharded``), for the precompute stages.

Precompute stages split their items (images, maps) into ranges aligned with the store's shards
(``SHARD`` items, the same as ``cutswap.pipeline.stores.write_array``) and let each task compute one range and write
it straight into the stage's temporary store. Writers therefore own whole shards (Zarr 3 loses data when
two writers share one), and since every range is computed the same way whatever the number of workers,
the store is identical with 1 or N workers.

* **Jobs** (``run_job``): one training or evaluation (category x method x seed) each. When the workers
  advertise a ``GPU`` resource (a local cluster on a CUDA machine starts one worker per GPU with
  ``{"GPU": 1}``; start remote workers with ``--resources GPU=1``), every job asks for one, so each GPU runs
  one job at a time and each job sees its worker's GPU as ``cuda``. Without GPUs, ``cpu_jobs`` jobs run
  at once (default: one per worker), each with its share of the cores (``benchmarks/bench_jobs.py``
  compares the choices on a machine). Log records of the ``cutswap`` loggers a job emits on its worker
  come back to the caller as they happen (Dask events), with the structured ``progress`` entry a record
  carries (``extra={"progress": {...}}``), and only there: a worker prints none of them itself. Records of
  the ``cutswap`` loggers outside a job (a shard's warning) come back too and are logged here, once.
  A local cluster's workers log Dask's own chatter at WARNING only; the scheduler and nannies run in this
  process and log at INFO, to whatever handlers this process has (a run's log file).

Every socket stays on 127.0.0.1 for a local cluster (scheduler, workers and dashboard).

Faults end a run; they never hang it (``JobError`` names the job, the reason and what to do):

* A worker that dies running a job (killed, out of memory) is restarted by its nanny and the scheduler
  reruns the job elsewhere; a training job resumes from its last checkpoint (``cutswap.pipeline.stages.train``).
  A job whose workers die more than ``allowed_failures`` times fails (Dask's ``KilledWorker``).
* Jobs and shards travel to the workers as pickled bytes and unpickle inside the task: a job whose code a
  worker cannot import fails at once. (Dask unpickles a task in the worker's scheduler stream, where a
  failure stops the worker taking work and the job waits forever.)
* A job no connected worker can run (none at all, or none with the ``GPU`` resource it asks for) fails at
  once when the cluster's workers lack the resource, and after ``worker_timeout`` seconds when the workers
  are gone (they died or left) and none comes back.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from cutswap.errors import CutswapError

log = logging.getLogger(__name__)

#: Items per shard of every sharded array, and so per parallel task.
SHARD = 128


class JobError(CutswapError):
    """A cluster job cannot run: it does not unpickle on the workers, its workers keep dying, or no worker
    can take it. The message names the job, the reason and what to do."""


def shard_ranges(n: int, shard: int = SHARD) -> list[tuple[int, int]]:
    """``[(0, shard), (shard, 2 * shard), ..., (k, n)]``."""
    return [(start, min(start + shard, n)) for start in range(0, n, shard)]


class Cluster:
    """A Dask client started on first use, so a run whose stages are all reused starts no cluster.

    Args:
        workers: processes of a local cluster started (and stopped) here, when it has no GPUs.
        address: scheduler of an existing cluster (``tcp://host:8786``); takes precedence.
        threads_per_worker: threads per local worker process; torch parallelises inside a task already.
        gpus: GPUs of a local cluster; with any, it starts one worker per GPU, each advertising
            ``{"GPU": 1}``. None: every visible CUDA device. With ``address``: 1 or more, every job asks
            for a GPU; 0, none does; None, jobs ask for one when any worker advertises GPUs.
        cpu_jobs: jobs at once on a local cluster without GPUs (at most, and by default, one per worker).
        allowed_failures: deaths of a job's worker before the job fails, on a local cluster (a remote
            scheduler uses its own ``distributed.scheduler.allowed-failures``).
        worker_timeout: seconds a job may wait while no connected worker can run it.
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
    ) -> None:
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

    @property
    def local_cpu(self) -> bool:
        """A local cluster without GPUs: the one whose cores the jobs share."""
        return self.address is None and not self.gpus

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
            client.subscribe_topic(WORKER_LOGS, _log_worker_record)
            log.info("dask: connected to %s", self.address)
            return client
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
            cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=self.threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                resources={"GPU": 1} if self.gpus else None,
                scheduler_kwargs={"allowed_failures": self.allowed_failures},
            )
        self._stack.callback(cluster.close)
        client = Client(cluster, set_as_default=False)
        self._stack.callback(client.close)
        _check_workers_see_this_package(client)
        client.subscribe_topic(WORKER_LOGS, _log_worker_record)
        client.register_plugin(_route_logs_plugin(), name="cutswap-logs")
        log.info(
            "dask: local cluster of %d workers%s, dashboard %s",
            self.workers,
            " (one GPU each)" if self.gpus else "",
            client.dashboard_link,
        )
        return client

    def job_resources(self) -> dict[str, float] | None:
        """What every job asks for: ``{"GPU": 1}`` or None (no constraint).

        A local cluster's jobs ask for a GPU when it has GPUs; a remote one's when ``gpus`` says so, or,
        without it, when any worker of the cluster advertises GPUs.
        """
        if self.gpus is not None:
            return {"GPU": 1} if self.gpus else None
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return {"GPU": 1} if any(w.get("resources", {}).get("GPU") for w in workers) else None

    def _where(self) -> str:
        return f"the Dask scheduler at {self.address}" if self.address else "the local Dask cluster"

    def check_can_run(self, name: str, resources: dict[str, float] | None) -> None:
        """Fail at once when the cluster has workers but none offers ``resources``."""
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
        (none connected, or none offering ``resources``), or once its workers died too often."""
        from distributed import KilledWorker

        poll = min(2.0, self.worker_timeout / 4)
        stranded_since = None
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        while not done.wait(poll):
            workers = self.client.scheduler_info(n_workers=-1)["workers"]
            if _capable(workers, resources):
                stranded_since = None
                continue
            now = time.monotonic()
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
                "Restart the cluster's workers, or raise parallel.worker_timeout when they take longer "
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
        """Torch threads per job on a local CPU cluster (its share of the cores); None: leave as is."""
        return max(1, (os.cpu_count() or 1) // self.cpu_jobs) if self.cpu_jobs else None

    def job_slot(self) -> contextlib.AbstractContextManager:
        """Held while a job runs: on a local CPU cluster, at most ``cpu_jobs`` jobs hold one at once."""
        return self._slots if self._slots is not None else contextlib.nullcontext()

    def close(self) -> None:
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


def _describe(fn: Callable[..., Any], args: tuple) -> str:
    """A job as a reader knows it: ``train_run(brick, cutswap, 0)`` (names and plain values)."""
    func = getattr(fn, "func", fn)  # a functools.partial
    words = []
    for value in (*getattr(fn, "args", ()), *args):
        if isinstance(value, bool | int | float | str):
            words.append(str(value))
        elif isinstance(getattr(value, "name", None), str):
            words.append(value.name)
    return f"{getattr(func, '__name__', type(func).__name__)}({', '.join(words)})"


def _unpickling_runner() -> Callable[..., tuple]:
    def run_pickled(payload: bytes, *args: Any) -> tuple:
        """On the worker: unpickle the call and make it; a failure to unpickle is an answer."""
        import pickle
        import traceback

        try:
            call = pickle.loads(payload)
        except BaseException as exc:  # a module's import may raise anything, SystemExit included
            try:
                from distributed import get_worker

                where = get_worker().address
            except Exception:
                where = "?"
            return "unpickle", "".join(traceback.format_exception_only(exc)).strip(), where
        return "done", call(*args)

    return run_pickled


#: Defined in a function, so it travels by value: a worker runs it even where ``cutswap`` does not import.
_run_pickled = _unpickling_runner()


def _pickled(name: str, call: Callable[..., Any]) -> bytes:
    import cloudpickle

    try:
        return cloudpickle.dumps(call)
    except Exception as exc:
        raise JobError(f"job {name} cannot be sent to the cluster: it does not pickle ({exc})") from exc


def _unpacked(name: str, answer: tuple) -> Any:
    if answer[0] == "done":
        return answer[1]
    raise JobError(
        f"job {name} does not unpickle on the Dask worker {answer[2]}: {answer[1]}. The workers must import "
        "the same code as this process: install this project and the job's modules in the workers' "
        "environment (same versions), and keep the job's function at module level in an importable module"
    )


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


@contextlib.contextmanager
def dask_client(
    workers: int = 0,
    address: str | None = None,
    threads_per_worker: int = 1,
    gpus: int | None = None,
    cpu_jobs: int | None = None,
    allowed_failures: int = 3,
    worker_timeout: float = 300.0,
) -> Iterator[Cluster | None]:
    """A lazily started :class:`Cluster`, or None for in-process work (``workers=0`` and no address)."""
    if address is None and workers <= 0:
        yield None
        return
    cluster = Cluster(workers, address, threads_per_worker, gpus, cpu_jobs, allowed_failures, worker_timeout)
    try:
        yield cluster
    finally:
        cluster.close()


def run_sharded(
    fn: Callable[[int, int], Any], n: int, cluster: Cluster | None = None, shard: int = SHARD
) -> list[Any]:
    """Call ``fn(start, stop)`` for every shard range, on the cluster when there are several ranges.

    A single range runs in this process: shipping it to a worker would only add the worker's start-up.
    ``fn`` must be picklable (a module-level function, or a ``functools.partial`` of one). The first
    exception of any range is raised here; ``JobError`` when the workers cannot unpickle ``fn``.
    """
    ranges = shard_ranges(n, shard)
    if cluster is None or len(ranges) <= 1:
        return [fn(start, stop) for start, stop in ranges]
    client = cluster.client
    name = _describe(fn, ())
    payload = _pickled(name, fn)
    starts, stops = [r[0] for r in ranges], [r[1] for r in ranges]
    token = uuid.uuid4().hex
    keys = [f"{name.split('(')[0]}-{start}-{token}" for start in starts]  # named after fn on the dashboard
    futures = client.map(_run_pickled, [payload] * len(ranges), starts, stops, key=keys, pure=False)
    return [_unpacked(name, answer) for answer in client.gather(futures)]


def worker_device(device: str) -> str:
    """The device a task should use: ``auto`` resolved, and on a multi-GPU machine one GPU per Dask worker.

    Local Dask workers are named 0..n-1, so worker ``i`` takes ``cuda:{i % n_gpus}``; in-process work and
    single-GPU machines use the device as given.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda" or torch.cuda.device_count() < 2:
        return device
    name = current_worker()
    return f"cuda:{int(name) % torch.cuda.device_count()}" if name and name.isdigit() else device


def current_worker() -> str | None:
    """The name of the Dask worker running this code; None in-process. Recorded in job stores' attrs."""
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return None


#: In-process jobs run one at a time: torch already uses every core, and a GPU holds one job's memory.
_IN_PROCESS = threading.Lock()


def run_job(
    fn: Callable[..., Any],
    *args: Any,
    cluster: Cluster | None = None,
    relay: Callable[[int, str], None] | None = None,
    name: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """Run one job, ``fn(*args)``, on a cluster worker (one GPU when there are GPUs), or in this process.

    Safe to call from several threads at once: the cluster decides how many jobs run together, and
    in-process jobs take turns.

    Args:
        fn: a picklable callable (module-level function).
        cluster: where to run; None runs here.
        relay: called with (level, message) for every record of the ``cutswap`` loggers the job emits on
            its worker, while it runs (in-process jobs log through the normal logging tree instead).
        name: the job in error messages; default: ``fn``'s name and the names and plain values of ``args``.
        progress: called with the ``progress`` dict of every relayed record that carries one (a training
            step, ``cutswap.pipeline.stages.train``), after ``relay`` got its line. Needs ``relay``.

    Returns:
        What ``fn`` returns; its exception is raised here.

    Raises:
        JobError: the job does not unpickle on the workers, its workers died ``allowed_failures`` + 1
            times, or no worker could run it (see the module docstring).
    """
    if cluster is None:
        with _IN_PROCESS:
            return fn(*args)
    name = name or _describe(fn, args)
    client = cluster.client
    topic = f"cutswap-job-{uuid.uuid4().hex}"
    payload = _pickled(
        name, functools.partial(_job, fn, args, topic if relay else None, cluster.job_threads())
    )
    resources = cluster.job_resources()
    if relay is not None:
        client.subscribe_topic(topic, functools.partial(_relayed, relay, progress))
    future = None
    try:
        with cluster.job_slot():
            cluster.check_can_run(name, resources)
            key = f"{getattr(getattr(fn, 'func', fn), '__name__', 'job')}-{uuid.uuid4().hex}"
            future = client.submit(_run_pickled, payload, resources=resources, key=key, pure=False)
            return _unpacked(name, cluster.wait(future, name, resources))
    finally:
        if future is not None and not future.done():
            future.cancel()  # a job given up here must not run later, when a worker turns up
        if relay is not None:
            client.unsubscribe_topic(topic)


#: The Dask event topic of ``cutswap`` records that workers log outside a relayed job.
WORKER_LOGS = "cutswap-worker-logs"


def _relayed(
    relay: Callable[[int, str], None], progress: Callable[[dict[str, Any]], None] | None, event: tuple
) -> None:
    level, message, entry = (*event[1], None)[:3]
    relay(level, message)
    if progress is not None and entry is not None:
        progress(entry)


def _log_worker_record(event: tuple) -> None:
    """Here: a ``cutswap`` record a worker logged outside a relayed job, logged again under its name."""
    level, name, message, worker = event[1]
    logging.getLogger(name).log(level, "%s (Dask worker %s)", message, worker)


class _WorkerLogs(logging.Handler):
    """On a worker, the one handler of the ``cutswap`` loggers: a record of a relayed job's thread goes to
    that job's topic, any other to ``WORKER_LOGS``; both come back to the process that started the work.

    (A worker may run several jobs at once, one per thread, so records are told apart by thread.)
    """

    def __init__(self, worker: Any) -> None:
        super().__init__(logging.INFO)
        self.worker = worker
        self.topics: dict[int, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            topic = self.topics.get(record.thread)
            if topic is not None:
                entry = getattr(record, "progress", None)
                self.worker.log_event(topic, (record.levelno, record.getMessage(), entry))
            else:
                who = str(self.worker.name)
                self.worker.log_event(WORKER_LOGS, (record.levelno, record.name, record.getMessage(), who))
        except Exception:  # a lost log line must not fail the job
            self.handleError(record)


def _route_worker_logs(worker: Any) -> _WorkerLogs:
    """Make ``_WorkerLogs`` the only way out of the ``cutswap`` loggers on this worker (idempotent).

    It replaces the handlers a runner's import attached there (Prefect's API handler, whose records here
    belong to no run) and stops propagation to the worker's root handlers (a second copy of each line on
    the worker's stderr): every record is logged once, by the process that started the work.
    """
    logger = logging.getLogger("cutswap")
    for handler in logger.handlers:
        if type(handler).__name__ == "_WorkerLogs":
            return handler
    router = _WorkerLogs(worker)
    logger.handlers[:] = [router]
    logger.propagate = False
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return router


class _OneLine(logging.Formatter):
    """A record's first line, without its traceback: ``01:02:03 ERROR message (logger)``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s (%(name)s on a Dask worker)", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.split("\n", 1)[0]
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return ""


def _not_a_job_failure(record: logging.LogRecord) -> bool:
    """Dask's "Compute Failed" record repeats a job's exception, which reaches the run that reports it."""
    return not (record.name == "distributed.worker" and str(record.msg).startswith("Compute Failed"))


def _one_line_dask_logs() -> None:
    """On a local worker: Dask's own records (WARNING and up, see ``Cluster._start``) as one line each on the
    worker's stderr, the terminal of the run. A worker's closing races its scheduler's, and the heartbeat
    that loses logs an error with a 40-line traceback that says nothing to act on."""
    logger = logging.getLogger("distributed")
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLine())
    handler.addFilter(_not_a_job_failure)
    logger.handlers[:] = [handler]
    logger.propagate = False  # not also through a root handler a runner's import set up (Prefect's)


def _route_logs_plugin() -> Any:
    """A Dask worker plugin that routes the ``cutswap`` logs of every worker of a local cluster from its
    start, shards included (jobs route them themselves, on any cluster)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class RouteLogs(WorkerPlugin):
        def setup(self, worker: Any) -> None:
            _route_worker_logs(worker)
            _one_line_dask_logs()

    return RouteLogs()


def _job(fn: Callable[..., Any], args: tuple, topic: str | None, threads: int | None) -> Any:
    """Runs on the worker: pins the worker's GPU and thread share, relays logs, calls ``fn``."""
    import torch
    from distributed import get_worker

    worker = get_worker()
    if torch.cuda.is_available() and str(worker.name).isdigit():
        torch.cuda.set_device(int(worker.name) % torch.cuda.device_count())
    if threads is not None:
        torch.set_num_threads(threads)
    if topic is None:
        _route_worker_logs(worker)
        return fn(*args)
    router, thread = _route_worker_logs(worker), threading.get_ident()
    router.topics[thread] = topic
    try:
        return fn(*args)
    finally:
        router.topics.pop(thread, None)
