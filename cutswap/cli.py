"""``cutswap``: browse reports from a terminal.

    cutswap runs [--reports reports]          every run: date, preset, dataset, mean image AUROC per method
    cutswap show RUN [--metric image_AUROC]   a run's per-category table (mean +/- std over seeds), then its
                                              comparisons (paired differences, intervals, verdicts)

Running the pipeline itself is ``python -m flows.benchmark`` (in-process) or a Prefect deployment.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from cutswap.compare import comparisons_markdown
from cutswap.report import comparison_settings, list_runs, markdown_table, metrics_of, pivot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cutswap", description="Browse cutswap reports.")
    parser.add_argument(
        "--reports", type=Path, default=Path("reports"), help="reports root (default: reports)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("runs", help="list every run")
    show = sub.add_parser("show", help="print a run's tables")
    show.add_argument("run")
    show.add_argument("--metric", default=None, help="one metric (default: every metric the run has)")
    args = parser.parse_args(argv)

    if args.command == "runs":
        runs = list_runs(args.reports)
        if runs.empty:
            print(f"no runs under {args.reports}/ (run `make demo` or `python -m flows.benchmark`)")
            return 0
        print(runs.to_string(index=False))
        return 0
    csv = args.reports / args.run / "results.csv"
    if not csv.is_file():
        known = ", ".join(list_runs(args.reports).get("run", pd.Series(dtype=str))) or "none"
        print(f"error: no run {args.run!r} under {args.reports}/ (runs: {known})", file=sys.stderr)
        return 2
    results = pd.read_csv(csv)
    metrics = [args.metric] if args.metric else metrics_of(results)
    for metric in metrics:
        if metric not in results.columns:
            print(
                f"error: run {args.run!r} has no metric {metric!r}; it has {metrics_of(results)}",
                file=sys.stderr,
            )
            return 2
        print(f"\n{metric} (%)\n" + markdown_table(pivot(results, metric)))
    comparisons_csv = args.reports / args.run / "comparisons.csv"
    if comparisons_csv.is_file():
        comparisons = pd.read_csv(comparisons_csv)
        comparisons = comparisons[comparisons["metric"].isin(metrics)]
        prov_path = args.reports / args.run / "provenance.json"
        provenance = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
        if not comparisons.empty:
            print("\nComparisons\n" + comparisons_markdown(comparisons, **comparison_settings(provenance)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
