"""The report's pictures: what a detector found, how its scores separate, how training went, who wins.

Plain inputs only (arrays, DataFrames, paths): the report stage reads the stores and passes what they
hold, so these functions can be tested and reused without stores, Prefect or settings. Every function
writes one small PNG (``DPI`` dots per inch, a few hundred KB at most) with matplotlib's Agg canvas
through ``matplotlib.figure.Figure``, never ``pyplot``, so no global backend or figure registry is
touched (safe in a Dask worker, a thread, or a notebook that uses another backend).

Data each figure expects (one category, one evaluation store per method and seed; see
``cutswap.pipeline.stages.evaluate`` and ``cutswap.pipeline.stages.ingest``)::

    scores   float (T,)         image scores, larger = more anomalous (Mahalanobis distance)
    labels   int   (T,)         1 = anomalous, 0 = normal
    image    uint8 (S, S, 3)    an ingested test image at the working size
    amap     float (S, S)       its anomaly map divided by the store's ``map_scale`` (so in [0, 1]), or None
    mask     bool  (S, S)       its ground truth, or None when the dataset has no mask for it
    log      float (L, C)       a train store's ``log``, columns named by its ``log_columns`` attr
                                (step, loss, acc_negative, acc_normal, lr, images_per_s)
    comparisons  DataFrame      ``cutswap.report.compare.COLUMNS`` (differences a - b as fractions)

Figures (``reports/<run>/figures/``):

* :func:`examples_figure` (``<category>-examples-<method>.png``): the most and least anomalous test image
  of each class (:func:`extremes`), each as image | heat-map overlay (true mask outlined) | predicted mask
  (only with a pixel threshold) | true mask, as anomalib's visualiser lays them out.
* :func:`score_histograms` (``<category>-scores.png``): normal against anomalous scores, one panel per
  method, with the image threshold when one is recorded.
* :func:`roc_figure` (``<category>-roc.png``): image-level ROC curves, one colour per method, one line per
  seed.
* :func:`training_figure` (``<category>-training.png``): loss and accuracy on negatives against the step.
* :func:`differences_figure` (``differences.png``): every question's paired mean difference with its
  interval and the individual (category, seed) differences, one panel per metric.
* :func:`score_profile` (``profile.png``): each method's score profile (:func:`profile_curve`), the
  fraction of its (category, seed) runs scoring above a threshold against the threshold, with every run
  marked in a strip below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Resolution of every figure: with panels of about 1.7 in a 64 px image is shown at about 2.7 x.
DPI = 100
#: One colour per method, in the order methods are first seen (tab10, colour-blind friendlier than jet).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
NORMAL_COLOUR, ANOMALOUS_COLOUR = "#1f77b4", "#d62728"


@dataclass(frozen=True)
class Pick:
    """One test image chosen for display: its position in the evaluation's arrays and why it was chosen.

    Attributes:
        position: index into ``scores`` / ``labels`` (and the evaluation's ``index`` and ``maps``).
        label: 0 normal, 1 anomalous.
        end: ``"most"`` or ``"least"`` anomalous within its class.
        score: its image score.
    """

    position: int
    label: int
    end: str
    score: float

    @property
    def description(self) -> str:
        """``anomalous, least anomalous``: the words a reader needs to judge the row."""
        return f"{'anomalous' if self.label else 'normal'}, {self.end} anomalous"


@dataclass(frozen=True)
class Example:
    """One row of :func:`examples_figure`: a test image with what the detector and the ground truth say.

    Attributes:
        image: uint8 (S, S, 3).
        amap: float (S, S) anomaly map on the same scale as the figure's ``vmax`` (the stored, scaled
            map), or None when the evaluation made no maps.
        mask: bool (S, S) ground truth, or None when the dataset has none for this image.
        title: the row's caption (why it was picked, its defect type and score), two short lines: it is
            centred over the image panel and must not run into the next column's heading.
    """

    image: np.ndarray
    amap: np.ndarray | None
    mask: np.ndarray | None
    title: str


def extremes(scores: np.ndarray, labels: np.ndarray, per_end: int = 1) -> list[Pick]:
    """The ``per_end`` most and least anomalous test images of each class, anomalous class first.

    Why these: the most anomalous anomalous image shows what the detector finds, the least anomalous one
    what it misses; the most anomalous normal image is its worst false alarm and the least anomalous
    normal image what "normal" looks like to it. An image is never shown twice (a class with fewer than
    ``2 * per_end`` images gives fewer picks); ties go to the earlier image; NaN scores are never picked.

    Returns:
        Picks ordered anomalous-most, anomalous-least, normal-most, normal-least (most extreme first).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    picks: list[Pick] = []
    for label in (1, 0):
        members = np.flatnonzero((labels == label) & np.isfinite(scores))
        if not len(members):
            continue
        # Stable sorts on the score keep earlier images first among equal scores, at both ends.
        ascending = members[np.argsort(scores[members], kind="stable")]
        descending = members[np.argsort(-scores[members], kind="stable")]
        most = list(descending[:per_end])
        least = [p for p in ascending[:per_end] if p not in most]
        picks += [Pick(int(p), label, "most", float(scores[p])) for p in most]
        picks += [Pick(int(p), label, "least", float(scores[p])) for p in least]
    return picks


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score threshold, from (0, 0) to (1, 1).

    Tied scores move both rates at once (a diagonal segment), so the area under these points is the
    AUROC of ``cutswap.score.metrics.image_auroc`` with ties counted as half. Empty arrays when a class is
    missing (no curve exists).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    keep = np.isfinite(scores)
    scores, labels = scores[keep], labels[keep]
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:  # undefined: no curve
        return np.empty(0), np.empty(0)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last position of each distinct score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def overlay(image: np.ndarray, amap: np.ndarray, vmax: float = 1.0) -> np.ndarray:
    """The image under its anomaly map: ``inferno`` from 0 to ``vmax``, opaque in proportion to the value.

    Low values leave the image visible (as ``cutswap predict`` draws its overlays), so a normal image
    reads as the picture itself with a faint tint, not as a uniformly coloured square.
    """
    from matplotlib import colormaps

    value = np.clip(np.asarray(amap, dtype=np.float32) / max(float(vmax), 1e-12), 0, 1)
    heat = colormaps["inferno"](value)[..., :3] * 255
    alpha = (0.15 + 0.7 * value)[..., None]
    return ((1 - alpha) * image.astype(np.float32) + alpha * heat).round().astype(np.uint8)


def _figure(width: float, height: float) -> Figure:
    """A figure with constrained layout: unlike ``tight_layout`` it keeps two-line panel titles clear of
    the row above when the panels are images with a fixed aspect ratio."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.get_layout_engine().set(h_pad=0.04, w_pad=0.03, hspace=0.02, wspace=0.02)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _blank(ax: Axes, text: str) -> None:
    ax.set_facecolor("#f2f2f2")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, color="#555", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def examples_figure(
    path: Path,
    examples: Sequence[Example],
    title: str,
    vmax: float = 1.0,
    map_threshold: float | None = None,
) -> Path:
    """Rows of test images with their heat map, predicted mask and true mask (anomalib's layout).

    Args:
        path: the PNG to write.
        examples: the rows, in display order (see :func:`extremes`).
        title: the figure's heading (category, method, seed, AUROC).
        vmax: the map value drawn at full heat; a scale shared by every row, so a normal image's map looks
            cool next to an anomalous one's (the stored maps are divided by the test maximum, which would
            leave all but the hottest image dark: the report passes what a normal image reaches).
        map_threshold: map value above which a pixel is predicted anomalous (same scale as the maps); the
            predicted-mask column is drawn only when there is one, since any threshold chosen here
            would be an invented operating point.
    """
    columns = ["image", "anomaly map\n(true mask outlined)"]
    if map_threshold is not None:
        columns.append(f"predicted mask\n(map > {map_threshold:.2f})")
    columns.append("true mask\n")
    rows = max(len(examples), 1)
    fig = _figure(1.5 * len(columns), 1.75 * rows + 0.4)
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for r, ex in enumerate(examples):
        ax = axes[r]
        ax[0].imshow(ex.image, interpolation="nearest")
        ax[0].set_title(ex.title, fontsize=7)
        if ex.amap is None:
            _blank(ax[1], "no anomaly map")
        else:
            ax[1].imshow(overlay(ex.image, ex.amap, vmax), interpolation="nearest")
            if ex.mask is not None and ex.mask.any():
                ax[1].contour(ex.mask.astype(float), levels=[0.5], colors="#00e5ff", linewidths=0.8)
        c = 2
        if map_threshold is not None:
            if ex.amap is None:
                _blank(ax[c], "no anomaly map")
            else:
                ax[c].imshow(ex.amap > map_threshold, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            c += 1
        if ex.mask is None:
            _blank(ax[c], "no mask in the dataset")
        else:
            ax[c].imshow(ex.mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if r == 0:
            for j in range(1, len(columns)):
                ax[j].set_title(columns[j], fontsize=7)
    if not examples:
        _blank(axes[0, 0], "no test images")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _colours(methods: Sequence[str]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(dict.fromkeys(methods))}


def score_histograms(
    path: Path,
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    thresholds: Mapping[str, float | None] | None = None,
    bins: int = 30,
) -> Path:
    """One panel per method: the scores of normal against anomalous test images.

    Args:
        path: the PNG to write.
        panels: panel title (method, seed, AUROC) -> (scores, labels) of one evaluation. One seed per
            method, because scores of two models are distances in two different embeddings and a
            pooled histogram would mix their scales.
        title: the figure's heading.
        thresholds: panel title -> the recorded image threshold, drawn as a dashed line.
        bins: bins per panel, shared by both classes so that their heights compare.
    """
    thresholds = thresholds or {}
    n = max(len(panels), 1)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = _figure(3.0 * cols, 2.3 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, (scores, labels)) in zip(axes.ravel(), panels.items(), strict=False):
        scores = np.asarray(scores, dtype=np.float64)
        labels = np.asarray(labels).astype(int)
        finite = np.isfinite(scores)
        if not finite.any():
            _blank(ax, "no scores")
            continue
        lo, hi = float(scores[finite].min()), float(scores[finite].max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
        for label, colour, word in ((0, NORMAL_COLOUR, "normal"), (1, ANOMALOUS_COLOUR, "anomalous")):
            values = scores[finite & (labels == label)]
            if len(values):
                # One filled outline per class, not a patch per bar: an order of magnitude faster to lay out.
                ax.hist(
                    values,
                    edges,
                    color=colour,
                    alpha=0.5,
                    histtype="stepfilled",
                    label=f"{word} ({len(values)})",
                )
        if name in thresholds and thresholds[name] is not None and np.isfinite(thresholds[name]):
            ax.axvline(thresholds[name], color="#333", linestyle="--", linewidth=1, label="threshold")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("image score", fontsize=7)
        ax.set_ylabel("test images", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    if not panels:
        _blank(axes[0, 0], "no evaluations")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def roc_figure(path: Path, curves: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], title: str) -> Path:
    """Image-level ROC curves: one colour per method, one thin line per seed.

    Args:
        path: the PNG to write.
        curves: method -> (scores, labels) of each of its evaluations (seeds).
        title: the figure's heading.
    """
    colours = _colours(list(curves))
    fig = _figure(4.6, 4.2)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1)
    for method, runs in curves.items():
        aurocs, lines = [], []
        for scores, labels in runs:
            fpr, tpr = roc_points(scores, labels)
            if not len(fpr):
                continue
            aurocs.append(float(np.trapezoid(tpr, fpr)))  # the AUROC, ties counted as half
            lines += ax.plot(fpr, tpr, color=colours[method], linewidth=1.2, alpha=0.8)
        if lines:  # one legend entry per method, with its mean AUROC over the seeds drawn
            seeds = f", {len(aurocs)} seeds" if len(aurocs) > 1 else ""
            lines[0].set_label(f"{method} ({100 * np.mean(aurocs):.1f}{seeds})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (normal images flagged)", fontsize=8)
    ax.set_ylabel("true-positive rate (anomalies found)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:  # matplotlib warns of a legend with nothing to list
        ax.legend(fontsize=7, loc="lower right", title="method (mean AUROC %)", title_fontsize=7)
    else:  # no curve: the test images lack a class (roc_points)
        note = "no curve: needs normal and anomalous test images"
        ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=8, color="#555", transform=ax.transAxes)
    return _save(fig, path)


def training_figure(
    path: Path, logs: Mapping[str, Sequence[np.ndarray]], columns: Sequence[str], title: str
) -> Path:
    """Loss and accuracy on negatives against the training step: one colour per method, a line per seed.

    Args:
        path: the PNG to write.
        logs: method -> the ``log`` array of each of its train stores (empty logs are skipped).
        columns: the logs' column names (a train store's ``log_columns``).
        title: the figure's heading.
    """
    col = {name: i for i, name in enumerate(columns)}
    colours = _colours(list(logs))
    fig = _figure(8.0, 2.9)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for method, arrays in logs.items():
        for i, log in enumerate(arrays):
            log = np.asarray(log, dtype=np.float64)
            if log.ndim != 2 or not len(log):
                continue
            style = {
                "color": colours[method],
                "linewidth": 1.2,
                "alpha": 0.85,
                "marker": "o",
                "markersize": 2.5,
            }
            label = method if i == 0 else None
            loss_ax.plot(log[:, col["step"]], log[:, col["loss"]], label=label, **style)
            acc_ax.plot(log[:, col["step"]], 100 * log[:, col["acc_negative"]], label=label, **style)
    loss_ax.set_ylabel("training loss", fontsize=8)
    acc_ax.set_ylabel("accuracy on negatives (%)", fontsize=8)
    acc_ax.set_ylim(-2, 102)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if loss_ax.get_lines():  # above the panels, where it hides no curve
        handles, labels = loss_ax.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def differences_figure(
    path: Path,
    comparisons: pd.DataFrame,
    pair_diffs: Mapping[tuple[str, str, str], np.ndarray] | None = None,
    confidence: float = 0.95,
    tie: float = 0.001,
) -> Path:
    """Each question's paired mean difference a - b (points) with its interval, one panel per metric.

    Why a plot beside the table: whether an interval crosses zero, and how the single (category, seed)
    differences spread around the mean, is seen at once. The grey band is the tie zone (``tie``).

    Args:
        path: the PNG to write.
        comparisons: rows of ``cutswap.report.compare.COLUMNS`` (fractions).
        pair_diffs: (a, b, metric) -> the individual paired differences (fractions), drawn as dots.
        confidence: the interval's coverage, for the axis label.
        tie: the tie tolerance (a fraction).
    """
    pair_diffs = pair_diffs or {}
    metrics = list(dict.fromkeys(comparisons["metric"]))
    questions = list(dict.fromkeys(zip(comparisons["a"], comparisons["b"], strict=True)))
    n = max(len(metrics), 1)
    fig = _figure(1.2 + 2.3 * n, 0.9 + 0.42 * max(len(questions), 1))
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    y_of = {q: len(questions) - 1 - i for i, q in enumerate(questions)}
    rng = np.random.default_rng(0)  # jitter of the dots only
    for ax, metric in zip(axes, metrics, strict=False):
        ax.axvspan(-100 * tie, 100 * tie, color="#ddd", zorder=0)
        ax.axvline(0, color="#666", linewidth=0.8, zorder=1)
        rows = comparisons[comparisons["metric"] == metric]
        for r in rows.itertuples(index=False):
            y = y_of[(r.a, r.b)]
            dots = np.asarray(pair_diffs.get((r.a, r.b, metric), []), dtype=np.float64) * 100
            if len(dots):
                ax.scatter(dots, y + rng.uniform(-0.18, 0.18, len(dots)), s=6, color="#999", zorder=2)
            mean = 100 * r.mean_diff
            if np.isfinite(r.ci_low) and np.isfinite(r.ci_high):
                lo, hi = 100 * r.ci_low, 100 * r.ci_high
                colour = "#2ca02c" if lo > tie * 100 else "#d62728" if hi < -tie * 100 else "#555"
                ax.errorbar(
                    mean, y, xerr=[[mean - lo], [hi - mean]], fmt="o", color=colour, capsize=3, zorder=3
                )
            else:
                ax.plot(mean, y, "o", color="#555", mfc="white", zorder=3)
        ax.set_title(metric, fontsize=8)
        ax.set_xlabel("a − b (points)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks([y_of[q] for q in questions], [f"{a} − {b}" for a, b in questions], fontsize=7)
    axes[0].set_ylim(-0.6, len(questions) - 0.4)
    fig.suptitle(f"Paired differences a − b: mean and {confidence * 100:g}% interval", fontsize=9)
    return _save(fig, path)


def profile_curve(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A score profile (rliable's performance profile, Agarwal et al. 2021): the fraction of runs scoring
    strictly above each threshold tau, as a step function of tau.

    Why a step function at the runs' own scores: the fraction only changes there, so these points are the
    whole curve, exact for any number of runs (one run included) and with no binning to choose. Tied runs
    drop the curve together, by their share. NaN and infinite scores are dropped (a run without a score
    is not a run that scored low).

    Returns:
        ``(taus, fractions)``: the distinct finite scores ascending, and the fraction of the finite runs
        scoring above each, the value of the curve from that tau up to the next (so ``fractions[-1]`` is
        0); the curve is 1 below ``taus[0]``. Empty arrays without a finite score.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    scores = np.sort(scores[np.isfinite(scores)])
    if not len(scores):
        return np.empty(0), np.empty(0)
    taus = np.unique(scores)
    above = len(scores) - np.searchsorted(scores, taus, side="right")
    return taus, above / len(scores)


def score_profile(path: Path, runs: Mapping[str, np.ndarray], metric: str, title: str) -> Path:
    """Each method's score profile (:func:`profile_curve`) in points, over a strip with every run marked.

    Why beside the tables: a mean hides how the runs spread, and one collapsed training (a run near
    AUROC 0.5 while the method's other seeds are at 0.95) pulls it down as much as many slightly worse
    ones do. Here the whole distribution of runs is seen: a collapsed run is an early drop of its
    method's curve on the left, and the strip shows it as a lone tick far from the others.

    Args:
        path: the PNG to write.
        runs: method -> its runs' scores on ``metric`` (fractions; one per (category, seed) evaluation),
            methods in the order they are coloured (:func:`_colours`: the same order as the other
            figures keeps a method's colour). NaN scores are dropped; a method left without a score is
            left out, and with none left at all the figure is a blank panel saying so.
        metric: the results column the scores are of (the x-axis label).
        title: the figure's heading.
    """
    colours = _colours(list(runs))
    kept = {m: _finite_points(s) for m, s in runs.items()}
    kept = {m: s for m, s in kept.items() if len(s)}
    if not kept:
        fig = _figure(5.0, 2.6)
        ax = fig.subplots()
        _blank(ax, f"no finite {metric} scores")
        ax.set_title(title, fontsize=9)
        return _save(fig, path)
    fig = _figure(5.6, 3.3 + 0.2 * len(kept))
    curve_ax, strip_ax = fig.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3.0, 0.5 + 0.3 * len(kept)]}
    )
    lo = min(float(s.min()) for s in kept.values())
    hi = max(float(s.max()) for s in kept.values())
    pad = max(1.0, 0.04 * (hi - lo))
    left, right = lo - pad, hi + pad
    rng = np.random.default_rng(0)  # the strip's jitter only: the same inputs draw the same picture
    for row, (method, points) in enumerate(kept.items()):
        taus, fractions = profile_curve(points)
        curve_ax.step(
            np.r_[left, taus, right],
            np.r_[1.0, fractions, 0.0],
            where="post",
            color=colours[method],
            linewidth=1.5,
            alpha=0.85,
            label=f"{method} ({len(points)} run{'s' if len(points) != 1 else ''})",
        )
        # Jittered up and down a little, and see-through, so that tied runs do not hide each other.
        jitter = rng.uniform(-0.2, 0.2, len(points))
        strip_ax.plot(points, jitter - row, "|", color=colours[method], markersize=7, mew=1.3, alpha=0.7)
    curve_ax.set_xlim(left, right)
    curve_ax.set_ylim(-0.02, 1.04)
    curve_ax.set_ylabel("fraction of runs scoring > τ", fontsize=8)
    curve_ax.grid(alpha=0.3)
    curve_ax.legend(fontsize=7, loc="lower left", frameon=False)
    curve_ax.set_title(title, fontsize=9)
    strip_ax.set_yticks([-r for r in range(len(kept))], list(kept), fontsize=7)
    strip_ax.set_ylim(-len(kept) + 0.5, 0.5)
    strip_ax.set_xlabel(f"τ: {metric} (points)", fontsize=8)
    strip_ax.grid(axis="x", alpha=0.3)
    for ax in (curve_ax, strip_ax):
        ax.tick_params(labelsize=7)
    return _save(fig, path)


def _finite_points(scores: np.ndarray) -> np.ndarray:
    """The finite scores in points (the metric times 100), in their given order."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    return 100 * scores[np.isfinite(scores)]


def overlay_figure(path, images, maps, tops, negatives: dict[str, np.ndarray], levels: list[str]) -> None:
    """Per category: rows of images with each level's saliency and top-cluster outline, then negatives."""
    n_img = len(images)
    cols = max(len(levels) + 1, max((len(v) for v in negatives.values()), default=0))
    rows = n_img + len(negatives)
    fig = _figure(2 * cols, 2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
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
    _save(fig, Path(path))
