"""The run's score profile (``figures.profile_curve``, ``figures.score_profile``, ``gallery.profile_figures``,
``captions.profile_ref``): the curve is the fraction of runs above each threshold, the figure is a real
PNG, and the gallery draws the run's own rows on image AUROC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cutswap.report import captions, figures, gallery
from tests.support.images import assert_png as _png


def _value(taus: np.ndarray, fractions: np.ndarray, tau: float) -> float:
    """The step curve at ``tau``: 1 below the first score, else the value from the last score <= tau."""
    i = np.searchsorted(taus, tau, side="right") - 1
    return 1.0 if i < 0 else float(fractions[i])


def test_profile_curve_by_hand_with_ties_a_collapsed_run_and_nan():
    # Five seeds of one method: one collapsed training (0.52), two tied at 0.95, a NaN (no score) dropped.
    scores = np.array([0.95, 0.52, 0.95, 0.90, np.nan, 0.97])
    taus, fractions = figures.profile_curve(scores)
    np.testing.assert_allclose(taus, [0.52, 0.90, 0.95, 0.97])
    # Above 0.52: 4 of 5 finite runs; above 0.90: 3; above 0.95: 1 (the tie drops by two); above 0.97: 0.
    np.testing.assert_allclose(fractions, [4 / 5, 3 / 5, 1 / 5, 0.0])
    assert _value(taus, fractions, 0.50) == 1.0  # every run is above a threshold below them all
    assert _value(taus, fractions, 0.52) == pytest.approx(0.8)  # strictly above: the 0.52 run is not
    assert _value(taus, fractions, 0.70) == pytest.approx(0.8)  # the collapsed run's tail on the left
    assert _value(taus, fractions, 0.949) == pytest.approx(0.6)
    assert _value(taus, fractions, 0.96) == pytest.approx(0.2)
    assert _value(taus, fractions, 0.99) == 0.0


def test_profile_curve_one_run_and_no_finite_run():
    taus, fractions = figures.profile_curve(np.array([0.8]))
    assert taus.tolist() == [0.8] and fractions.tolist() == [0.0]
    for empty in (np.array([]), np.array([np.nan, np.inf])):
        taus, fractions = figures.profile_curve(empty)
        assert taus.size == 0 and fractions.size == 0


def test_profile_curve_fractions_match_a_direct_count():
    rng = np.random.default_rng(0)
    scores = np.round(rng.uniform(0.4, 1.0, 40), 2)  # rounded: ties
    taus, fractions = figures.profile_curve(scores)
    assert np.all(np.diff(taus) > 0) and np.all(np.diff(fractions) < 0)
    for tau in np.linspace(0.3, 1.1, 81):
        assert _value(taus, fractions, tau) == pytest.approx(np.mean(scores > tau))


def test_score_profile_writes_a_png(tmp_path):
    runs = {
        "cutswap": np.array([0.95, 0.96, 0.52, 0.97, 0.94, np.nan]),
        "cutpaste": np.array([0.91]),  # one run
        "empty": np.array([np.nan]),  # nothing left: left out
        "random-swap": np.array([0.88, 0.90, 0.90]),
    }
    path = figures.score_profile(tmp_path / "figures" / "profile.png", runs, "image_AUROC", "profile")
    assert path == tmp_path / "figures" / "profile.png"
    width, height = _png(path)
    assert 400 < width < 1000 and 300 < height < 800


def test_score_profile_without_finite_scores_is_a_blank_panel(tmp_path):
    for runs in ({}, {"cutswap": np.array([np.nan, np.nan])}):
        path = figures.score_profile(tmp_path / "blank.png", runs, "image_AUROC", "profile")
        width, height = _png(path, min_kb=1)
        assert width > 200 and height > 150


def _results() -> pd.DataFrame:
    """Two categories (one with an extra seed), two own methods and one variant row set."""
    rows = []
    for category, seeds in (("bottle", (0, 1, 2)), ("cable", (0, 1))):
        for seed in seeds:
            for method, base, auroc in (
                ("cutswap", "cutswap", 0.95 if (category, seed) != ("cable", 1) else 0.51),
                ("cutpaste", "cutpaste", 0.9),
                ("cutswap-gradcam", "cutswap", 0.1),  # a variant: not in the profile
            ):
                rows.append(
                    {
                        "category": category,
                        "method": method,
                        "base_method": base,
                        "seed": seed,
                        "image_AUROC": auroc,
                        "pixel_AUROC": 0.8,
                    }
                )
    return pd.DataFrame(rows)


def test_profile_figures_draws_image_auroc_of_the_own_rows(tmp_path, monkeypatch):
    drawn = {}

    def record(path, runs, metric, title):
        drawn.update(path=path, runs=runs, metric=metric)
        return path

    monkeypatch.setattr(gallery.plots, "score_profile", record)
    refs = gallery.profile_figures(tmp_path, _results())
    assert drawn["path"] == tmp_path / "figures" / "profile.png"
    assert drawn["metric"] == "image_AUROC"
    assert list(drawn["runs"]) == ["cutswap", "cutpaste"]  # order of appearance, no variant
    np.testing.assert_allclose(drawn["runs"]["cutswap"], [0.95, 0.95, 0.95, 0.95, 0.51])
    np.testing.assert_allclose(drawn["runs"]["cutpaste"], [0.9] * 5)
    assert [r.path for r in refs] == ["figures/profile.png"]
    assert refs[0].section == "" and "image_AUROC" in refs[0].caption


def test_profile_figures_writes_the_png(tmp_path):
    refs = gallery.profile_figures(tmp_path, _results())
    assert refs == [captions.profile_ref("profile.png", "image_AUROC")]
    _png(tmp_path / "figures" / "profile.png")


def test_profile_figures_falls_back_to_the_first_finite_metric(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(
        gallery.plots, "score_profile", lambda path, runs, metric, title: drawn.update(m=metric)
    )
    results = _results()
    results["image_AUROC"] = np.nan
    refs = gallery.profile_figures(tmp_path, results)
    assert drawn["m"] == "pixel_AUROC" and "pixel_AUROC" in refs[0].caption
    # Only the variant has a finite image AUROC: the own rows have none, so the fallback still applies.
    results.loc[results["method"] == "cutswap-gradcam", "image_AUROC"] = 0.7
    gallery.profile_figures(tmp_path, results)
    assert drawn["m"] == "pixel_AUROC"


def test_profile_figures_without_finite_scores_draws_nothing(tmp_path):
    results = _results()
    results[["image_AUROC", "pixel_AUROC"]] = np.nan
    assert gallery.profile_figures(tmp_path, results) == []
    assert not (tmp_path / "figures" / "profile.png").exists()
    inf = _results().assign(image_AUROC=np.inf).drop(columns="pixel_AUROC")
    assert gallery.profile_figures(tmp_path, inf) == []


def test_profile_figures_without_base_method_keeps_every_row(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(
        gallery.plots, "score_profile", lambda path, runs, metric, title: drawn.update(r=runs)
    )
    gallery.profile_figures(tmp_path, _results().drop(columns="base_method"))
    assert list(drawn["r"]) == ["cutswap", "cutpaste", "cutswap-gradcam"]


def test_profile_caption_says_how_it_was_obtained_and_what_it_is_not():
    ref = captions.profile_ref("profile.png", "image_AUROC")
    assert ref.path == "figures/profile.png" and ref.title == "Score profile" and ref.section == ""
    text = ref.caption
    for words in (
        "(category, seed) evaluation",
        "not weighted",
        "more seeds counts more",
        "drops early on the left",
        "collapsed",
        "descriptive",
        "intervals",
        "image_AUROC",
    ):
        assert words in text, words
