"""The words under the report's pictures: each figure's title and the caption that says how to read it.

Each function returns the :class:`cutswap.report.html.FigureRef` of one figure file, given its name in
``reports/<run>/figures/`` and, for a category's figures, the category (its section of the page). The
captions are kept apart from the drawing (``cutswap.report.gallery``) because they are read on their own:
a caption must state what the picture's scales and colours mean for exactly the evaluation drawn (its
method, seed, AUROC and the thresholds its store records), and a test can check that without a PNG.
"""

from __future__ import annotations

from cutswap.method.registry import UNTRAINED_METHODS
from cutswap.report.html import ANSWERS, FigureRef
from cutswap.report.picking import Evaluation


def evaluation_label(ev: Evaluation) -> str:
    """``cutswap, seed 1 (image AUROC 93.5)``: which model a panel shows, and how good it is."""
    return f"{ev.method}, seed {ev.seed} (image AUROC {100 * ev.auroc:.1f})"


def _scale_words(ev: Evaluation) -> str:
    """Where the heat of the examples figure is full (``cutswap.report.examples`` says why)."""
    if ev.pixel_threshold is not None:
        return (
            "the heat is full at the largest map value of the held-out normal training images; the predicted "
            "mask is every pixel above it"
        )
    return (
        "the heat is full at the largest map value over the normal test images (display only; the "
        "store records no pixel threshold, so no predicted mask is drawn)"
    )


def examples_ref(name: str, category: str, ev: Evaluation) -> FigureRef:
    """The examples figure of ``ev`` (``<category>-examples-<method>.png``), laid out in one row with the
    other shown methods' so they can be compared image by image."""
    untrained = " (no training)" if ev.method in UNTRAINED_METHODS else ""
    flagged = ""
    if ev.score_threshold is not None:
        flagged = f"; `flagged`: score above the recorded threshold {ev.score_threshold:.3g}"
    return FigureRef(
        f"figures/{name}",
        f"Test images: {ev.method}{untrained}",
        f"The most and least anomalous test image of each class for {evaluation_label(ev)}, the seed with "
        "the median AUROC; the anomaly map over the image (inferno, opaque in proportion to the value; "
        f"{_scale_words(ev)}) with the true mask outlined in cyan, and the true mask{flagged}.",
        category,
        row="examples",
    )


def scores_ref(name: str, category: str) -> FigureRef:
    """The score distributions (``<category>-scores.png``)."""
    return FigureRef(
        f"figures/{name}",
        "Score distributions",
        "Image scores of the normal (blue) and anomalous (red) test images, one panel per method for "
        "its median-AUROC seed (scores of different models are not on one scale); little overlap means "
        "a high AUROC. Dashed: the recorded image threshold, where there is one.",
        category,
    )


def roc_ref(name: str, category: str) -> FigureRef:
    """The image-level ROC curves (``<category>-roc.png``)."""
    return FigureRef(
        f"figures/{name}",
        "ROC curves",
        "True- against false-positive rate as the image threshold sweeps the scores, one line per seed; "
        "the legend gives each method's mean image AUROC (the area under its curves).",
        category,
    )


def training_ref(name: str, category: str) -> FigureRef:
    """The training curves (``<category>-training.png``)."""
    return FigureRef(
        f"figures/{name}",
        "Training curves",
        "Loss and accuracy on the negatives (the synthetic anomalies each method trains on) at "
        "every logged step; methods that train nothing have no curve.",
        category,
    )


def negatives_ref(name: str, category: str) -> FigureRef:
    """The saliency maps and the negatives each method trains on (``<category>.png``)."""
    return FigureRef(
        f"figures/{name}",
        "Saliency and negatives",
        "Training images with each saliency level and its top cluster outlined, then the "
        "negatives each method trains on.",
        category,
    )


def differences_ref(name: str) -> FigureRef:
    """The run-level paired differences (``differences.png``)."""
    return FigureRef(
        f"figures/{name}",
        "Paired differences",
        "Each question's mean difference a − b in points with its t interval (the Comparisons "
        "table), one panel per metric; grey dots are the single (category, seed) differences, the grey "
        "band the tie zone. An interval clear of zero is coloured (green: a better, red: b better).",
    )


def answers_ref(name: str, metric: str) -> FigureRef:
    """The paired differences of the run's questions on their main metric, beside the answers."""
    return FigureRef(
        f"figures/{name}",
        f"The answers on {metric}",
        "Each question's mean difference a − b in points with its interval on these categories; grey dots "
        "the single differences, the grey band the tie zone; green: a better, red: b better, grey: the "
        "interval holds zero. Every metric: the Paired differences figure below.",
        section=ANSWERS,
    )


def profile_ref(name: str, metric: str) -> FigureRef:
    """The run-level score profile on ``metric`` (``profile.png``)."""
    return FigureRef(
        f"figures/{name}",
        "Score profile",
        f"For each method, the fraction of its runs whose {metric} is above τ, against τ in points "
        "(a performance profile, Agarwal et al. 2021); a run is one (category, seed) evaluation, and "
        "every run of the method's own rows (no variants) is pooled with the categories not weighted, so "
        "a category with more seeds counts more. The legend gives each method's number of runs; the "
        "strip below marks every run at its score. A curve that drops early on the left means some runs "
        "scored far below the method's others (collapsed or poor trainings). The picture is descriptive: "
        "the verdicts rest on the comparisons' paired intervals.",
    )
