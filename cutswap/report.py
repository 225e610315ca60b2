"""Report rendering: results table, Markdown summary and figures from evaluated runs.

Output layout (``reports/<run>/``)::

    results.csv      one row per (category, method, seed): metrics, the settings that matter, keys
    summary.md       per-category table of mean (+/- std over seeds) image AUROC per method, a mean row,
                     and how every number was obtained
    figures/<category>.png   saliency per level with its top cluster, and negatives of each method
    provenance.json  settings, backbone, versions, store keys
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("image_AUROC",)


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


def summary_markdown(results: pd.DataFrame, provenance: dict) -> str:
    """The human-readable summary: the table first, then exactly how it was obtained."""
    first = results.iloc[0]
    seeds = sorted(results["seed"].unique().tolist())
    backbone = provenance["backbone"]
    fallback = backbone.get("fallback_reason")
    lines = [
        f"# cutswap report: {provenance['run']}",
        "",
        f"Dataset **{first['dataset']}**, {results['category'].nunique()} categories, image AUROC (%) "
        f"per category, {'mean ± std over seeds ' if len(seeds) > 1 else 'seed '}{seeds}.",
        "",
        markdown_table(pivot(results)),
        "",
        "## How these numbers were obtained",
        "",
        f"- Classifier: ResNet-18 {'from ImageNet weights' if first['pretrained'] else 'trained from scratch'} "
        f"+ MLP head {first['head_dims']}, binary (normal vs negative), {first['steps']} steps of "
        f"{first['batch_size']} normal + {first['batch_size']} negative images at {first['image_size']} px, "
        f"SGD lr {first['lr']} (cosine), momentum 0.9, weight decay 3e-5.",
        "- Score: Mahalanobis distance to a Gaussian (mean, Ledoit-Wolf covariance) of the 512-d embeddings "
        "of the normal training images only. image_AUROC = ROC AUC of that score over the test images.",
        f"- Saliency (cutswap): LayerCAM on {backbone['name']} (ImageNet, weights sha256 "
        f"{str(backbone.get('sha256', ''))[:12]}…), levels {first['levels']}, target class = "
        "each image's top-1.",
        f"- Clustering: {first['cluster_method']} K={first['cluster_k']} on each map's values; pairs: "
        f"{first['draws']} draws per map from the top cluster; fallback to random locations in "
        f"{first['pair_fallback_rate'] * 100:.1f}% of draws.",
        "- Controls: random-swap = the same swap at uniformly random non-overlapping locations; cutpaste = "
        "CutPaste (normal variant) with the same patch-size distribution.",
    ]
    if fallback:
        lines.append(f"- **Deviation**: saliency backbone is not the paper's ResNet-18: {fallback}")
    if first["dataset"] == "textures":
        lines.append(
            "- The `textures` dataset is real CC0 texture photographs (scikit-image) with synthetic defects "
            "built by this project; no published figures exist for it."
        )
    lines += ["", "Per-seed values and every setting: `results.csv`. Store keys: `provenance.json`.", ""]
    return "\n".join(lines)


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
