"""Stage functions: each reads the stores of the stages before it and returns one keyed store.

These are plain functions (no Prefect), so the pipeline can be driven from any code; ``tasks/`` wraps
them for Prefect. Every function takes the resolved :class:`cutswap.pipeline.settings.Settings`, its inputs as
:class:`cutswap.pipeline.stores.StoreRef`, and a ``mode`` (``run``, ``force`` or ``reuse``, see
:func:`cutswap.pipeline.stores.build_store`). They return ``(ref, computed)``.

The recipe, as data (the flow, the command line and the progress display read it from here)::

    per category:  ingest -> saliency -> cluster -> pairs          (PER_CATEGORY)
    per job:       train -> evaluate                                 (PER_JOB: one job per method x seed)
    per run:       report                                            (PER_RUN)
"""

from __future__ import annotations

from cutswap.errors import CutswapError

PER_CATEGORY = ("ingest", "saliency", "cluster", "pairs")
PER_JOB = ("train", "evaluate")
PER_RUN = ("report",)
STAGES = PER_CATEGORY + PER_JOB + PER_RUN


def stage_modes(stages: list[str] | None, force: list[str] | None) -> dict[str, str]:
    """Each stage's mode for ``build_store``: ``force`` (named in ``force``), ``run`` (named in ``stages``,
    or every stage when ``stages`` is None) or ``reuse`` (only looked up).

    Raises:
        CutswapError: a name that is no stage; the message lists the stages.
    """
    unknown = sorted((set(stages or []) | set(force or [])) - set(STAGES))
    if unknown:
        raise CutswapError(f"unknown stage(s) {unknown} in --stages/--force; stages are {list(STAGES)}")
    stages = list(stages or STAGES)
    return {s: "force" if s in (force or []) else "run" if s in stages else "reuse" for s in STAGES}


def stage_tasks(categories: int, jobs: int, precomputed: int = len(PER_CATEGORY) - 1) -> tuple[int, int]:
    """(stage tasks, jobs of the pool) of a run of ``categories`` categories and ``jobs`` (row, seed)
    pairs: what its progress display counts down. Each pair is a job of the pool per ``PER_JOB`` stage;
    ``precomputed``: the saliency, cluster and pairs stores of a category (3 without variants,
    ``cutswap.pipeline.variants.precomputed_chains``)."""
    per_category = 1 + precomputed + len(PER_JOB) * jobs
    return categories * per_category + len(PER_RUN), categories * jobs * len(PER_JOB)
