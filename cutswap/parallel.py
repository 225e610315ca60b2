"""Shard-parallel work over a Dask cluster: a local one by default, an existing one by address.

Precompute stages split their items (images, maps) into ranges aligned with the store's shards
(``SHARD`` items, the same as ``cutswap.stores.write_array``) and let each task compute one range and write
it straight into the stage's temporary store. Writers therefore own whole shards (Zarr 3 loses data when
two writers share one), and since every range is computed the same way whatever the number of workers,
the store is identical with 1 or N workers.

Every socket stays on 127.0.0.1 for a local cluster (scheduler, workers and dashboard).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

#: Items per shard of every sharded array, and so per parallel task.
SHARD = 128


def shard_ranges(n: int, shard: int = SHARD) -> list[tuple[int, int]]:
    """``[(0, shard), (shard, 2 * shard), ..., (k, n)]``."""
    return [(start, min(start + shard, n)) for start in range(0, n, shard)]


class Cluster:
    """A Dask client started on first use, so a run whose stages are all reused starts no cluster.

    Args:
        workers: processes of a local cluster started (and stopped) here.
        address: scheduler of an existing cluster (``tcp://host:8786``); takes precedence.
        threads_per_worker: threads per local worker process; torch parallelises inside a task already.
    """

    def __init__(self, workers: int, address: str | None = None, threads_per_worker: int = 1) -> None:
        self.workers, self.address, self.threads_per_worker = workers, address, threads_per_worker
        self._stack = contextlib.ExitStack()
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.address is not None:
                self._client = self._stack.enter_context(Client(self.address))
                log.info("dask: connected to %s", self.address)
            else:
                cluster = self._stack.enter_context(
                    LocalCluster(
                        n_workers=self.workers,
                        threads_per_worker=self.threads_per_worker,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address="127.0.0.1:0",
                    )
                )
                self._client = self._stack.enter_context(Client(cluster))
                log.info(
                    "dask: local cluster of %d workers, dashboard %s",
                    self.workers,
                    self._client.dashboard_link,
                )
        return self._client

    def close(self) -> None:
        self._stack.close()
        self._client = None


@contextlib.contextmanager
def dask_client(
    workers: int = 0, address: str | None = None, threads_per_worker: int = 1
) -> Iterator[Cluster | None]:
    """A lazily started :class:`Cluster`, or None for in-process work (``workers=0`` and no address)."""
    if address is None and workers <= 0:
        yield None
        return
    cluster = Cluster(workers, address, threads_per_worker)
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
    exception of any range is raised here.
    """
    ranges = shard_ranges(n, shard)
    if cluster is None or len(ranges) <= 1:
        return [fn(start, stop) for start, stop in ranges]
    client = cluster.client
    futures = client.map(fn, [r[0] for r in ranges], [r[1] for r in ranges], pure=False)
    return client.gather(futures)


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
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return device
    return f"cuda:{int(name) % torch.cuda.device_count()}" if str(name).isdigit() else device
