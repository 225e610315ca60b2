"""The commands that use a run's detectors (``cutswap predict``, ``export``): one detector chosen from the
run's report and its evaluate store (``cutswap.deploy.predict``), written as predictions or programs::

    <out>/predictions.csv, skipped.csv, overlays/      (predict)
    <out>/detector.onnx, detector.pt2                  (export)

Imported only when one of them runs: pandas, numpy and torch are not what ``cutswap --help`` needs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cutswap import atomic
from cutswap.errors import CutswapError
from cutswap.report.prose import CALIBRATION_IMAGES

if TYPE_CHECKING:  # imported where used: torch only once a model is loaded
    import numpy as np

    from cutswap.score.detector import Detector


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


def _load(args: argparse.Namespace):
    """The selected detector of ``args.run``, its choice printed."""
    from cutswap.deploy.predict import select_detector
    from cutswap.pipeline.readers import load_detector

    sel = select_detector(args.reports, args.run, args.category, args.method, args.seed, args.storage)
    print(f"run {sel.run}, category {sel.category}: method {sel.method} ({sel.why}), seed {sel.seed}")
    detector = load_detector(sel.evaluate, batch_size=getattr(args, "batch_size", 64))
    return sel, detector


def threshold_line(info: dict, source: str) -> str:
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


def warn_if_not_holding(info: dict, source: str) -> None:
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


def predict(args: argparse.Namespace) -> int:
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
    info, source = prediction_threshold(args, detector)
    print(threshold_line(info, source))
    warn_if_not_holding(info, source)
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


def prediction_threshold(args: argparse.Namespace, detector: Detector) -> tuple[dict, str]:
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


def export(args: argparse.Namespace) -> int:
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
    print(threshold_line(detector.threshold, "stored") + " (metadata cutswap.threshold)")
    warn_if_not_holding(detector.threshold, "stored")
    return 0
