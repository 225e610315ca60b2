"""The ``cutswap`` flow: a dataset in, a report out, every stage keyed and reusable.

(The file is not named ``cutswap.py``: Prefect puts this folder on ``sys.path`` and Dask workers inherit it,
where such a file would shadow the ``cutswap`` package.)

Recipe:

    ingest (every category) -> per category: saliency -> cluster -> pairs
                                             -> train (row x seed) -> evaluate -> report

A row is a method of ``train.methods``, or a variant of one (``variants``: the method under other settings
of its stages, ``cutswap.pipeline.variants``); a variant's saliency, cluster and pairs stores are computed
only where its settings differ from those of a store already made, so rows share what they can.

The precompute stages (saliency, cluster, pairs) shard their images over a pool of Dask workers: local worker
processes by default (``parallel.workers``, or one per GPU), an existing scheduler with
``parallel.address``. Every training and evaluation is a job on the same pool, submitted as soon as its
inputs exist: one job per GPU at a time, or one per CPU worker, so a category's jobs train while the
next category's saliency is computed.

Stages named in ``stages`` run (skipping outputs that are already complete unless named in ``force``);
the other stages are only looked up, and must already be complete for these settings. So
``stages=["train", "evaluate", "report"]`` with a new seed trains and evaluates just that seed and reuses
every upstream store untouched.

Run in-process (no server needed; Prefect starts a temporary local API), after every input is checked
(``flows.launch``):

    cutswap run --preset configs/demo.yaml [--set train.steps=100] [--stages ...] [--force ...] [--debug]
    python -m flows.benchmark ...                  (the same options)

The console shows each event once and a progress display; the full log goes to ``reports/<run>/run.log``
(``cutswap.app.console``).
"""

from __future__ import annotations

import importlib
import sys

if __name__ == "__main__":
    # `python -m flows.benchmark`: the input is checked before Prefect is imported (about 5 s), then the
    # flow is loaded from this file under its own module name.
    from flows import launch

    sys.exit(launch.main(__doc__, lambda: importlib.import_module("flows.benchmark").cutswap))

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from cutswap.app import console
from cutswap.errors import RunFailed, StageFailed, one_line
from cutswap.method.registry import get_method, method_seeds
from cutswap.pipeline.parallel import DaskPool, dask_pool
from cutswap.pipeline.preflight import check_environment
from cutswap.pipeline.results import CategoryRefs, Evaluated
from cutswap.pipeline.settings import Settings, load_settings
from cutswap.pipeline.stages import stage_modes, stage_tasks
from cutswap.pipeline.stores import StoreRef
from cutswap.pipeline.variants import Row, precomputed_chains, run_rows
from flows import launch
from tasks.cluster import cluster
from tasks.evaluate import evaluate
from tasks.ingest import ingest, resolve
from tasks.pairs import pairs
from tasks.report import report
from tasks.saliency import saliency
from tasks.track import mlflow_run
from tasks.train import train


@dataclass(eq=False)
class Job:
    """One training and its evaluation, as Prefect futures, for one row (a method or a variant)."""

    category: str
    row: Row
    seed: int
    trained: PrefectFuture
    evaluated: PrefectFuture
    chain: tuple[StoreRef, StoreRef, StoreRef]  # the saliency, cluster and pairs stores of its row

    def failure(self) -> dict[str, Any] | None:
        """None once the job finished; else the stage that failed, and why. (An evaluation whose training
        failed never runs: Prefect leaves it pending.)"""
        for stage, future in (("train", self.trained), ("evaluate", self.evaluated)):
            future.wait()
            if future.state.is_completed():
                continue
            error = future.result(raise_on_failure=False) if future.state.is_failed() else None
            if isinstance(error, StageFailed):
                cause = error.cause  # it names its stage and job already
            else:
                cause = one_line(error) if isinstance(error, BaseException) else f"ended {future.state.name}"
            return {
                "category": self.category,
                "method": self.row.name,
                "seed": self.seed,
                "stage": stage,
                "cause": cause,
                "summary": f"{stage} {self.category}/{self.row.name}/seed {self.seed} failed: {cause}",
            }
        return None


def _row_seeds(rows: list[Row], seeds: list[int]) -> list[tuple[Row, int]]:
    """Every row over every seed, except the no-training baselines, which are the same for any seed.

    The baselines go first: their evaluation is long and their training instant, so the pool's last
    minutes are short evaluations spread over every worker, not one long one with the others idle.
    """
    ordered = sorted(rows, key=lambda row: get_method(row.method).trains)
    return [(row, s) for row in ordered for s in method_seeds(row.method, seeds)]


@dataclass(eq=False)
class CategoryPlan:
    """One category's precomputed stores (the run's own, then every row's) and its submitted jobs."""

    category: str
    upstream: tuple[StoreRef, StoreRef, StoreRef, StoreRef]  # ingest, saliency, cluster, pairs
    jobs: list[Job | Unstarted]

    def finished(self, failures: dict[Job | Unstarted, dict[str, Any] | None]) -> CategoryRefs | None:
        """The stores behind the category's report rows; None when every one of its jobs failed."""
        evaluated = [
            Evaluated(job.row.name, job.evaluated.result(), *job.chain)
            for job in self.jobs
            if not failures[job]
        ]
        return CategoryRefs(*self.upstream, evaluated) if evaluated else None


@dataclass(eq=False)
class Unstarted:
    """A job of a variant's row that never started: a precomputed store of its own could not be made or
    found (``stage`` says which). It fails alone; the run's other rows go on."""

    category: str
    row: Row
    seed: int
    stage: str
    cause: str

    def failure(self) -> dict[str, Any]:
        """The failure, as :meth:`Job.failure` says one."""
        where = f"{self.category}/{self.row.name}/seed {self.seed}"
        return {
            "category": self.category,
            "method": self.row.name,
            "seed": self.seed,
            "stage": self.stage,
            "cause": self.cause,
            "summary": f"{self.stage} of {where} failed: {self.cause}",
        }


class _StoreFailed(Exception):
    """A precomputed store that could not be made or found: its stage, why, and the error itself."""

    def __init__(self, stage: str, error: Exception) -> None:
        super().__init__(stage)
        self.stage, self.error = stage, error
        self.cause = error.cause if isinstance(error, StageFailed) else one_line(error)


class _Precomputed:
    """A category's saliency, cluster and pairs stores, each computed once per distinct settings of its
    stage and input, however many rows share it (a variant's stores are keyed by its own settings). A
    store that fails is tried once: the rows that need it get its failure."""

    def __init__(self, images: StoreRef, mode: dict[str, str], dask: DaskPool | None) -> None:
        self.images, self.mode, self.dask = images, mode, dask
        self.made: dict[tuple[str, str, str], StoreRef | _StoreFailed] = {}

    def _once(self, stage: Any, section: str, settings: Settings, source: StoreRef) -> StoreRef:
        wanted = (section, source.key, getattr(settings, section).model_dump_json())
        if wanted not in self.made:
            try:
                self.made[wanted] = stage(settings, source, self.mode[section], self.dask)
            except Exception as exc:  # noqa: BLE001 (said as the failure of every job that needs the store)
                self.made[wanted] = _StoreFailed(section, exc)
        made = self.made[wanted]
        if isinstance(made, _StoreFailed):
            raise made
        return made

    def chain(self, settings: Settings) -> tuple[StoreRef, StoreRef, StoreRef]:
        """saliency -> cluster -> pairs under ``settings``, one after the other (each shards its images
        over the pool)."""
        maps = self._once(saliency, "saliency", settings, self.images)
        clusters = self._once(cluster, "cluster", settings, maps)
        return maps, clusters, self._once(pairs, "pairs", settings, clusters)


def _plan_category(
    settings: Settings,
    category: str,
    images: StoreRef,
    jobs: list[tuple[Row, int]],
    mode: dict[str, str],
    dask: DaskPool | None,
) -> CategoryPlan:
    """One category's precomputed stores, then its training and evaluation jobs submitted: they run while
    the next category's saliency is computed. A row whose method reads no pair bank trains on the run's
    own precomputed stores (they stand in its report row; its training reads none of them)."""
    precomputed = _Precomputed(images, mode, dask)
    try:
        own = precomputed.chain(settings)
    except _StoreFailed as failed:  # the run's own stores: without them the category has no rows
        raise failed.error from None
    submitted: list[Job | Unstarted] = []
    for row, seed in jobs:
        needs = get_method(row.method).needs_pairs
        try:
            chain = precomputed.chain(row.settings) if needs else own
        except _StoreFailed as failed:  # a variant's own store: its jobs fail, the others run on
            submitted.append(Unstarted(category, row, seed, failed.stage, failed.cause))
            continue
        bank_in = chain[2] if needs else None  # random-swap copies its sizes
        model = train.submit(row.settings, images, row.method, seed, bank_in, mode["train"], dask, row.name)
        scored = evaluate.submit(row.settings, images, model, mode["evaluate"], dask, row.name)
        submitted.append(Job(category, row, seed, model, scored, chain))
    return CategoryPlan(category, (images, *own), submitted)


def _incomplete(failed: list[dict[str, Any]], n_jobs: int, folder: Path) -> str:
    """Why a run whose report was written still failed: its first failure, and how many there were."""
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return (
        f"{failed[0]['summary']}{more}; {len(failed)} of {n_jobs} jobs failed, the report of the others is "
        f"marked incomplete and lists them: {folder}/summary.md"
    )


# Threads only wait on the pool's jobs (in-process jobs take turns), so allow many.
@flow(name="cutswap", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=64))
def cutswap(
    preset: str = "configs/demo.yaml",
    overrides: dict[str, Any] | None = None,
    stages: list[str] | None = None,
    force: list[str] | None = None,
) -> str:
    """Run the CutSwap benchmark described by a preset; returns the report folder."""
    settings = load_settings(preset, overrides)
    check_environment(settings)  # a deployment run starts here, not in ``cutswap run``'s checks
    mode = stage_modes(stages, force)
    with console.run(settings.reports_root, settings.run) as shown:
        root, table = resolve(settings)
        # Every category is read and checked before any heavy work, so a bad file fails the run in seconds.
        names = sorted(table["category"].unique())
        jobs = _row_seeds(run_rows(settings), settings.train.seeds)
        shown.start(*stage_tasks(len(names), len(jobs), precomputed_chains(settings)))
        images = {c: ingest(settings, root, c, table, mode["ingest"]) for c in names}
        with dask_pool(**settings.parallel.model_dump(), run=settings.run) as dask:
            plans = [_plan_category(settings, c, images[c], jobs, mode, dask) for c in names]
            # Every job runs to its end, whatever the others do: a failed one is reported, not fatal.
            failures = {job: job.failure() for plan in plans for job in plan.jobs}
        failed = [failure for failure in failures.values() if failure]
        finished = {plan.category: plan.finished(failures) for plan in plans}
        categories = {c: refs for c, refs in finished.items() if refs is not None}
        if not categories:
            raise RunFailed(f"every job failed, so there is no report; the first: {failed[0]['summary']}")
        folder = report(settings, categories, mode["report"], preset, failed)
        print(f"report: {folder}/summary.md")
        if settings.tracking.mlflow_uri is not None:  # every row, reused trainings too, from their stores
            mlflow_run(settings, folder, categories)
        if failed:
            raise RunFailed(_incomplete(failed, len(jobs) * len(names), folder))
    return str(folder)


def main(argv: list[str] | None = None, owns_process: bool = False) -> int:
    """``python -m flows.benchmark ARGS``, from Python."""
    return launch.main(__doc__, lambda: cutswap, argv, owns_process)
