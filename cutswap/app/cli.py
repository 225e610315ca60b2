"""``cutswap``: run benchmarks, read their reports and use their detectors from a terminal.

    cutswap run --preset P [--set K=V] [--stages ..] [--force ..] [--debug]
                                              run the benchmark in-process (``flows.cli`` adds it: the
                                              library does not import the pipeline)
    cutswap runs [--reports reports]          every run: date, preset, dataset, mean image AUROC per method
    cutswap show RUN [--metric image_AUROC]   a run's per-category table (mean +/- std over seeds), then its
                                              comparisons (paired differences, intervals, verdicts)
    cutswap compare RUN_A RUN_B [--metric M] two runs' comparisons side by side; exit 1 when they reach
                                              opposite verdicts on a question
    cutswap open RUN [--no-browser]           print the path of a run's HTML page and open it in a browser
    cutswap predict RUN IMAGES... [--category C] [--method M] [--seed S] [--out DIR]
                    [--fpr F | --threshold T] [--strict]
                                              score image files, folders or globs with one detector of the
                                              run: predictions.csv and an overlay PNG per image
    cutswap export RUN [--category C] [--method M] [--seed S] [--out DIR]
                                              the detector as ONNX (and a torch.export .pt2): uint8
                                              images in, score and anomaly map out, threshold in the
                                              metadata
    cutswap gc ROOT [--yes]                   what under a storage root no reader can reach and no writer
                                              writes (``cutswap.app.gc``): listed, deleted with --yes

Defaults: the run's only category, the method with the best mean image AUROC on it, its first seed, and
the decision threshold the evaluate stage chose on the run's normal calibration images
(``cutswap.score.detector``). Errors a user can act on (unknown run or method, bad image files with
``--strict``) exit with status 2 and a message, without a traceback.

The ``cutswap`` console script is ``flows.cli:main``; ``python -m cutswap.app.cli`` has every
command but ``run``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cutswap import atomic
from cutswap.app import console
from cutswap.errors import CutswapError
from cutswap.report.agreement import ONE_SIDED, OPPOSITE, agreement
from cutswap.report.compare import comparisons_markdown
from cutswap.report.prose import CALIBRATION_IMAGES, comparison_settings
from cutswap.report.tables import list_runs, markdown_table, metrics_of, pivot, read_results, run_folder

if TYPE_CHECKING:  # imported where used: the commands that need no model start without torch
    import numpy as np

    from cutswap.score.detector import Detector


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
    "compare": "cutswap compare demo demo-seeds-3-5",
    "open": "cutswap open demo",
    "predict": "cutswap predict demo --category brick storage/datasets/textures/brick/test/hole",
    "export": "cutswap export demo --category brick --out exports/brick",
    "gc": "cutswap gc s3://my-bucket/cutswap",
}


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


def _runs(args: argparse.Namespace) -> int:
    runs = list_runs(args.reports)
    if runs.empty:
        print(f"no runs under {args.reports}/ (run `make demo` or `cutswap run`)")
        return 0
    print(runs.to_string(index=False))
    return 0


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run")
    parser.add_argument("--metric", default=None, help="one metric (default: every metric the run has)")


def _show(args: argparse.Namespace) -> int:
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


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("first", metavar="RUN_A")
    parser.add_argument("second", metavar="RUN_B")
    parser.add_argument("--metric", default=None, help="one metric (default: every metric both answered)")


def _compare(args: argparse.Namespace) -> int:
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


def _open_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run")
    parser.add_argument("--no-browser", action="store_true", help="only print the path")


def _open(args: argparse.Namespace) -> int:
    page = run_folder(args.reports, args.run) / "index.html"
    if not page.is_file():
        raise CutswapError(f"no page {page} (runs: {_known_runs(args.reports)})")
    print(page.resolve())
    if not args.no_browser and _can_browse():
        import webbrowser

        webbrowser.open(page.resolve().as_uri())
    return 0


#: Files a folder written by ``predict`` or ``export`` holds: such a folder may be replaced by a new output.
_OUR_OUTPUTS = {"predictions.csv", "skipped.csv", "overlays", "detector.onnx", "detector.pt2"}


def _check_out(out: Path, option: str) -> Path:
    """``--out`` as a folder the command may replace whole, checked before anything loads.

    The output is written beside it and swapped in at the end (``cutswap.atomic.atomic_dir``): a failure
    leaves the previous output or none, never a CSV of some rows or an ONNX file beside a stale program.
    A folder holding anything else is refused rather than replaced.
    """
    if out.exists() and not out.is_dir():
        raise CutswapError(f"{option} {out} is a file; give a folder (it is created if missing)")
    if out.is_dir() and (foreign := sorted({p.name for p in out.iterdir()} - _OUR_OUTPUTS)):
        raise CutswapError(
            f"{option} {out} holds other files ({', '.join(foreign[:3])}); give a new or empty folder"
        )
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise CutswapError(f"{option} {out}: cannot write in {parent} ({exc.strerror or exc})") from exc
    return out


def _finite(text: str) -> float:
    """An argparse type: a finite number (a NaN threshold would decide nothing, and say nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _rate(text: str) -> float:
    """An argparse type: a false-positive rate strictly between 0 and 1."""
    value = _finite(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate strictly between 0 and 1 (e.g. 0.05)")
    return value


def _positive(text: str) -> int:
    """An argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run")
    parser.add_argument("images", nargs="+", help="image files, folders (searched recursively) or globs")
    _detector_arguments(parser)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: predictions/...)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--fpr", type=_rate, default=None, help="re-choose the threshold at this target FPR")
    how.add_argument("--threshold", type=_finite, default=None, help="use this decision threshold")
    parser.add_argument("--strict", action="store_true", help="a file that cannot be read is an error")
    parser.add_argument("--batch-size", type=_positive, default=64)


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run")
    _detector_arguments(parser)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: exports/...)")
    parser.add_argument("--onnx-only", action="store_true", help="skip the torch.export program (.pt2)")


def _commands() -> list[Command]:
    """The library's commands, each with its example (``cutswap --help`` lists them)."""
    return [
        Command("runs", "list every run", EXAMPLES["runs"], lambda parser: None, _runs),
        Command("show", "print a run's tables", EXAMPLES["show"], _show_arguments, _show),
        Command(
            "compare",
            "two runs' verdicts side by side",
            EXAMPLES["compare"],
            _compare_arguments,
            _compare,
        ),
        Command(
            "open",
            "print a run's HTML page and open it in a browser",
            EXAMPLES["open"],
            _open_arguments,
            _open,
        ),
        Command(
            "predict",
            "score images with a detector of a run",
            EXAMPLES["predict"],
            _predict_arguments,
            _predict,
        ),
        Command(
            "export",
            "write a detector of a run as ONNX (+ a torch.export program)",
            EXAMPLES["export"],
            _export_arguments,
            _export,
        ),
        Command("gc", "list (--yes: delete) a storage root's garbage", EXAMPLES["gc"], _gc_arguments, _gc),
    ]


def _gc_arguments(parser: argparse.ArgumentParser) -> None:
    from cutswap.app import gc

    gc.arguments(parser)


def _gc(args: argparse.Namespace) -> int:
    from cutswap.app import gc

    return gc.run(args)


def main(argv: list[str] | None = None, extra: Sequence[Command] = ()) -> int:
    """Every command the same way: parse, then its handler; a ``CutswapError`` is one line and exit 2."""
    commands = [*extra, *_commands()]
    parser = argparse.ArgumentParser(
        prog="cutswap",
        description="Run cutswap benchmarks, browse their reports, use their detectors.",
        epilog="examples:\n" + "\n".join(f"  {c.example}" for c in commands),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--reports", type=Path, default=Path("reports"), help="reports root (default: reports)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        command.arguments(
            sub.add_parser(command.name, help=command.help, epilog=f"example: {command.example}")
        )
    with console.quiet_when_stdout_closes():
        args = parser.parse_args(argv)
        handler = next(c.handler for c in commands if c.name == args.command)
        try:
            return handler(args)
        except CutswapError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2


def _detector_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--category", default=None, help="default: the run's only category")
    parser.add_argument("--method", default=None, help="default: best mean image AUROC on the category")
    parser.add_argument("--seed", type=int, default=None, help="default: the method's first seed")
    parser.add_argument(
        "--storage", type=Path, default=None, help="storage root (default: the one the run recorded)"
    )


def _load(args: argparse.Namespace):
    """The selected detector of ``args.run``, its choice printed."""
    from cutswap.deploy.predict import select_detector
    from cutswap.pipeline.readers import load_detector

    sel = select_detector(args.reports, args.run, args.category, args.method, args.seed, args.storage)
    print(f"run {sel.run}, category {sel.category}: method {sel.method} ({sel.why}), seed {sel.seed}")
    detector = load_detector(sel.evaluate, batch_size=getattr(args, "batch_size", 64))
    return sel, detector


def _threshold_line(info: dict, source: str) -> str:
    if source == "given":
        return f"threshold {info['value']:.6g} (given with --threshold)"
    if info["n_holdout"] == 0:
        return (
            "no threshold: the run held out no normal images (evaluate.threshold_holdout=0); pass --threshold"
        )
    images = CALIBRATION_IMAGES[info.get("source") or "train holdout"]
    line = (
        f"threshold {info['value']:.6g}: {images} (n={info['n_holdout']}), target "
        f"FPR {info['fpr_target']:g}{' (--fpr)' if source == 'fpr' else ''}"
    )
    if not info["resolved"]:
        line += (
            "; too few calibration images for that target: the largest of their scores is used, "
            f"expected FPR {info['expected_fpr']:.3g}"
        )
    return line


def _warn_if_not_holding(info: dict, source: str) -> None:
    """On stderr, when the stored threshold did not hold on the run's own test set (its ``check``)."""
    check, test = info.get("check") or {}, info.get("test") or {}
    if source != "stored" or check.get("holds") is not False:
        return
    normals = test["fp"] + test["tn"]
    print(
        "warning: this threshold does not hold: on the run's test set it flagged "
        f"{test['fp']} of {normals} normal images ({test['fp'] / normals:.0%}), more than the "
        f"{check['allowed_fp']} its calibration images allow; its false-positive rate on new normal images "
        "will be higher than targeted. Choose one on normal images like yours (--threshold), or give the "
        "dataset a validation/good folder and rerun.",
        file=sys.stderr,
    )


def _predict(args: argparse.Namespace) -> int:
    from cutswap.deploy.predict import collect_images, decisions, overlay_name, read_images

    if args.out is not None:
        _check_out(args.out, "--out")
    files, problems = collect_images(args.images)
    sel, detector = _load(args)
    images, kept, unreadable = read_images(files, detector.image_size)
    problems += unreadable
    _report_unusable(problems, args.strict)
    if not kept:
        raise CutswapError(f"no readable image among {args.images}; nothing was written")
    info, source = _prediction_threshold(args, detector)
    print(_threshold_line(info, source))
    _warn_if_not_holding(info, source)
    threshold = float(info["value"])
    out = args.out or _check_out(
        Path("predictions") / f"{sel.run}-{sel.category}-{sel.method}-s{sel.seed}", "--out"
    )
    scores, maps = detector.score(images)
    names = [overlay_name(i, p) for i, p in enumerate(kept)]
    table = pd.DataFrame(
        {
            "path": [str(p) for p in kept],
            "score": scores,
            "decision": decisions(scores, threshold),
            "threshold": threshold,
            "overlay": [f"overlays/{n}" for n in names],
        }
    )
    _write_predictions(out, table, names, images, maps, detector.display_scale, problems)
    _print_predictions(table, out)
    return 0


def _report_unusable(problems: list[tuple[str, str]], strict: bool) -> None:
    """Lists the files that cannot be scored on stderr (the rest still are), or, with ``--strict``, stops.

    A problem that already starts with its path is printed as is, so that no line names a file twice.
    """
    if not problems:
        return
    print(f"{len(problems)} file(s) could not be used:", file=sys.stderr)
    for path, problem in problems:
        print(
            f"  - {path}: {problem}" if not problem.startswith(path) else f"  - {problem}",
            file=sys.stderr,
        )
    if strict:
        raise CutswapError(f"--strict: {len(problems)} file(s) above cannot be used; nothing was written")


def _prediction_threshold(args: argparse.Namespace, detector: Detector) -> tuple[dict, str]:
    """The decision threshold and where it comes from (``_threshold_line``'s source): ``--threshold`` as
    given, ``--fpr`` chosen anew on the run's calibration scores, else the one the run stored."""
    from cutswap.score.detector import choose_threshold

    if args.threshold is not None:
        return {"value": args.threshold}, "given"
    if args.fpr is not None:
        chosen = choose_threshold(detector.holdout_scores, args.fpr)
        return {**chosen, "source": detector.threshold.get("source")}, "fpr"
    return detector.threshold, "stored"


def _write_predictions(
    out: Path,
    table: pd.DataFrame,
    names: list[str],
    images: np.ndarray,
    maps: np.ndarray | None,
    display_scale: float,
    problems: list[tuple[str, str]],
) -> None:
    """``predictions.csv``, an overlay per image and ``skipped.csv`` (files that could not be used, if
    any), swapped in whole: a failure part way leaves the previous output as it was."""
    from cutswap.deploy.predict import write_overlay

    with atomic.atomic_dir(out) as tmp:
        (tmp / "overlays").mkdir()
        for i, name in enumerate(names):
            write_overlay(
                tmp / "overlays" / name, images[i], None if maps is None else maps[i], display_scale
            )
        table.to_csv(tmp / "predictions.csv", index=False)
        if problems:
            pd.DataFrame(problems, columns=["path", "problem"]).to_csv(tmp / "skipped.csv", index=False)


def _print_predictions(table: pd.DataFrame, out: Path) -> None:
    """The first ten predictions, how many images were flagged and where the output is."""
    flagged = int((table["decision"] == "anomalous").sum())
    print(table.head(10)[["path", "score", "decision"]].to_string(index=False))
    if len(table) > 10:
        print(f"... {len(table) - 10} more")
    print(
        f"{flagged} of {len(table)} image(s) anomalous; wrote {out / 'predictions.csv'} and "
        f"{out / 'overlays'}/"
    )


def _export(args: argparse.Namespace) -> int:
    from cutswap.deploy.export import export_onnx, export_program

    if args.out is not None:
        _check_out(args.out, "--out")
    sel, detector = _load(args)
    out = args.out or _check_out(
        Path("exports") / f"{sel.run}-{sel.category}-{sel.method}-s{sel.seed}", "--out"
    )
    with atomic.atomic_dir(out) as tmp:  # a new export replaces the folder: no stale .pt2 beside a new .onnx
        export_onnx(detector, tmp / "detector.onnx", run=sel.run, row=sel.method)
        if not args.onnx_only:
            export_program(detector, tmp / "detector.pt2", run=sel.run, row=sel.method)
    print(
        f"wrote {out / 'detector.onnx'} (input uint8 (N, {detector.image_size}, {detector.image_size}, 3); "
        "outputs score, anomaly_map)"
    )
    if not args.onnx_only:
        print(f"wrote {out / 'detector.pt2'} (torch.export program)")
    print(_threshold_line(detector.threshold, "stored") + " (metadata cutswap.threshold)")
    _warn_if_not_holding(detector.threshold, "stored")
    return 0


if __name__ == "__main__":
    sys.exit(main())
