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
command but ``run``. This module only parses: each handler lives in the module named for what it does
(``browse``: runs, show, compare, open; ``detect``: predict, export; ``gc``) and is imported when its
command runs, so ``--help`` and a mistyped setting start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cutswap.app import console
from cutswap.errors import CutswapError


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


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run")
    parser.add_argument("--metric", default=None, help="one metric (default: every metric the run has)")


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("first", metavar="RUN_A")
    parser.add_argument("second", metavar="RUN_B")
    parser.add_argument("--metric", default=None, help="one metric (default: every metric both answered)")


def _open_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run")
    parser.add_argument("--no-browser", action="store_true", help="only print the path")


def _finite(text: str) -> float:
    """An argparse type: a finite number (a NaN threshold would decide nothing, and say nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _non_negative(text: str) -> float:
    """An argparse type: a finite number >= 0 (an age)."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
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
        Command("runs", "list every run", EXAMPLES["runs"], lambda parser: None, _from("browse", "runs")),
        Command("show", "print a run's tables", EXAMPLES["show"], _show_arguments, _from("browse", "show")),
        Command(
            "compare",
            "two runs' verdicts side by side",
            EXAMPLES["compare"],
            _compare_arguments,
            _from("browse", "compare"),
        ),
        Command(
            "open",
            "print a run's HTML page and open it in a browser",
            EXAMPLES["open"],
            _open_arguments,
            _from("browse", "open_page"),
        ),
        Command(
            "predict",
            "score images with a detector of a run",
            EXAMPLES["predict"],
            _predict_arguments,
            _from("detect", "predict"),
        ),
        Command(
            "export",
            "write a detector of a run as ONNX (+ a torch.export program)",
            EXAMPLES["export"],
            _export_arguments,
            _from("detect", "export"),
        ),
        Command(
            "gc",
            "list (--yes: delete) a storage root's garbage",
            EXAMPLES["gc"],
            _gc_arguments,
            _from("gc", "run"),
        ),
    ]


def _from(module: str, handler: str) -> Callable[[argparse.Namespace], int]:
    """A command's handler, imported from ``cutswap.app.<module>`` only when the command runs: parsing
    (``--help``, a mistyped option) and ``cutswap run`` never import pandas, scipy or torch."""

    def handle(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(f"cutswap.app.{module}"), handler)(args)

    return handle


def _gc_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="a storage root URL: s3://BUCKET/PREFIX, gs://, az://, file:///PATH")
    parser.add_argument("--yes", action="store_true", help="delete what is listed (default: list only)")
    parser.add_argument(
        "--resume-days",
        type=_non_negative,
        default=None,
        help="resume states of trainings untouched this long are garbage (default 7)",
    )
    parser.add_argument(
        "--upload-hours",
        type=_non_negative,
        default=None,
        help="incomplete multipart uploads (S3) started this long ago are garbage (default 24)",
    )


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


if __name__ == "__main__":
    sys.exit(main())
