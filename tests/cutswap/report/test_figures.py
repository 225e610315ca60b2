"""The report's pictures (``cutswap.report.figures``): the right images are chosen, every file is a small PNG,
and the report stage draws them from real stores (ingest, train, evaluate) of a hand-made category."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cutswap.report import figures
from cutswap.report.compare import COLUMNS
from cutswap.report.html import FigureRef, figures_html
from cutswap.score.metrics import image_auroc
from tests.support.images import assert_png as _png


def test_extremes_picks_the_most_and_least_anomalous_of_each_class():
    #                 0    1    2    3    4    5     6       7    8
    scores = np.array([3.0, 5.0, 3.0, 5.0, 9.0, 0.5, np.nan, 7.0, 0.5])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    picks = figures.extremes(scores, labels)
    # Anomalous first; ties go to the earlier image (1 before 3 at the top, 0 before 2 and 5 before 8 at
    # the bottom); the NaN score (6) is never picked.
    assert [(p.position, p.label, p.end) for p in picks] == [
        (4, 1, "most"), (5, 1, "least"), (1, 0, "most"), (0, 0, "least")
    ]  # fmt: skip
    assert picks[0].score == 9.0 and picks[0].description == "anomalous, most anomalous"
    two = figures.extremes(scores, labels, per_end=2)
    assert [p.position for p in two] == [4, 7, 5, 8, 1, 3, 0, 2]


def test_extremes_never_shows_an_image_twice_and_skips_a_missing_class():
    picks = figures.extremes(np.array([1.0, 2.0, 4.0]), np.array([0, 0, 1]))
    assert [(p.position, p.end) for p in picks] == [(2, "most"), (1, "most"), (0, "least")]
    assert figures.extremes(np.array([1.0, 2.0]), np.array([0, 0]), per_end=3)[0].label == 0
    assert figures.extremes(np.array([]), np.array([])) == []


def test_roc_points_integrate_to_the_auroc_with_ties():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(40), np.ones(25)].astype(int)
    scores = np.round(rng.normal(labels * 1.0, 1.0), 1)  # rounded: many ties across the classes
    fpr, tpr = figures.roc_points(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(image_auroc(scores, labels))
    fpr, tpr = figures.roc_points(np.array([1.0, 2.0]), np.array([0, 0]))
    assert len(fpr) == len(tpr) == 0  # one class only: no curve


def test_overlay_keeps_a_cold_image_visible_and_saturates_at_vmax():
    image = np.full((4, 4, 3), 200, np.uint8)
    cold = figures.overlay(image, np.zeros((4, 4)), vmax=0.5)
    assert np.all(np.abs(cold.astype(int) - 200) < 0.2 * 200)  # 85 % image, 15 % the colour map's black
    hot = figures.overlay(image, np.ones((4, 4)), vmax=0.5)
    assert hot.mean() > cold.mean()  # inferno's top is pale yellow, blended at 85 %


def _examples(n: int = 4, size: int = 64) -> list[figures.Example]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        amap = rng.random((size, size)).astype(np.float32) * 0.3
        mask = np.zeros((size, size), bool)
        if i < 2:
            mask[20:40, 10:30] = True
            amap[mask] += 0.6
        out.append(
            figures.Example(image, None if i == 3 else amap, None if i == 1 else mask, f"row {i}\nscore 1")
        )
    return out


def test_examples_figure_draws_a_predicted_mask_only_with_a_threshold(tmp_path):
    without = _png(figures.examples_figure(tmp_path / "a.png", _examples(), "bottle: cutswap"))
    with_threshold = _png(
        figures.examples_figure(tmp_path / "b.png", _examples(), "bottle: cutswap", 0.7, map_threshold=0.7)
    )
    assert with_threshold[0] > without[0]  # one more column
    assert with_threshold[1] == without[1]  # same rows
    assert without[1] < 1000 and with_threshold[0] < 800  # small enough to show whole on a page
    _png(figures.examples_figure(tmp_path / "none.png", [], "empty"), max_kb=50, min_kb=1)


def test_distribution_roc_training_and_difference_figures_are_small_pngs(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.r_[np.zeros(100), np.ones(100)].astype(int)
    runs = {
        m: [(rng.normal(labels * d, 1.0), labels) for _ in range(3)]
        for m, d in (("cutswap", 2), ("cutpaste", 1))
    }
    panels = {f"{m}, seed 0": runs[m][0] for m in runs}
    _png(figures.score_histograms(tmp_path / "s.png", panels, "bottle", {"cutswap, seed 0": 1.0}))
    _png(figures.roc_figure(tmp_path / "r.png", runs, "bottle"))
    columns = ["step", "loss", "acc_negative", "acc_normal", "lr", "images_per_s"]
    steps = np.arange(0, 60, 20.0)
    log = np.c_[steps, 1 / (1 + steps), steps / 60, np.ones(3), np.full(3, 0.03), np.full(3, 50.0)]
    _png(
        figures.training_figure(
            tmp_path / "t.png", {"cutswap": [log, log * 0.9], "x": [np.empty((0, 6))]}, columns, "bottle"
        )
    )
    rows = [
        ("cutswap", "random-swap", "image_AUROC", 6, 0.02, 0.01, 0.03, 5, 0, 1, "cutswap better"),
        ("cutswap", "cutpaste", "image_AUROC", 6, -0.01, -0.04, 0.02, 2, 1, 3, "inconclusive"),
        ("cutswap", "cutpaste", "pixel_AUROC", 1, 0.01, np.nan, np.nan, 1, 0, 0, "not answered"),
    ]  # fmt: skip
    columns = ["a", "b", "metric", "n_pairs", "mean_diff", "ci_low", "ci_high", "wins", "ties", "losses"]
    comparisons = pd.DataFrame(rows, columns=[*columns, "verdict"])
    assert set(comparisons.columns) <= set(COLUMNS)
    diffs = {("cutswap", "random-swap", "image_AUROC"): np.array([0.01, 0.02, 0.03, 0.02, 0.025, -0.01])}
    _png(figures.differences_figure(tmp_path / "d.png", comparisons, diffs))


@pytest.mark.parametrize(
    "curves",
    [{"cutswap": [(np.array([0.1, 0.4, 0.2]), np.array([0, 0, 0]))]}, {}],
    ids=["test images without anomalies", "no evaluations"],
)
def test_a_roc_figure_without_curves_says_so_without_an_empty_legend_warning(tmp_path, curves):
    """matplotlib warns "No artists with labels found to put in legend" when asked for a legend of
    nothing, and the run's console showed it (Python's warnings go there once)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _png(figures.roc_figure(tmp_path / "r.png", curves, "bottle"), min_kb=1)


def test_figures_html_groups_sections_and_rows():
    refs = [
        FigureRef("figures/differences.png", "Paired differences"),
        FigureRef("figures/b-examples-cutswap.png", "Test images: cutswap", "x", "b", row="examples"),
        FigureRef("figures/b-examples-imagenet-gde.png", "Test images: imagenet-gde", "y", "b",
                  row="examples"),
        FigureRef("figures/b-roc.png", "ROC curves", "", "b"),
        "figures/a.png",
    ]  # fmt: skip
    page = figures_html(refs, ["a", "b"])
    assert page.index('id="figures-run"') < page.index('id="figures-a"') < page.index('id="figures-b"')
    row = page[page.index('<div class="figrow">') :]
    assert (
        row.index("fig-b-examples-cutswap") < row.index("fig-b-examples-imagenet-gde") < row.index("</div>")
    )
    assert '<img src="figures/a.png"' in page and 'id="fig-b-roc"' in page
    assert figures_html([]) == ""


# --- the report stage on real stores -------------------------------------------------------------------


@pytest.fixture
def category(tmp_path):
    """A hand-made category: 6 test images (3 normal, 3 anomalous), two methods' evaluate stores (one
    without maps) and their train stores (one with a log, one untrained with an empty log)."""
    from cutswap.pipeline.results import CategoryRefs, Evaluated
    from cutswap.pipeline.stores import build_store, write_array

    root = tmp_path / "storage"
    rng = np.random.default_rng(3)
    n_train, n_test, size = 4, 6, 32
    images = rng.integers(0, 255, (n_train + n_test, size, size, 3), dtype=np.uint8)
    masks = np.zeros(images.shape[:3], bool)
    masks[n_train + 3 :, 8:20, 8:20] = True
    labels = np.array([0, 0, 0, 1, 1, 1], np.uint8)
    rows = [
        {"split": "train", "label": 0, "defect_type": "good", "image_path": f"t{i}.png", "mask_path": None}
        for i in range(n_train)
    ]
    rows += [{"split": "test", "label": int(y), "defect_type": "crack" if y else "good",
              "image_path": f"s{i}.png", "mask_path": f"m{i}.png" if y else None}
             for i, y in enumerate(labels)]  # fmt: skip

    def ingest_write(group):
        write_array(group, "images", images)
        write_array(group, "masks", masks)
        group.attrs["samples"] = rows

    ingest = build_store(root, "ingest", "bottle", {}, {}, ingest_write)[0]
    columns = ["step", "loss", "acc_negative", "acc_normal", "lr", "images_per_s"]
    evaluations = []
    for method, seed, log_rows, with_maps, scores in (
        ("cutswap", 0, 3, True, [0.1, 0.9, 0.5, 3.0, 0.7, 2.0]),
        ("imagenet-gde", 0, 0, False, [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]),
    ):
        log = np.c_[np.arange(log_rows) * 10.0, np.linspace(1, 0.2, log_rows), np.linspace(0.5, 1, log_rows),
                    np.ones(log_rows), np.full(log_rows, 0.03), np.full(log_rows, 9.0)]  # fmt: skip

        def train_write(group, log=log):
            write_array(
                group, "log", log.reshape(-1, 6), per_chunk=max(len(log), 1), per_shard=max(len(log), 1)
            )

        train = build_store(root, "train", f"bottle-{method}", {"m": method}, {"ingest": ingest}, train_write,
                            extra_attrs={"log_columns": columns})[0]  # fmt: skip

        def eval_write(group, scores=scores, with_maps=with_maps):
            scores = np.asarray(scores)
            write_array(group, "scores", scores, per_chunk=6, per_shard=6)
            write_array(group, "labels", labels, per_chunk=6, per_shard=6)
            write_array(group, "index", np.arange(n_train, n_train + n_test), per_chunk=6, per_shard=6)
            if with_maps:
                write_array(group, "maps", rng.random((n_test, size, size)).astype(np.float16))
            group.attrs.update(
                {"metrics": {"image_AUROC": image_auroc(scores, labels)}, "map_scale": 2.0,
                 **({"holdout_map_max": 1.0, "threshold": {"value": 1.0}} if with_maps else {})}
            )  # fmt: skip

        evaluations.append(
            build_store(
                root,
                "evaluate",
                f"bottle-{method}",
                {},
                {"ingest": ingest, "train": train},
                eval_write,
                extra_attrs={"method": method, "seed": seed},
            )[0]  # fmt: skip
        )
    named = [Evaluated(ref.name.split("-", 1)[1], ref, ingest, ingest, ingest) for ref in evaluations]
    return CategoryRefs(ingest, ingest, ingest, ingest, named)


def test_report_stage_draws_every_category_figure_from_the_stores(category, tmp_path):
    from cutswap.pipeline.report_inputs import read_category_figures
    from cutswap.report.gallery import category_figures
    from cutswap.report.picking import best_method, shown_methods

    results = pd.DataFrame(
        {"category": "bottle", "method": ["cutswap", "imagenet-gde"], "seed": 0, "image_AUROC": [0.9, 1.0]}
    )
    assert best_method(results) == "imagenet-gde"  # highest mean image AUROC
    folder = tmp_path / "run"
    assert best_method(results, trained=True) == "cutswap"
    # The baseline is the best: the best trained method is shown beside it.
    assert shown_methods(results) == ["cutswap", "imagenet-gde"]
    refs = category_figures(folder, "bottle", read_category_figures(category, ["cutswap", "imagenet-gde"]))
    names = [Path(r.path).name for r in refs]
    assert names == [
        "bottle-examples-cutswap.png",
        "bottle-examples-imagenet-gde.png",
        "bottle-scores.png",
        "bottle-roc.png",
        "bottle-training.png",  # cutswap's log only: the untrained method's is empty
    ]
    for ref in refs:
        _png(folder / ref.path)
        assert ref.section == "bottle" and ref.caption
    # cutswap's store records a pixel threshold (holdout_map_max): its examples get a predicted-mask column.
    (w_thr, h), (w_none, h2) = (_png(folder / refs[i].path) for i in (0, 1))
    assert w_thr > w_none and h == h2
    assert "predicted mask is every pixel above it" in refs[0].caption and "flagged" in refs[0].caption
    assert "no predicted mask" in refs[1].caption
