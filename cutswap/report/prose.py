"""The report's sentences: how every number was obtained (dataset, schedule, trunk, seeds, what was
trained from scratch), the operating-point and trunk notes, the incomplete-run note, and ``summary.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cutswap.method.registry import UNTRAINED_METHODS, method_kinds
from cutswap.report.compare import comparisons_markdown
from cutswap.report.tables import (
    NOT_HOLDING,
    REFERENCES,
    comparison,
    markdown_table,
    metrics_of,
    operating_points,
    pair_steps,
    pivot,
    trunk_label,
)

#: What the threshold was chosen on, by ``threshold.source`` (the report and ``cutswap predict`` say it).
CALIBRATION_IMAGES = {
    "validation": "the category's normal validation images",
    "train holdout": "normal training images held out of the density fit",
}


def operating_point_note(results: pd.DataFrame) -> str:
    """How the threshold behind the operating-point tables was chosen, and which operating points did not
    hold on the test set, from the results' own columns."""
    target = results["threshold_fpr_target"].dropna()
    expected = results["threshold_expected_fpr"].dropna()
    held = results["n_holdout"]
    sources = results.get("threshold_source", pd.Series(["train holdout"])).dropna().unique()
    where = " or ".join(CALIBRATION_IMAGES.get(s, str(s)) for s in sorted(sources))
    text = (
        "Precision, recall and false-positive rate on the test set at the decision threshold chosen on "
        f"{where} ({_span(held)} per category), targeting a false-positive rate of "
        f"{target.max() * 100:g} %; the test labels are not used to choose it. Precision and recall are "
        "n/a without anomalous test images."
    )
    if len(expected) and (expected > target.max() + 1e-12).any():
        text += (
            f" With so few calibration images the largest of their scores is the threshold, whose expected "
            f"false-positive rate is up to {expected.max() * 100:.1f} %."
        )
    return text + _not_holding(results)


def _span(values: pd.Series) -> str:
    low, high = values.min(), values.max()
    return f"{low}" if low == high else f"{low}-{high}"


def _not_holding(results: pd.DataFrame) -> str:
    """The sentence about operating points whose test false-positive count exceeds their bound."""
    if "threshold_holds" not in results.columns:
        return (
            " Whether each operating point holds on the test set was not checked "
            "(stores from before the check)."
        )
    checked = results[results["threshold_holds"].notna()]
    failed = checked[checked["threshold_holds"] == False]  # noqa: E712
    if checked.empty:
        return ""
    level = results.get("threshold_check_level", pd.Series([0.01])).dropna()
    percentile = f"{100 * (1 - level.max()):g}th percentile" if len(level) else "upper percentile"
    text = (
        f" {NOT_HOLDING} k/n marks cells where k of n evaluations flagged more normal test images than their "
        f"calibration sample allows (above the {percentile} of the beta-binomial count that exchangeable "
        "calibration and test images give, `cutswap.score.detector`): there the threshold does not keep its "
        f"false-positive rate on new normal images. {len(failed)} of {len(checked)} operating points "
        "do not hold"
    )
    if failed.empty:
        return text + "."
    worst = failed.groupby(["category", "method"]).size().sort_values(ascending=False)
    listed = ", ".join(f"{m} on {c} ({k})" for (c, m), k in worst.head(6).items())
    return text + f": {listed}{', ...' if len(worst) > 6 else ''}."


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
    "freeze_steps",
    "trunk_lr_factor",
    "trunk_bn",
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


def base_methods(results: pd.DataFrame) -> dict[str, str]:
    """Each row's registered method (``results.csv``'s ``base_method``; a variant runs its method); a
    table from before variants has none, and each row is its own method."""
    if "base_method" not in results.columns:
        return {str(m): str(m) for m in results["method"].unique()}
    pairs = results[["method", "base_method"]].drop_duplicates()
    return dict(zip(pairs["method"].astype(str), pairs["base_method"].astype(str), strict=True))


def own_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The methods' own rows (no variant, no control): what the run's settings made."""
    if "base_method" not in results.columns:
        return results
    return results[results["method"] == results["base_method"]]


def batch_layout(method: str, batch_size: int) -> str:
    """One step's batch of ``method``, class by class: ``32 normal + 32 swap + 32 scar (96 images)``.

    A step draws ``batch_size`` images for class 0 (normal) and as many again for every negative kind of
    the method (``cutswap.method.registry``), so the batch of a 3-way method is half as large again as a
    binary one's; the report must not describe both as "B normal + B negative".
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
    base = base_methods(results)
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
        layouts = "; ".join(f"{m}: {batch_layout(base[m], batch)}" for m in methods)
        line = (
            f"Classifiers ({', '.join(methods)}): {trunk_label(t)} + MLP head {t['head_dims']}, "
            f"{int(t['steps'])} steps of SGD with lr {t['lr']} (cosine decay), momentum {t['momentum']}, "
            f"weight decay {t['weight_decay']}, at {image_size} px; a step's batch, by class: {layouts}"
        )
        swapping = [m for m in methods if "swap" in method_kinds(base[m])]
        if swapping and _present(t.get("swaps")):
            line += f"; swaps ({', '.join(swapping)}): {SWAPS_WORDS.get(t['swaps'], t['swaps'])}"
        lines.append(line + "; seeds " + ", ".join(map(str, sorted(group["seed"].unique()))) + ".")
    return lines


def machine_sentence(provenance: dict) -> str:
    """Where the numbers were made, and what carries to another machine (the intervals, not the seeds)."""
    m = provenance.get("machine") or {}
    where = (
        f"Made on {m.get('cpu', 'an unrecorded CPU')}, {m.get('cpus', '?')} CPUs, "
        f"{m.get('torch_threads', '?')} torch threads{', GPU ' + m['gpu'] if m.get('gpu') else ''} "
        f"({m.get('platform', 'platform unrecorded')})."
    )
    return (
        f"{where} Per-seed numbers are not reproducible on another machine: training is chaotic in float "
        "rounding, so a seed fixes a run only on the machine that made it. The comparisons' intervals hold "
        "that spread; they are what a rerun should agree with."
    )


def _scoring(row: pd.Series) -> str:
    """How a no-training row's detector scores an image: PatchCore's nearest patches, or the classifiers'
    Gaussian density on its frozen ImageNet embeddings."""
    if row.get("scorer") != "patchcore":
        return "scored like the classifiers"
    return (
        "scored by PatchCore: layer2 + layer3 patch features (3 x 3 neighbourhood averages) of the "
        f"normal training images, a greedy coreset of {100 * float(row['coreset_fraction']):g} % of "
        "them as the memory bank, each test patch's distance to its nearest neighbour there; image "
        "score = the largest patch distance, maps = the patch distances upsampled and blurred"
    )


def _untrained_sentences(results: pd.DataFrame) -> list[str]:
    """One sentence per no-training method: what it is, and why it has one seed."""
    lines = []
    for method in sorted(set(results["method"]) & set(UNTRAINED_METHODS)):
        row = results[results["method"] == method].iloc[0]
        lines.append(
            f"{method} (no training): {row['trunk']} with its ImageNet weights, frozen, {_scoring(row)}; "
            "evaluated once per category (no seed changes it) and paired with every seed in the comparisons."
        )
    return lines


def _score_sentence(results: pd.DataFrame) -> str:
    """The image score shared by the classifiers and the density baseline."""
    normalised = bool(results.get("l2_normalize", pd.Series(dtype=bool)).fillna(False).any())
    unit = ", each embedding scaled to unit length first (evaluate.l2_normalize)" if normalised else ""
    return (
        "Score: Mahalanobis distance to a Gaussian (mean, Ledoit-Wolf covariance) of the pooled trunk "
        f"embeddings (512-d ResNet-18, 1280-d EfficientNet-Lite0) of the normal training images only{unit}. "
        "image_AUROC = ROC AUC of that score over the test images."
    )


#: How the run's own maps were made (``saliency.cam``), and what anchored its pairs (``cluster.anchor``).
CAM_WORDS = {"layercam": "LayerCAM", "gradcam": "Grad-CAM"}
ANCHOR_WORDS = {
    "top": "the top cluster",
    "random": "a cluster drawn at random",
    "threshold": "the pixels above a saliency threshold (no clustering)",
}


def _saliency_sentence(first: pd.Series, backbone: dict) -> str:
    """How cutswap's saliency maps were made, from the saliency store's settings in the first row."""
    target = int(first["target_class"]) if _present(first.get("target_class")) else None
    size = int(first["saliency_input_size"]) if _present(first.get("saliency_input_size")) else None
    at = (
        f" at {size} x {size} px input, maps resampled to the working size"
        if size
        else " at the working size"
    )
    classes = "each image's top-1" if target is None else f"ImageNet class {target} for every image"
    tanh = ", raw maps rescaled by tanh(2 M / max M)" if bool(first.get("shallow_tanh", False)) else ""
    return (
        f"Saliency (cutswap): {CAM_WORDS.get(first.get('saliency_cam'), 'LayerCAM')} on {backbone['name']} "
        "(ImageNet, weights sha256 "
        f"{str(backbone.get('sha256', ''))[:12]}…){at}, levels {first['levels']}, "
        f"target class = {classes}{tanh}."
    )


def _pairs_sentence(first: pd.Series, results: pd.DataFrame) -> str:
    """How the maps were clustered and the swap pairs drawn, with how often the draws fell back."""
    fallback = results.drop_duplicates("category")["pair_fallback_rate"].mean() * 100
    anchor = ANCHOR_WORDS.get(first.get("cluster_anchor"), ANCHOR_WORDS["top"])
    return (
        f"Clustering: {first['cluster_method']} K={first['cluster_k']} on each map's values; pairs: "
        f"{first['draws']} draws per map from {anchor}, else at a smaller patch, else from the top "
        f"and next clusters, and only then at random locations: {fallback:.1f}% of draws, mean over "
        "categories (steps per category and level in the pair-bank table)."
    )


def _controls_sentences(results: pd.DataFrame) -> list[str]:
    """What the control methods present in the run are."""
    methods = set(results["method"])
    controls = []
    if "random-swap" in methods:
        controls.append(
            "random-swap = the same swaps with the same patch sizes at uniformly random non-overlapping "
            "locations"
        )
    if any("cutpaste" in method_kinds(m) for m in set(base_methods(results).values())):
        controls.append("cutpaste = CutPaste (normal variant) with the same patch-size distribution")
    return ["Controls: " + "; ".join(controls) + "."] if controls else []


def _variant_sentences(provenance: dict) -> list[str]:
    """What each variant row changes, as the run's settings declared it (the ablation block's rows)."""
    variants = (provenance.get("settings") or {}).get("variants") or {}
    if not variants:
        return []
    said = []
    for name, variant in variants.items():
        changes = ", ".join(f"{k}={v}" for k, v in variant["set"].items())
        said.append(f"{name} = {variant['method']} with {changes}")
    return [
        "Variants (rows of the ablation block; each trained and evaluated under the run's protocol, its "
        "stores keyed by its own settings; a `-random-swap` row is its control, random-swap under the "
        "same settings): " + "; ".join(said) + "."
    ]


def _metric_sentences(results: pd.DataFrame, provenance: dict) -> list[str]:
    """Each metric's definition and the resolution and localization the pixel metrics were computed at,
    as the evaluate stores recorded them."""
    definitions = provenance.get("metric_definitions") or {}
    lines = [f"`{m}`: {definitions[m]}" for m in metrics_of(results) if m in definitions]
    if "metric_resolution" in provenance:
        loc = dict(provenance.get("localization") or {})
        route = loc.pop("localization", "n/a")
        detail = ", ".join(f"{k} {v}" for k, v in loc.items() if v is not None)
        lines.append(
            f"Pixel metrics computed at the working size {provenance['metric_resolution']} px (masks resized "
            f"with nearest neighbour); anomaly maps by {route} localization ({detail})."
        )
    return lines


def _caveats(first: pd.Series, backbone: dict) -> list[str]:
    """What a reader comparing with published numbers must know: a substituted backbone, the dataset."""
    lines = []
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


def how_obtained(results: pd.DataFrame, provenance: dict) -> list[str]:
    """Sentences saying exactly how the numbers were made, shared by the Markdown and HTML pages."""
    first = own_rows(results).iloc[0] if len(own_rows(results)) else results.iloc[0]
    backbone = provenance["backbone"]
    return [
        *training_sentences(results, first["image_size"]),
        *_untrained_sentences(results),
        _score_sentence(results),
        _saliency_sentence(first, backbone),
        _pairs_sentence(first, own_rows(results)),
        *_controls_sentences(results),
        *_variant_sentences(provenance),
        *_metric_sentences(results, provenance),
        machine_sentence(provenance),
        *_caveats(first, backbone),
    ]


def comparison_settings(provenance: dict) -> dict:
    """How the run's comparisons were computed (``provenance["comparisons"]``), as the keyword arguments of
    ``cutswap.report.compare.interval_note``; reports of earlier versions recorded ``n_boot`` and ``seed``."""
    known = ("confidence", "tie", "power", "redraws", "n_boot", "seed", "margin", "confirmatory")
    return {k: v for k, v in (provenance.get("comparisons") or {}).items() if k in known}


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
