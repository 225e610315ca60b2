"""Parallel work over a Dask pool: a local one by default, an existing one by address, or SLURM jobs.

A *pool* is the Dask scheduler and workers a run sends work to (what Dask calls a cluster: in this project
"cluster" is only the clustering stage).

Two kinds of work go to the pool:

* **Shards** (``run_sharded``), for the precompute stages.
  Precompute stages split their items (images, maps) into ranges aligned with the store's shards
  (``SHARD`` items, ``cutswap.pipeline.stores.arrays``) and let each task compute one range and write it
  straight into the stage's temporary store. Writers therefore own whole shards (Zarr 3 loses data when
  two writers share one), and since every range is computed the same way whatever the number of
  workers, the store is identical with 1 or N workers.

* **Jobs** (``run_job``): one training or evaluation (category x method x seed) each. When the workers
  advertise a ``GPU`` resource (a local pool on a CUDA machine starts one worker per GPU with
  ``{"GPU": 1}``; start remote workers with ``--resources GPU=1``), every job asks for one, so each GPU runs
  one job at a time and each job sees its worker's GPU as ``cuda`` (``identity.worker_gpu``: its only
  visible device, or the first of several that no other process of the host has claimed, by UUID). A
  data-parallel training asks one worker for ``nproc`` GPUs.

Every worker must run this process's code: on connecting to a local pool or one by address (a SLURM
pool's workers come later, one job at a time), their ``identity.code_fingerprint`` (cutswap version, a
hash of its sources, stage code versions, torch, zarr) is compared with ours and the run is refused,
naming the workers that differ; every shard and job carries our fingerprint too, so a worker restarted
on other code mid-run answers it with a ``JobError`` naming the worker instead of running it. Shards and
jobs receive store references and URLs, never a path of this host (``cutswap.roots``).

Without GPUs, ``cpu_jobs`` jobs run at once (default: one per worker), each with its share of the cores
(``benchmarks/bench_jobs.py`` compares the choices on a machine). Log records of the ``cutswap`` loggers a
job emits on its worker come back to the caller as they happen (Dask events), with the structured
``progress`` entry a record carries (``extra={"progress": {...}}``), and only there: a worker prints none
of them itself. Records of the ``cutswap`` loggers outside a job (a shard's warning) come back too and are
logged here, once. A local pool's workers log Dask's own chatter at WARNING only; the scheduler and
nannies run in this process and log at INFO, to whatever handlers this process has (a run's log file).

Every socket stays on 127.0.0.1 for a local pool (scheduler, workers and dashboard).

Faults end a run; they never hang it (``JobError`` names the job, the reason and what to do):

* A worker that dies running a job (killed, out of memory) is restarted by its nanny and the scheduler
  reruns the job elsewhere; a training job resumes from its last checkpoint
  (``cutswap.pipeline.stages.train``). A job whose workers die more than ``allowed_failures`` times fails
  (Dask's ``KilledWorker``). Each such death is one console line naming the worker, the job (or shard) and
  what happens to it, and the job's new start another (``DaskPool.watching``), whether the pool is local or
  reached by address.
* Jobs and shards travel to the workers as pickled bytes and unpickle inside the task: a job whose code a
  worker cannot import fails at once. (Dask unpickles a task in the worker's scheduler stream, where a
  failure stops the worker taking work and the job waits forever.)
* A job no connected worker can run (none at all, or none with the ``GPU`` resource it asks for) fails at
  once when the pool's workers lack the resource, and after ``worker_timeout`` seconds when the workers
  are gone (they died or left) and none comes back.

A SLURM pool (``slurm``) submits its workers as SLURM jobs through dask-jobqueue, as many as the queue
of work asks for (at most ``max_jobs``), and cancels them when it closes; time its jobs spend in SLURM's
queue does not count towards ``worker_timeout``.

Modules: ``pool`` (the pool and its lifecycle), ``jobs`` (shards and jobs), ``identity`` (what a
worker must share with us, and its GPU), ``slurm`` (workers as SLURM jobs, and the checks before a SLURM
run), ``worker_logs`` (the workers' log records, back here).
"""

from cutswap.pipeline.parallel.jobs import (
    SHARD,
    current_worker,
    run_job,
    run_sharded,
    shard_ranges,
    worker_device,
)
from cutswap.pipeline.parallel.pool import DaskPool, JobError, dask_pool
from cutswap.pipeline.parallel.worker_logs import WORKER_LOGS

__all__ = [
    "DaskPool",
    "JobError",
    "SHARD",
    "WORKER_LOGS",
    "current_worker",
    "dask_pool",
    "run_job",
    "run_sharded",
    "shard_ranges",
    "worker_device",
]
