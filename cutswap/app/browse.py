"""The commands that read finished runs (``cutswap runs``, ``show``, ``compare``, ``open``): tables from a
run's report folder (``cutswap.report.tables``), printed for a terminal::

    <reports>/<run>/results.csv, comparisons.csv, provenance.json, index.html

Imported only when one of them runs: pandas and the report's statistics (scipy) are the slowest imports
of the ``cutswap`` command, and a mistyped setting of ``cutswap run`` must not wait for them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from cutswap.errors import CutswapError
from cutswap.report.agreement import ONE_SIDED, OPPOSITE, agreement
from cutswap.report.compare import comparisons_markdown
from cutswap.report.prose import comparison_settings
from cutswap.report.tables import list_runs, markdown_table, metrics_of, pivot, read_results, run_folder


def _can_browse() -> bool:
    """A browser can open: ``BROWSER`` is set, or a display is (not on CI)."""
    if os.environ.get("CI"):
        return False
    if os.environ.get("BROWSER"):
        return True
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def _known_runs(reports: Path) -> str:
    return ", ".join(list_runs(reports).get("run", pd.Series(dtype=str))) or "none"


def runs(args: argparse.Namespace) -> int:
    runs = list_runs(args.reports)
    if runs.empty:
        print(f"no runs under {args.reports}/ (run `make demo` or `cutswap run`)")
        return 0
    print(runs.to_string(index=False))
    return 0


def show(args: argparse.Namespace) -> int:
    results = read_results(args.reports, args.run)
    metrics = [args.metric] if args.metric else metrics_of(results)
    missing = [m for m in metrics if m not in results.columns]
    if missing:
        raise CutswapError(f"run {args.run!r} has no metric {missing[0]!r}; it has {metrics_of(results)}")
    for i, metric in enumerate(metrics):
        print(("\n" if i else "") + f"{metric} (%)\n" + markdown_table(pivot(results, metric)))
    comparisons_csv = args.reports / args.run / "comparisons.csv"
    if comparisons_csv.is_file():
        comparisons = pd.read_csv(comparisons_csv)
        comparisons = comparisons[comparisons["metric"].isin(metrics)]
        prov_path = args.reports / args.run / "provenance.json"
        provenance = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
        if not comparisons.empty:
            print("\nComparisons\n" + comparisons_markdown(comparisons, **comparison_settings(provenance)))
    return 0


def compare(args: argparse.Namespace) -> int:
    tables = []
    for run in (args.first, args.second):
        read_results(args.reports, run)
        csv = args.reports / run / "comparisons.csv"
        if not csv.is_file():
            raise CutswapError(f"run {run!r} has no comparisons.csv (it asked no question: one method?)")
        tables.append(pd.read_csv(csv))
    try:
        table = agreement(*tables)
    except ValueError as err:
        raise CutswapError(f"cannot compare {args.first!r} with {args.second!r}: {err}") from err
    if args.metric:
        if args.metric not in set(table["metric"]):
            raise CutswapError(
                f"no common question on {args.metric!r}; they share {sorted(set(table['metric']))}"
            )
        table = table[table["metric"] == args.metric]
    print(f"A = {args.first}, B = {args.second}: differences a − b in points [interval]\n")
    print(markdown_table(table.set_index("question"), index_name="question"))
    opposite = int((table["agreement"] == OPPOSITE).sum())
    one_sided = int((table["agreement"] == ONE_SIDED).sum())
    print(
        f"\n{len(table)} answers: {opposite} opposite, {one_sided} where only one run finds a difference, "
        f"{len(table) - opposite - one_sided} the same."
    )
    return 1 if opposite else 0


def open_page(args: argparse.Namespace) -> int:
    page = run_folder(args.reports, args.run) / "index.html"
    if not page.is_file():
        raise CutswapError(f"no page {page} (runs: {_known_runs(args.reports)})")
    print(page.resolve())
    if not args.no_browser and _can_browse():
        import webbrowser

        webbrowser.open(page.resolve().as_uri())
    return 0
