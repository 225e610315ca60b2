"""Which pictures a run's report holds, under which file names, each drawn from plain data.

Per category (``figures/<stem>-<kind>.png``, ``<stem>`` the category with anything but letters, digits and
``-_.`` replaced by ``_``), from a :class:`CategoryFigures` (read by ``cutswap.pipeline.report_inputs``)::

    CategoryFigures
        evaluations   {method: [Evaluation]}    every evaluation, methods in run order, seeds ascending
        examples      [ExampleSet]              the shown methods' representative seeds, in shown order
        logs          {method: [float (L, C)]}  the non-empty training logs, one per seed
        log_columns   list[str]                 the C columns' names (step, loss, acc_negative, ...)

    <stem>-examples-<method>.png   per shown method (``cutswap.report.examples``)
    <stem>-scores.png              score distributions of each method's representative seed
    <stem>-roc.png                 image-level ROC, every seed
    <stem>-training.png            training curves, when a log has the columns they need

Per run (``figures/<name>.png``), from ``results.csv`` (and the comparisons)::

    answers.png       the main block's questions on their main metric, shown beside the page's answers
    differences.png   the comparisons' paired differences with their intervals, every metric
    profile.png       the score profile of the methods' own rows: every (category, seed) run's image
                      AUROC (or the first metric with a finite score), variants left out

The figures themselves are ``cutswap.report.figures``; their captions ``cutswap.report.captions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cutswap.report import figures as plots
from cutswap.report.captions import (
    answers_ref,
    differences_ref,
    evaluation_label,
    profile_ref,
    roc_ref,
    scores_ref,
    training_ref,
)
from cutswap.report.compare import headline, row_differences
from cutswap.report.examples import ExampleSet, draw_examples
from cutswap.report.html import FigureRef
from cutswap.report.picking import Evaluation, representative
from cutswap.report.prose import comparison_settings, own_rows
from cutswap.report.tables import metrics_of

#: The log columns a training figure needs.
TRAINING_COLUMNS = frozenset({"step", "loss", "acc_negative"})


@dataclass(frozen=True)
class CategoryFigures:
    """What one category's pictures are drawn from (module docstring)."""

    evaluations: dict[str, list[Evaluation]]
    examples: list[ExampleSet] = field(default_factory=list)
    logs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    log_columns: list[str] = field(default_factory=list)


def figure_stem(category: str) -> str:
    """The category as the start of a file name (module docstring)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in category)


def category_figures(folder: Path, category: str, data: CategoryFigures) -> list[FigureRef]:
    """The category's pictures of what the detectors found (examples, scores, ROC, training curves), drawn
    into ``folder / "figures"``; none for a category without evaluations."""
    if not data.evaluations:
        return []
    stem, figures = figure_stem(category), folder / "figures"
    refs = [
        draw_examples(figures / f"{stem}-examples-{ex.evaluation.method}.png", category, ex)
        for ex in data.examples
    ]
    shown = [representative(evs) for evs in data.evaluations.values()]
    panels = {evaluation_label(ev): (ev.scores, ev.labels) for ev in shown}
    thresholds = {evaluation_label(ev): ev.score_threshold for ev in shown}
    plots.score_histograms(figures / f"{stem}-scores.png", panels, category, thresholds)
    refs.append(scores_ref(f"{stem}-scores.png", category))
    curves = {m: [(ev.scores, ev.labels) for ev in evs] for m, evs in data.evaluations.items()}
    plots.roc_figure(figures / f"{stem}-roc.png", curves, f"{category}: image-level ROC")
    refs.append(roc_ref(f"{stem}-roc.png", category))
    if data.logs and set(data.log_columns) >= TRAINING_COLUMNS:
        title = f"{category}: training, one line per seed"
        plots.training_figure(figures / f"{stem}-training.png", data.logs, data.log_columns, title)
        refs.append(training_ref(f"{stem}-training.png", category))
    return refs


def differences_figures(
    folder: Path, results: pd.DataFrame, comparisons: pd.DataFrame | None, how: dict[str, Any]
) -> list[FigureRef]:
    """The run-level picture: the comparisons' paired differences with their intervals; none without
    comparisons. ``how``: the comparisons' settings as ``provenance.json`` records them."""
    if comparisons is None or comparisons.empty:
        return []
    slim = results[["category", "method", "seed", *metrics_of(results)]]  # pandas is slow on 40 columns
    diffs = {}
    for r in comparisons.itertuples(index=False):
        pair = slim[slim["method"].isin((r.a, r.b))]
        diffs[(r.a, r.b, r.metric)] = row_differences(pair, r.a, r.b, r.metric)
    settings = comparison_settings({"comparisons": how})
    level, tie = settings.get("confidence", 0.95), settings.get("tie", 0.001)
    plots.differences_figure(folder / "figures" / "differences.png", comparisons, diffs, level, tie)
    refs = [differences_ref("differences.png")]
    answers = headline(comparisons)
    if not answers.empty:
        plots.differences_figure(folder / "figures" / "answers.png", answers, diffs, level, tie)
        refs.insert(0, answers_ref("answers.png", " and ".join(dict.fromkeys(answers["metric"]))))
    return refs


#: The metric the score profile is drawn on when the run has it: the one every method reports.
PROFILE_METRIC = "image_AUROC"


def profile_metric(rows: pd.DataFrame) -> str | None:
    """The metric the score profile shows: image AUROC, or where ``rows`` have no finite one the first
    metric (``cutswap.report.tables.metrics_of``) that has one; None without any finite score."""
    for metric in dict.fromkeys([PROFILE_METRIC, *metrics_of(rows)]):
        if metric in rows.columns and np.isfinite(pd.to_numeric(rows[metric], errors="coerce")).any():
            return metric
    return None


def profile_figures(folder: Path, results: pd.DataFrame) -> list[FigureRef]:
    """The run-level score profile (``figures/profile.png``): every (category, seed) run of each method's
    own rows (``prose.own_rows``: variants and their controls answer the ablation questions, not "how do
    the methods' runs spread"), methods in their order of appearance; none without a finite score."""
    rows = own_rows(results)
    metric = profile_metric(rows)
    if metric is None:
        return []
    scores = pd.to_numeric(rows[metric], errors="coerce")
    methods = rows["method"].astype(str)
    runs = {m: scores[methods == m].to_numpy(float) for m in dict.fromkeys(methods)}
    title = f"Score profile: {metric}, every (category, seed) run"
    plots.score_profile(folder / "figures" / "profile.png", runs, metric, title)
    return [profile_ref("profile.png", metric)]
