"""``cutswap``: run benchmarks and read their reports from a terminal.

    cutswap run --preset P [--set K=V] [--stages ..] [--force ..] [--debug]
                                              run the benchmark in-process (``flows.cli`` adds it: the
                                              library does not import the pipeline)
    cutswap runs [--reports reports]          every run: date, preset, dataset, mean image AUROC per method
    cutswap show RUN [--metric image_AUROC]   a run's per-category table (mean +/- std over seeds), then its
                                              comparisons (paired differences, intervals, verdicts)
    cutswap open RUN [--no-browser]           print the path of a run's HTML page and open it in a browser

The ``cutswap`` console script is ``flows.cli:main``; ``python -m cutswap.cli`` has every command but ``run``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cutswap.compare import comparisons_markdown
from cutswap.report import comparison_settings, list_runs, markdown_table, metrics_of, pivot


@dataclass(frozen=True)
class Command:
    """A subcommand that a higher layer adds (``run``, in ``flows.cli``)."""

    name: str
    help: str
    example: str
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


EXAMPLES = {
    "runs": "cutswap runs",
    "show": "cutswap show demo --metric image_AUROC",
    "open": "cutswap open demo",
}


def _epilog(extra: Sequence[Command]) -> str:
    examples = {**{c.name: c.example for c in extra}, **EXAMPLES}
    return "examples:\n" + "\n".join(f"  {line}" for line in examples.values())


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


def main(argv: list[str] | None = None, extra: Sequence[Command] = ()) -> int:
    parser = argparse.ArgumentParser(
        prog="cutswap",
        description="Run cutswap benchmarks and browse their reports.",
        epilog=_epilog(extra),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--reports", type=Path, default=Path("reports"), help="reports root (default: reports)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in extra:
        command.arguments(
            sub.add_parser(command.name, help=command.help, epilog=f"example: {command.example}")
        )
    sub.add_parser("runs", help="list every run", epilog=f"example: {EXAMPLES['runs']}")
    show = sub.add_parser("show", help="print a run's tables", epilog=f"example: {EXAMPLES['show']}")
    show.add_argument("run")
    show.add_argument("--metric", default=None, help="one metric (default: every metric the run has)")
    opener = sub.add_parser(
        "open", help="print a run's HTML page and open it in a browser", epilog=f"example: {EXAMPLES['open']}"
    )
    opener.add_argument("run")
    opener.add_argument("--no-browser", action="store_true", help="only print the path")
    args = parser.parse_args(argv)

    for command in extra:
        if args.command == command.name:
            return command.handler(args)
    if args.command == "open":
        page = args.reports / args.run / "index.html"
        if not page.is_file():
            print(f"error: no page {page} (runs: {_known_runs(args.reports)})", file=sys.stderr)
            return 2
        print(page.resolve())
        if not args.no_browser and _can_browse():
            import webbrowser

            webbrowser.open(page.resolve().as_uri())
        return 0
    if args.command == "runs":
        runs = list_runs(args.reports)
        if runs.empty:
            print(f"no runs under {args.reports}/ (run `make demo` or `cutswap run`)")
            return 0
        print(runs.to_string(index=False))
        return 0
    csv = args.reports / args.run / "results.csv"
    if not csv.is_file():
        known = _known_runs(args.reports)
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
