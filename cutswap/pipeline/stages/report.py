"""Report: gather evaluated runs into ``reports/<run>/`` (see ``cutswap.report.tables`` for the layout).

The report folder is written beside its final place and swapped in whole, and it is skipped when its
``provenance.json`` already names the same input keys.

This module is the recipe; each job it runs lives with what it needs:

    results.csv           cutswap.pipeline.results        one row per evaluation, from the stores' attrs
    comparisons.csv       cutswap.report.compare          on the test-set redraws of cutswap.report.redraws
    figures/              cutswap.report.gallery          what cutswap.pipeline.report_inputs read, the
                                                          seeds cutswap.report.picking chose, the words
                                                          of cutswap.report.captions
    summary.md, index.html  cutswap.report.prose, cutswap.report.html
    tensorboard/          cutswap.track.tensorboard_events (with ``tracking.tensorboard``)
    provenance.json       here: keys, settings, stores, failed jobs, and cutswap.report.machine
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from cutswap import roots
from cutswap.atomic import atomic_dir
from cutswap.errors import StoreError
from cutswap.method.registry import REGISTRY
from cutswap.pipeline.report_inputs import (
    ingest_masks,
    read_category_figures,
    read_saliency_examples,
    scored_test_sets,
)
from cutswap.pipeline.results import CategoryRefs, metric_contract, results_table
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stores import CODE_VERSIONS, library_versions, open_store, stage_key
from cutswap.pipeline.tracking import tracked
from cutswap.pipeline.variants import variant_specs
from cutswap.report.ablations import ablation_questions
from cutswap.report.captions import negatives_ref
from cutswap.report.compare import COLUMNS, POWER, TIE, compare, comparison_pairs
from cutswap.report.gallery import category_figures, differences_figures, profile_figures
from cutswap.report.html import FigureRef, run_page
from cutswap.report.machine import machine
from cutswap.report.negatives import draw_negatives, make_negatives
from cutswap.report.picking import shown_methods
from cutswap.report.prose import summary_markdown
from cutswap.report.redraws import redraw_test_sets
from cutswap.report.runs_page import COMPARE, write_index
from cutswap.report.tables import metrics_of
from cutswap.score.resample import N_REDRAWS
from cutswap.track.tensorboard_events import FOLDER as TENSORBOARD
from cutswap.track.tensorboard_events import write_events

#: How the report's comparisons are computed; recorded in ``provenance.json`` under ``comparisons``.
#: (With the run's ``report`` settings: ``margin``, a fraction, and the ``confirmatory`` questions.)
COMPARISON_SETTINGS = {"confidence": 0.95, "power": POWER, "tie": TIE, "redraws": N_REDRAWS}
#: The per-category stores a report reads besides the evaluations.
_UPSTREAM = ("ingest", "saliency", "cluster", "pairs")
#: What the report records of a failed job (the flow's failures carry a summary line too).
_FAILURE_FIELDS = ("category", "method", "seed", "stage", "cause")


def _comparisons(
    settings: Settings, results: pd.DataFrame, categories: dict[str, CategoryRefs]
) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The run's comparisons (``cutswap.report.compare``): the benchmark's questions among the methods'
    own rows, then the ablations of its variants (``cutswap.report.ablations``); and how they were
    computed. None and ``{}`` when no question's two rows both ran."""
    present = set(results["method"])
    asked = {
        pair: how for pair, how in ablation_questions(variant_specs(settings)).items() if set(pair) <= present
    }
    pairs = comparison_pairs([m for m in results["method"] if m in REGISTRY]) + list(asked)
    metrics = metrics_of(results)
    if not pairs or not metrics:
        return None, {}
    how = {**COMPARISON_SETTINGS, "margin": settings.report.equivalence_margin / 100}
    confirmatory = [(q.a, q.b, q.metric) for q in settings.report.confirmatory]
    how["confirmatory"] = [list(q) for q in confirmatory]
    again = redraw_test_sets(scored_test_sets(categories), partial(ingest_masks, categories), how["redraws"])
    conf, power, tie, margin = how["confidence"], how["power"], how["tie"], how["margin"]
    table = compare(results, pairs, metrics, again, conf, power, tie, asked, margin, confirmatory)
    return table, how


def _inputs(categories: dict[str, CategoryRefs]) -> dict[str, str]:
    """Every store the report reads, by ``<category>/<stage>``, ``<category>/eval/<row>/<name>`` or, for a
    row's own precomputed store, ``<category>/<row>/<stage>``: its key."""
    inputs = {f"{c}/{k}": getattr(r, k).key for c, r in categories.items() for k in _UPSTREAM}
    for c, r in categories.items():
        for e in r.evaluations:
            # The row's name is part of the report (a renamed variant is another table).
            inputs[f"{c}/eval/{e.row}/{e.evaluation.name}"] = e.evaluation.key
            inputs.update(
                {
                    f"{c}/{e.row}/{k}": getattr(e, k).key
                    for k in _UPSTREAM[1:]
                    if getattr(e, k) != getattr(r, k)
                }
            )
    return inputs


def _already_written(root: str, where: str, final: Path, key: str, mode: str) -> bool:
    """Whether the report at ``where`` stands (``reuse``, or the same key unless ``force``); one under a URL
    is then downloaded to ``final``.

    Raises:
        StoreError: ``reuse`` and no report there.
    """
    recorded = roots.read_bytes(roots.join(where, "provenance.json"))
    if mode == "reuse" and recorded is None:
        raise StoreError(f"no report at {where}; include 'report' in the stages to run")
    if mode == "reuse" or (mode != "force" and recorded and json.loads(recorded).get("key") == key):
        if not roots.is_local(root):
            roots.download_tree(where, final)
        return True
    return False


def _provenance(
    settings: Settings,
    categories: dict[str, CategoryRefs],
    preset: str | None,
    key: str,
    inputs: dict[str, str],
    failed: list[dict[str, Any]],
    how: dict[str, Any],
) -> dict[str, Any]:
    """``provenance.json``: what made the report (``how``: the comparisons' settings, ``{}`` without any)."""
    first = next(iter(categories.values()))
    return {
        "run": settings.run,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "preset": preset,
        "key": key,
        "code_version": CODE_VERSIONS["report"],
        "settings": json.loads(settings.model_dump_json()),
        "backbone": dict(open_store(first.saliency).attrs["backbone"]),
        "versions": library_versions(),
        "machine": machine(),
        "stores": {c: {k: getattr(r, k).to_dict() for k in _UPSTREAM} for c, r in categories.items()},
        "inputs": inputs,
        "failed_jobs": failed,
        **metric_contract(first),
        **({"comparisons": how} if how else {}),
    }


def _negatives_figure(path: Path, settings: Settings, refs: CategoryRefs) -> None:
    """The category's saliency and the negatives of every trained method of the run, each made by that
    method's own sampler with the run's settings (``cutswap.report.negatives``)."""
    seen = read_saliency_examples(refs)
    sampling = (settings.train.swaps, settings.pairs.area, settings.pairs.aspect, settings.pairs.seed)
    draw_negatives(path, seen, make_negatives(seen, settings.train.methods, *sampling))


def _figures(
    folder: Path,
    settings: Settings,
    categories: dict[str, CategoryRefs],
    results: pd.DataFrame,
    comparisons: pd.DataFrame | None,
    how: dict[str, Any],
) -> list[FigureRef]:
    """Every picture of the run page, drawn into ``folder / "figures"``: the run's differences, then per
    category what its detectors found and what its methods train on."""
    figures = differences_figures(folder, results, comparisons, how) + profile_figures(folder, results)
    shown = shown_methods(results)
    for category, refs in categories.items():
        figures += category_figures(folder, category, read_category_figures(refs, shown))
        figures.append(negatives_ref(f"{category}.png", category))
        _negatives_figure(folder / figures[-1].path, settings, refs)
    return figures


def write_report(
    settings: Settings,
    categories: dict[str, CategoryRefs],
    mode: str = "run",
    preset: str | None = None,
    failed: list[dict[str, Any]] | None = None,
) -> tuple[Path, bool]:
    """Write the report of one run and refresh the index of runs.

    Args:
        failed: the jobs that failed (``category``, ``method``, ``seed``, ``stage``, ``cause``): the report
            of the others is marked incomplete and lists them.

    A report under a URL ``reports_root`` is built in this host's folder for that root
    (``cutswap.roots.local_folder``) and uploaded, ``provenance.json`` last: a reader takes the report
    as complete only once it is there. The runs index is then made from every run in the bucket and
    uploaded too (the run's ``run.log`` follows when the run ends: ``cutswap.app.console``).

    Returns:
        The run's folder on this host and whether it was written now (False: an identical report was
        already there).
    """
    inputs = _inputs(categories)
    failed = [{k: f[k] for k in _FAILURE_FIELDS} for f in failed or []]
    # (an incomplete report is keyed by its failures, so a rerun that completes it writes it anew)
    params = {"run": settings.run, "report": settings.report.model_dump(mode="json")}
    if settings.tracking.tensorboard:  # the event files are part of the report folder
        params["tensorboard"] = True
    key = stage_key("report", {**params, **({"failed_jobs": failed} if failed else {})}, inputs)
    root = roots.normalize(settings.reports_root)
    final = roots.local_folder(root) / settings.run
    where = roots.join(root, settings.run)
    if _already_written(root, where, final, key, mode):
        return final, False

    results = results_table(categories)
    comparisons, how = _comparisons(settings, results, categories)
    provenance = _provenance(settings, categories, preset, key, inputs, failed, how)
    with atomic_dir(final) as tmp:
        (tmp / "figures").mkdir()
        results.to_csv(tmp / "results.csv", index=False)
        if comparisons is not None:
            comparisons.to_csv(tmp / "comparisons.csv", index=False, columns=list(COLUMNS))
        (tmp / "summary.md").write_text(summary_markdown(results, provenance, comparisons))
        figures = _figures(tmp, settings, categories, results, comparisons, how)
        (tmp / "index.html").write_text(run_page(results, provenance, figures, comparisons))
        if settings.tracking.tensorboard:
            write_events(tmp / TENSORBOARD, tracked(results, categories))
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
    if not roots.is_local(root):  # built here, then uploaded with provenance.json (its marker) last
        roots.upload_tree(final, where, last="provenance.json")
        _bring_runs(root, final.parent)
    write_index(final.parent)
    if not roots.is_local(root):
        _upload_index(root, final.parent)
    return final, True


#: A run's files that the runs index reads (``cutswap.report.tables.list_runs``, its comparison pages).
_INDEXED = ("results.csv", "comparisons.csv", "provenance.json")


def _bring_runs(root: str, local: Path) -> None:
    """This host's folder for a URL reports_root made to hold what the runs index reads of every run in
    the bucket (other hosts' runs included): those of a run whose ``provenance.json`` differs here are
    downloaded, ``provenance.json`` last; a run whose report left the bucket leaves the folder too, so
    the index lists the bucket's runs, no more, no fewer."""
    import shutil

    import obstore

    from cutswap.atomic import atomic_file

    listed = obstore.list_with_delimiter(roots.object_store(root))
    runs = {p.rstrip("/") for p in listed["common_prefixes"]} - {COMPARE}
    for run in sorted(r for r in runs if not r.startswith(".")):
        recorded = roots.read_bytes(roots.join(root, run, "provenance.json"))
        here = local / run
        if (
            recorded is None
            or (here / "provenance.json").is_file()
            and ((here / "provenance.json").read_bytes() == recorded)
        ):
            continue
        here.mkdir(parents=True, exist_ok=True)
        for name in _INDEXED:
            data = recorded if name == "provenance.json" else roots.read_bytes(roots.join(root, run, name))
            if data is None:
                (here / name).unlink(missing_ok=True)
                continue
            with atomic_file(here / name) as tmp:
                Path(tmp).write_bytes(data)
    for gone in [p.parent for p in local.glob("*/provenance.json") if p.parent.name not in runs]:
        shutil.rmtree(gone, ignore_errors=True)


def _upload_index(root: str, local: Path) -> None:
    """The runs index and its comparison pages, from this host's folder to the bucket: the pages first,
    the index last (each object whole), and the comparison pages no longer written deleted."""
    import obstore

    pages = {p.name for p in (local / COMPARE).glob("*.html")}
    for page in sorted(pages):
        roots.write_bytes(roots.join(root, COMPARE, page), (local / COMPARE / page).read_bytes())
    roots.write_bytes(roots.join(root, "index.html"), (local / "index.html").read_bytes())
    for meta in obstore.list(roots.object_store(root), prefix=f"{COMPARE}/").collect():
        if meta["path"].rpartition("/")[2] not in pages:
            roots.delete(roots.join(root, meta["path"]))
