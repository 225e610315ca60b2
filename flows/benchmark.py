"""The ``cutswap`` flow: a dataset in, a report out, every stage keyed and reusable.

(The file is not named ``cutswap.py``: Prefect puts this folder on ``sys.path`` and Dask workers inherit it,
where such a file would shadow the ``cutswap`` package.)

Recipe:

    ingest (every category) -> per category: saliency -> cluster -> pairs
                                             -> train (method x seed) -> evaluate -> report

The precompute stages (saliency, cluster, pairs) shard their images over a Dask cluster: local worker
processes by default (``parallel.workers``, or one per GPU), an existing scheduler with
``parallel.address``. Every training and evaluation is a job on the same cluster, submitted as soon as its
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
(``cutswap.console``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from cutswap import console
from cutswap.errors import CutswapError
from cutswap.methods import get_method, method_seeds
from cutswap.parallel import dask_client
from cutswap.settings import load_settings
from cutswap.stages import STAGES
from cutswap.stages.report import CategoryRefs
from flows import launch
from tasks.cluster import cluster
from tasks.evaluate import evaluate
from tasks.ingest import ingest, resolve
from tasks.pairs import pairs
from tasks.report import report
from tasks.saliency import saliency
from tasks.train import train


def _modes(stages: list[str] | None, force: list[str] | None) -> dict[str, str]:
    stages = stages or list(STAGES)
    unknown = sorted((set(stages) | set(force or [])) - set(STAGES))
    if unknown:
        raise CutswapError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    return {s: "force" if s in (force or []) else "run" if s in stages else "reuse" for s in STAGES}


# Threads only wait on cluster jobs (in-process jobs take turns), so allow many.
@flow(name="cutswap", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=64))
def cutswap(
    preset: str = "configs/demo.yaml",
    overrides: dict[str, Any] | None = None,
    stages: list[str] | None = None,
    force: list[str] | None = None,
) -> str:
    """Run the CutSwap benchmark described by a preset; returns the report folder."""
    settings = load_settings(preset, overrides)
    mode = _modes(stages, force)
    with console.run(settings.reports_root, settings.run) as shown:
        root, table = resolve(settings)
        # Every category is read and checked before any heavy work, so a bad file fails the run in seconds.
        names = sorted(table["category"].unique())
        # Every method over every seed, except the no-training baseline, which is the same for any seed.
        jobs = [(m, s) for m in settings.train.methods for s in method_seeds(m, settings.train.seeds)]
        # Stage tasks: 4 per category before its jobs, a train and an evaluate per job, then the report.
        shown.start(len(names) * (4 + 2 * len(jobs)) + 1, 2 * len(jobs) * len(names))
        images = {c: ingest(settings, root, c, table, mode["ingest"]) for c in names}
        precomputed, evaluations = {}, {}
        with dask_client(**settings.parallel.model_dump()) as dask:
            for c in names:
                maps = saliency(settings, images[c], mode["saliency"], dask)
                clusters = cluster(settings, maps, mode["cluster"], dask)
                bank = pairs(settings, clusters, mode["pairs"], dask)
                precomputed[c] = (maps, clusters, bank)
                evaluations[c] = []
                for method, seed in jobs:
                    bank_in = bank if get_method(method).needs_pairs else None  # random-swap copies its sizes
                    model = train.submit(settings, images[c], method, seed, bank_in, mode["train"], dask)
                    evaluations[c].append(evaluate.submit(settings, images[c], model, mode["evaluate"], dask))
            categories = {
                c: CategoryRefs(images[c], *precomputed[c], [future.result() for future in evaluations[c]])
                for c in names
            }
        folder = report(settings, categories, mode["report"], preset)
        print(f"report: {folder}/summary.md")
    return str(folder)


def main(argv: list[str] | None = None, owns_process: bool = False) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.benchmark", description=__doc__.split("\n\n")[0])
    launch.add_run_arguments(parser)
    return launch.run(parser.parse_args(argv), lambda: cutswap, owns_process)


if __name__ == "__main__":
    sys.exit(main(owns_process=True))
