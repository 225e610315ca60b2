"""Score new images with a detector of a benchmark run: what ``cutswap predict`` does, as functions.

A run's report (``reports/<run>/results.csv``, one row per category, method and seed with the store keys)
names its detectors; ``select_detector`` picks one and finds its evaluate store under the run's storage
root. Images are read by ``cutswap.data.images.load_rgb`` at the detector's working size, the function
ingest reads datasets with, so a file gives the same pixels here as it did in the benchmark, and the same
files are refused (missing, empty, truncated, not an image, decompression bomb).

Output folder::

    predictions.csv   path, score, decision (anomalous | normal), threshold, overlay
    skipped.csv       path, problem: the files that could not be used (only when there are some)
    overlays/<i>-<name>.png   the image beside it with its anomaly map overlaid, on one colour scale for
                              every image (``Detector.display_scale``: twice the largest map value of the
                              held-out normal training images is the top)
"""

from __future__ import annotations

import glob
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cutswap import roots
from cutswap.data.images import DECODE_THREADS, load_rgb
from cutswap.data.layouts.common import IMAGE_EXTENSIONS, OTHER_IMAGE_EXTENSIONS
from cutswap.errors import CutswapError, DatasetError
from cutswap.method.registry import UNTRAINED_METHODS
from cutswap.pipeline.stores import StoreRef, is_complete

_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Selection:
    """One detector of a run: where its evaluate store is and why it was chosen."""

    run: str
    category: str
    method: str
    seed: int
    evaluate: StoreRef
    image_auroc: float
    why: str


def _choices(values) -> str:
    return ", ".join(map(str, values)) or "none"


def _best_method(run: str, category: str, rows: pd.DataFrame, means: pd.Series) -> tuple[str, str]:
    """The method with the best mean image AUROC on the category, and the sentence that says so."""
    finite = means.dropna()
    if finite.empty:
        raise CutswapError(f"run {run!r} has no image AUROC on {category!r}; pass --method")
    method = str(finite.idxmax())
    others = ", ".join(f"{m} {v:.3f}" for m, v in finite.items() if m != method)
    n = int((rows["method"] == method).sum())
    why = f"best mean image AUROC on {category} over {n} seed{'s' if n > 1 else ''}: {finite[method]:.3f}" + (
        f"; others: {others}" if others else ""
    )
    return method, why


def select_detector(
    reports_root: Path,
    run: str,
    category: str | None = None,
    method: str | None = None,
    seed: int | None = None,
    storage_root: str | Path | None = None,
) -> Selection:
    """The detector of ``run`` for a category, method and seed, defaults filled in.

    Defaults: the run's only category (a run of several needs one named); the method with the best mean
    image AUROC over seeds on that category, because a detector is used on one category and the method
    that is best on average may not be best on it; the method's first seed. The storage root is the one
    the run recorded in its ``provenance.json`` unless given.

    Raises:
        CutswapError: an unknown run, category, method or seed (the message lists what exists), or an
            evaluate store that is not where the run's report says.
    """
    from cutswap.report.tables import read_results

    results = read_results(Path(reports_root), run)
    if "evaluate_key" not in results.columns:
        raise CutswapError(
            f"{reports_root}/{run}/results.csv has no evaluate_key; rerun the report stage of {run!r}"
        )
    categories = sorted(results["category"].astype(str).unique())
    if category is None:
        if len(categories) != 1:
            raise CutswapError(f"run {run!r} has categories {_choices(categories)}; pass --category")
        category = categories[0]
    if category not in categories:
        raise CutswapError(f"run {run!r} has no category {category!r}; it has {_choices(categories)}")
    rows = results[results["category"].astype(str) == category]
    means = rows.groupby("method", sort=True)["image_AUROC"].mean()
    method, why = (method, "given") if method is not None else _best_method(run, category, rows, means)
    if method not in means.index:
        raise CutswapError(
            f"run {run!r} has no method {method!r} on {category!r}; it has {_choices(means.index)}"
        )
    rows = rows[rows["method"] == method]
    seeds = sorted(int(s) for s in rows["seed"])
    if seed is None:
        seed = seeds[0]
    if seed not in seeds:
        raise CutswapError(
            f"run {run!r} has no seed {seed} for {method} on {category!r}; it has {_choices(seeds)}"
        )
    row = rows[rows["seed"] == seed].iloc[0]
    ref = _evaluate_store(reports_root, run, category, row, storage_root)
    if not is_complete(ref):
        raise CutswapError(
            f"run {run!r}: the evaluate store of {ref.name} is not at {ref.path}; pass --storage with the "
            "storage root the run used, or rerun the benchmark to recreate it"
        )
    return Selection(run, category, method, seed, ref, float(row["image_AUROC"]), why)


def _evaluate_store(
    reports_root: Path | str, run: str, category: str, row: pd.Series, storage_root: Path | str | None
) -> StoreRef:
    """Where a results row's evaluate store is: under ``storage_root``, else the root the run recorded.
    A variant's stores carry the name of the method it runs (results.csv's ``base_method``)."""
    if storage_root is None:
        prov = Path(reports_root) / run / "provenance.json"
        recorded = json.loads(prov.read_text()).get("settings", {}) if prov.is_file() else {}
        storage_root = recorded.get("storage_root") or "storage"
    base = str(row["base_method"]) if "base_method" in row.index else str(row["method"])
    seed = int(row["seed"])
    name = f"{category}-{base}" if base in UNTRAINED_METHODS else f"{category}-{base}-s{seed}"
    return StoreRef("evaluate", name, str(row["evaluate_key"]), roots.normalize(str(storage_root)))


def collect_images(specs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files named by files, folders (searched recursively) and glob patterns, in the given order
    (each folder and pattern sorted), without duplicates; and the specs or files that cannot be images.

    A named file is always kept, whatever its extension: reading it says whether it is an image. In a
    folder, files with an image extension are kept and every other visible file is reported, so no image
    is dropped without a word.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []

    def folder(root: Path) -> None:
        found = False
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS | OTHER_IMAGE_EXTENSIONS:
                files.append(path)
                found = True
            else:
                problems.append((str(path), "not an image file extension; ignored"))
        if not found:
            problems.append((str(root), "folder holds no image file"))

    for spec in specs:
        if _GLOB_CHARS.search(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                problems.append((spec, "no file matches this pattern"))
            for match in map(Path, matches):
                folder(match) if match.is_dir() else files.append(match)
        elif Path(spec).is_dir():
            folder(Path(spec))
        else:
            files.append(Path(spec))
    return list(dict.fromkeys(files)), problems


def read_images(files: list[Path], size: int) -> tuple[np.ndarray, list[Path], list[tuple[str, str]]]:
    """uint8 (N, size, size, 3) images of the files that decode, those files, and (file, problem) for
    the others, through the ingest stage's reader and checks."""

    def one(path: Path) -> np.ndarray | str:
        try:
            return load_rgb(path, size)[0]
        except DatasetError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        decoded = list(pool.map(one, files))
    kept = [p for p, d in zip(files, decoded, strict=True) if not isinstance(d, str)]
    problems = [(str(p), d) for p, d in zip(files, decoded, strict=True) if isinstance(d, str)]
    images = [d for d in decoded if not isinstance(d, str)]
    return (np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)), kept, problems


def decisions(scores: np.ndarray, threshold: float) -> list[str]:
    """``anomalous`` above the threshold, else ``normal``; empty without a threshold (NaN)."""
    if math.isnan(threshold):
        return [""] * len(scores)
    return ["anomalous" if s > threshold else "normal" for s in scores]


def overlay_name(index: int, path: Path) -> str:
    """A file name for an image's overlay that stays inside the output folder, whatever the input path."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "image"
    return f"{index:04d}-{stem[:80]}.png"


def write_overlay(path: Path, image: np.ndarray, amap: np.ndarray | None, scale: float) -> None:
    """The image and, beside it, the image under its anomaly map (``inferno`` from 0 to ``scale``, opaque
    in proportion to the value, so that low values leave the image visible), enlarged to at least 256 px
    so that a 64 px working image can be seen."""
    from PIL import Image

    from cutswap.report.figures import overlay

    panels = [image]
    if amap is not None:
        panels.append(overlay(image, amap, scale))
    strip = np.concatenate([*panels[:1], *[np.pad(p, ((0, 0), (2, 0), (0, 0))) for p in panels[1:]]], 1)
    zoom = max(1, math.ceil(256 / image.shape[0]))
    out = Image.fromarray(strip).resize((strip.shape[1] * zoom, strip.shape[0] * zoom), Image.NEAREST)
    out.save(path)
