"""Running the flow from a command line (``cutswap run``, ``python -m flows.benchmark``): the same options,
and every input checked before Prefect or Dask start.

``check`` reads the preset and the overrides (``cutswap.settings.load_settings``), the stage names, and
the dataset's root and layout (``cutswap.data.datasets.resolve_dataset``) without importing Prefect, so
a typo or a wrong path ends in about a second with one line naming the setting or file and the fix, and
exit code 2 (a traceback only with ``--debug``). ``execute`` then runs the flow in-process inside the
console session (``cutswap.console``).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutswap.errors import CutswapError
from cutswap.stages import STAGES


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="configs/demo.yaml", help="YAML preset (configs/)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=50"
    )
    parser.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--force", default=None, help="comma-separated stages to recompute")
    parser.add_argument("--debug", action="store_true", help="tracebacks on errors")


@dataclass(frozen=True)
class Checked:
    """A run's inputs, checked."""

    settings: Any
    preset: str
    overrides: dict[str, str]
    stages: list[str] | None
    force: list[str] | None


def _split(value: str | None) -> list[str] | None:
    return [x.strip() for x in value.split(",") if x.strip()] if value else None


def check(args: argparse.Namespace) -> Checked:
    """The settings, stage names and dataset of a run, checked; ``CutswapError`` names what is wrong."""
    from cutswap.data.datasets import resolve_dataset
    from cutswap.settings import load_settings

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CutswapError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=50")
        overrides[key] = value
    stages, force = _split(args.stages), _split(args.force)
    unknown = sorted((set(stages or []) | set(force or [])) - set(STAGES))
    if unknown:
        raise CutswapError(f"unknown stage(s) {unknown} in --stages/--force; stages are {list(STAGES)}")
    settings = load_settings(args.preset, overrides)
    resolve_dataset(settings)
    return Checked(settings, args.preset, overrides, stages, force)


def fail(exc: BaseException, debug: bool, log: Path | None = None) -> int:
    if debug:
        traceback.print_exception(exc)
    print(f"error: {exc}", file=sys.stderr)
    if log is not None and log.is_file():
        print(f"full log: {log}", file=sys.stderr)
    return 2


def execute(
    checked: Checked, flow: Callable[..., str], debug: bool = False, owns_process: bool = False
) -> int:
    """Run the flow in-process, in the console session; 0, or 2 on a ``CutswapError``.

    ``owns_process``: the command ends the process, so the console stays ours until the exit (Prefect
    logs the stop of its temporary server then)."""
    from cutswap import console

    log = console.log_path(checked.settings.reports_root, checked.settings.run).resolve()
    try:
        with console.session(debug, restore=not owns_process):
            folder = Path(flow(checked.preset, checked.overrides, checked.stages, checked.force)).resolve()
    except CutswapError as exc:
        return fail(exc, debug, log)
    page = folder / "index.html"
    print(f"\nDone. Report: {folder}/summary.md" + (f" and {page}" if page.is_file() else ""))
    print(f"Full log: {log}")
    return 0


def run(
    args: argparse.Namespace, load_flow: Callable[[], Callable[..., str]], owns_process: bool = False
) -> int:
    """``check``, then ``load_flow()`` (the import of Prefect), then ``execute``."""
    try:
        checked = check(args)
    except CutswapError as exc:
        return fail(exc, args.debug)
    return execute(checked, load_flow(), args.debug, owns_process)
