"""Work on the pool: shards of the precompute stages (``run_sharded``) and one job per training or
evaluation (``run_job``), shipped pickled, with their faults turned into ``JobError`` (see the package
docstring)."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable
from typing import Any

from cutswap.pipeline.parallel.identity import code_fingerprint, worker_gpu
from cutswap.pipeline.parallel.pool import STARTED, DaskPool, JobError
from cutswap.pipeline.parallel.worker_logs import route_worker_logs
from cutswap.pipeline.stores.arrays import SHARD


def shard_ranges(n: int, shard: int = SHARD) -> list[tuple[int, int]]:
    """``[(0, shard), (shard, 2 * shard), ..., (k, n)]``."""
    return [(start, min(start + shard, n)) for start in range(0, n, shard)]


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
        """On the worker: unpickle the call, check the worker's code against the sender's, say that it
        starts (``STARTED``: the sender says when work whose worker died runs again), make the call; a
        failure to unpickle, or other code, is an answer."""
        import pickle
        import traceback

        def where() -> str:
            try:
                from distributed import get_worker

                return get_worker().address
            except Exception:
                return "?"

        try:
            sender, call = pickle.loads(payload)
            from cutswap.pipeline.parallel.identity import code_fingerprint, differences

            differ = differences(sender, code_fingerprint())
        except BaseException as exc:  # a module's import may raise anything, SystemExit included
            return "unpickle", "".join(traceback.format_exception_only(exc)).strip(), where()
        if differ:  # a worker restarted on other code after the pool was checked
            return "code", "; ".join(differ), where()
        try:
            from distributed import get_worker

            worker = get_worker()
            worker.log_event(STARTED, (worker.get_current_task(), worker.address))
        except Exception:  # noqa: BLE001 (a lost notice must not fail the work)
            pass
        return "done", call(*args)

    return run_pickled


#: Defined in a function, so it travels by value: a worker runs it even where ``cutswap`` does not import.
_run_pickled = _unpickling_runner()


def _pickled(name: str, call: Callable[..., Any]) -> bytes:
    import cloudpickle

    try:
        return cloudpickle.dumps((code_fingerprint(), call))
    except Exception as exc:
        raise JobError(f"job {name} cannot be sent to the pool: it does not pickle ({exc})") from exc


def _unpacked(name: str, answer: tuple) -> Any:
    if answer[0] == "done":
        return answer[1]
    if answer[0] == "code":
        raise JobError(
            f"job {name} reached the Dask worker {answer[2]}, which runs other code than this process "
            f"({answer[1]}); nothing was written. Restart that worker from the same checkout (pip install -e "
            ". from the same commit)"
        )
    raise JobError(
        f"job {name} does not unpickle on the Dask worker {answer[2]}: {answer[1]}. The workers must import "
        "the same code as this process: install this project and the job's modules in the workers' "
        "environment (same versions), and keep the job's function at module level in an importable module"
    )


def run_sharded(
    fn: Callable[[int, int], Any],
    n: int,
    pool: DaskPool | None = None,
    shard: int = SHARD,
    workers: list[str] | None = None,
) -> list[Any]:
    """Call ``fn(start, stop)`` for every shard range, on the pool when there are several ranges.

    A single range runs in this process: shipping it to a worker would only add the worker's start-up.
    ``fn`` must be picklable (a module-level function, or a ``functools.partial`` of one). The first
    exception of any range is raised here; ``JobError`` when the workers cannot unpickle ``fn``.

    Args:
        workers: receives the worker that ran each range (``current_worker``; ``in-process``), for the
            store's attrs.
    """
    ranges = shard_ranges(n, shard)
    if pool is None or len(ranges) <= 1:
        out = [_placed(fn, start, stop) for start, stop in ranges]
    else:
        client = pool.client
        name = _describe(fn, ())
        payload = _pickled(name, functools.partial(_placed, fn))
        starts, stops = [r[0] for r in ranges], [r[1] for r in ranges]
        token = uuid.uuid4().hex
        keys = [
            f"{name.split('(')[0]}-{start}-{token}" for start in starts
        ]  # named after fn on the dashboard
        work = {key: ("shard", f"{name} items {a}-{b}") for key, (a, b) in zip(keys, ranges, strict=True)}
        with pool.watching(work):
            futures = client.map(_run_pickled, [payload] * len(ranges), starts, stops, key=keys, pure=False)
            out = [_unpacked(name, answer) for answer in client.gather(futures)]
    if workers is not None:
        workers.extend(where for where, _ in out)
    return [result for _, result in out]


def _placed(fn: Callable[[int, int], Any], start: int, stop: int) -> tuple[str, Any]:
    """``fn(start, stop)`` and the worker that ran it."""
    return current_worker() or "in-process", fn(start, stop)


def worker_device(device: str) -> str:
    """The device a task should use: ``auto`` resolved, and on a Dask worker of a multi-GPU host, the
    worker's own GPU (``cutswap.pipeline.parallel.identity.worker_gpu``); in-process work and single-GPU
    machines use the device as given."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda" or torch.cuda.device_count() < 2 or current_worker() is None:
        return device
    index = worker_gpu()
    return device if index is None else f"cuda:{index}"


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
    pool: DaskPool | None = None,
    relay: Callable[[int, str], None] | None = None,
    name: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    gpus: int = 1,
) -> Any:
    """Run one job, ``fn(*args)``, on a pool worker (``gpus`` GPUs of one worker when the pool has
    GPUs), or in this process.

    Safe to call from several threads at once: the pool decides how many jobs run together, and
    in-process jobs take turns.

    Args:
        fn: a picklable callable (module-level function).
        pool: where to run; None runs here.
        relay: called with (level, message) for every record of the ``cutswap`` loggers the job emits on
            its worker, while it runs (in-process jobs log through the normal logging tree instead).
        name: the job in error messages; default: ``fn``'s name and the names and plain values of ``args``.
        progress: called with the ``progress`` dict of every relayed record that carries one (a training
            step, ``cutswap.pipeline.stages.train``), after ``relay`` got its line. Needs ``relay``.
        gpus: GPUs the job takes on one worker (a data-parallel training: one per rank); such a job uses
            every device its worker sees, so the worker is not pinned to one.

    Returns:
        What ``fn`` returns; its exception is raised here.

    Raises:
        JobError: the job does not unpickle on the workers, its workers died ``allowed_failures`` + 1
            times, or no worker could run it (see the module docstring).
    """
    if pool is None:
        with _IN_PROCESS:
            return fn(*args)
    name = name or _describe(fn, args)
    client = pool.client
    topic = f"cutswap-job-{uuid.uuid4().hex}"
    payload = _pickled(
        name, functools.partial(_job, fn, args, topic if relay else None, pool.job_threads(), gpus == 1)
    )
    resources = pool.job_resources()
    if resources and gpus > 1:
        resources = {**resources, "GPU": gpus}
    if relay is not None:
        client.subscribe_topic(topic, functools.partial(_relayed, relay, progress))
    future = None
    try:
        with pool.job_slot():
            pool.check_can_run(name, resources)
            key = f"{getattr(getattr(fn, 'func', fn), '__name__', 'job')}-{uuid.uuid4().hex}"
            with pool.watching({key: ("job", name)}):
                future = client.submit(_run_pickled, payload, resources=resources, key=key, pure=False)
                return _unpacked(name, pool.wait(future, name, resources))
    finally:
        if future is not None and not future.done():
            future.cancel()  # a job given up here must not run later, when a worker turns up
        if relay is not None:
            client.unsubscribe_topic(topic)


def _relayed(
    relay: Callable[[int, str], None], progress: Callable[[dict[str, Any]], None] | None, event: tuple
) -> None:
    level, message, entry = (*event[1], None)[:3]
    relay(level, message)
    if progress is not None and entry is not None:
        progress(entry)


def _job(
    fn: Callable[..., Any], args: tuple, topic: str | None, threads: int | None, pin: bool = True
) -> Any:
    """Runs on the worker: pins the worker's GPU (``pin``) and thread share, relays logs, calls ``fn``."""
    import torch
    from distributed import get_worker

    worker = get_worker()
    if pin and (gpu := worker_gpu()) is not None:
        torch.cuda.set_device(gpu)
    if threads is None and not torch.cuda.is_available():
        # A worker of a pool by address: its CPU budget is the threads it was started with (``dask
        # worker --nthreads``, all cores by default), so workers sharing a host do not oversubscribe it.
        threads = worker.state.nthreads
    if threads is not None:
        torch.set_num_threads(threads)
    if topic is None:
        route_worker_logs(worker)
        return fn(*args)
    router, thread = route_worker_logs(worker), threading.get_ident()
    router.topics[thread] = topic
    try:
        return fn(*args)
    finally:
        router.topics.pop(thread, None)
