"""The loaded detector (``cutswap.score.detector``): it scores what the evaluate stage scored, and its
threshold comes from normal calibration images only (validation images, else held-out training images), with
the false-positive rate its order statistic claims, and a test-set check whose law is
checked by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_score, recall_score

from cutswap.errors import SettingsError, StoreError
from cutswap.pipeline.readers import load_detector, samples, train_indices
from cutswap.pipeline.stages.evaluate import evaluate_run
from cutswap.pipeline.stores import StoreRef, build_store, open_store, write_array
from cutswap.score.density import GaussianDensity
from cutswap.score.detector import (
    calibration_split,
    choose_threshold,
    operating_point,
    operating_point_check,
    threshold_split,
)
from cutswap.score.localization import embed_images as embed

METHODS = ("cutpaste", "imagenet-gde", "patchcore")


@pytest.mark.parametrize("method", METHODS)
def test_loaded_detector_scores_what_the_evaluate_stage_stored(tiny_run, method):
    ref = tiny_run.evaluations[method]
    group = open_store(ref)
    images = open_store(tiny_run.ingest)["images"][:][group["index"][:]]
    detector = load_detector(ref)
    scores, maps = detector.score(images)
    np.testing.assert_allclose(scores, group["scores"][:], rtol=1e-12)
    # The stage stores maps / map_scale in float16: half a float16 step of values in [0, 1] at most.
    stored = group["maps"][:].astype(np.float64) * group.attrs["map_scale"]
    assert maps.shape == stored.shape
    np.testing.assert_allclose(maps, stored, rtol=0, atol=2**-11 * group.attrs["map_scale"])
    assert detector.provenance["method"] == method and detector.provenance["evaluate_key"] == ref.key
    assert detector.threshold == group.attrs["threshold"]


def test_threshold_comes_from_the_normal_validation_images_only(tiny_run):
    """The tiny run's textures have validation/good: the threshold is chosen on those images, and every
    training image enters the density."""
    ref = tiny_run.evaluations["cutpaste"]
    group = open_store(ref)
    ingest = open_store(tiny_run.ingest)
    images, table = ingest["images"][:], samples(ingest)
    fit, held = train_indices(ingest), group["holdout_index"][:]
    validation = np.flatnonzero((table["split"] == "val").to_numpy())
    assert len(validation) and np.array_equal(held, validation)
    assert (group.attrs["n_train"], group.attrs["n_holdout"]) == (len(fit), len(held))
    assert (table["label"].to_numpy()[held] == 0).all()
    assert group.attrs["threshold"]["source"] == "validation"

    detector = load_detector(ref)
    # The stored density is the one of the training images: the calibration images never entered it.
    refit = GaussianDensity.fit(embed(detector.model, images[fit], 64, torch.device("cpu")))
    np.testing.assert_allclose(detector.density.mean, refit.mean, rtol=1e-12)
    np.testing.assert_allclose(detector.density.precision, refit.precision, rtol=1e-9)
    holdout = detector.image_scores(images[held])
    np.testing.assert_allclose(group["holdout_scores"][:], holdout, rtol=1e-12)

    info = group.attrs["threshold"]
    assert info["value"] in holdout.tolist() and info["n_holdout"] == len(held)
    assert info["value"] == choose_threshold(holdout, 0.01)["value"]
    scores, labels = group["scores"][:], group["labels"][:]
    flagged = scores > info["value"]
    with np.errstate(all="ignore"):
        expected = {
            "precision": precision_score(labels, flagged, zero_division=np.nan),
            "recall": recall_score(labels, flagged, zero_division=np.nan),
            "fpr": flagged[labels == 0].mean(),
        }
    for name, value in expected.items():
        assert info["test"][name] == pytest.approx(value, nan_ok=True)


def test_a_test_set_without_anomalies_still_gets_the_same_threshold(tiny_run, tmp_path):
    """The threshold cannot depend on test labels: dropping every anomalous test image changes nothing."""
    source = open_store(tiny_run.ingest)
    table = samples(source)
    keep = np.flatnonzero((table["label"] == 0).to_numpy())
    assert (table["split"].to_numpy()[keep] == "test").any()

    def write(group):
        write_array(group, "images", source["images"][:][keep])
        write_array(group, "masks", source["masks"][:][keep])
        group.attrs["samples"] = list(np.asarray(source.attrs["samples"], dtype=object)[keep])

    normal_only, _ = build_store(tmp_path, "ingest", "brick", {"normal_only": True}, {}, write)
    original = open_store(tiny_run.evaluations["cutpaste"])
    train = StoreRef.recorded(original.attrs["inputs"]["train"], tiny_run.evaluations["cutpaste"].root)
    settings = tiny_run.settings.model_copy(update={"storage_root": tmp_path})
    group = open_store(evaluate_run(settings, normal_only, train)[0])
    assert not group["labels"][:].any()
    info = group.attrs["threshold"]
    assert math.isfinite(info["value"]) and info["value"] == original.attrs["threshold"]["value"]
    assert math.isnan(info["test"]["recall"]) and 0 <= info["test"]["fpr"] <= 1
    assert math.isnan(group.attrs["metrics"]["image_AUROC"])


@pytest.mark.parametrize(("n", "fpr"), [(50, 0.1), (19, 0.01)])
def test_threshold_false_positive_rate_is_what_it_claims(n, fpr):
    """On exchangeable normal scores, a new normal score exceeds the threshold at ``expected_fpr``, and
    that is at most the target when ``n`` resolves it (n=19 cannot resolve 1 %: the maximum is used)."""
    rng = np.random.default_rng(0)
    trials = 20000
    draws = rng.normal(size=(trials, n + 1))
    infos = [choose_threshold(row[:n], fpr) for row in draws[:200]]
    assert all(i["resolved"] == (math.ceil((1 - fpr) * (n + 1)) <= n) for i in infos)
    expected = infos[0]["expected_fpr"]
    rank = infos[0]["rank"]
    thresholds = np.sort(draws[:, :n], axis=1)[:, rank - 1]
    assert all(i["value"] == t for i, t in zip(infos, thresholds, strict=False))
    rate = float(np.mean(draws[:, n] > thresholds))
    assert rate == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / trials))
    if infos[0]["resolved"]:
        assert expected <= fpr
    else:
        assert infos[0]["value"] == draws[0, :n].max() and expected > fpr


def test_threshold_split_is_fixed_disjoint_and_checked():
    indices = np.arange(100, 130)
    fit, held = threshold_split(indices, 0.1)
    again = threshold_split(indices, 0.1)
    assert np.array_equal(fit, again[0]) and np.array_equal(held, again[1])
    assert len(held) == 3 and not np.intersect1d(fit, held).size
    assert sorted([*fit, *held]) == indices.tolist()
    assert not (np.diff(held) == 1).all(), "a permutation, not the first or last images"
    fit, held = threshold_split(indices, 0.0)
    assert len(held) == 0 and math.isnan(choose_threshold(np.zeros(0), 0.01)["value"])
    with pytest.raises(SettingsError, match="evaluate.threshold_holdout"):
        threshold_split(np.arange(3), 0.5)


def test_operating_point_is_nan_where_undefined():
    point = operating_point(np.array([0.1, 0.2]), np.array([0, 0]), 0.5)
    assert math.isnan(point["precision"]) and math.isnan(point["recall"]) and point["fpr"] == 0
    # Flagged normal images without any anomaly: a precision of 0 would mean nothing, so it is n/a.
    point = operating_point(np.array([0.6, 0.2]), np.array([0, 0]), 0.5)
    assert math.isnan(point["precision"]) and point["fpr"] == 0.5 and point["fp"] == 1


def test_calibration_split_prefers_normal_validation_images():
    splits = np.array(["train"] * 30 + ["val"] * 5 + ["test"] * 6)
    labels = np.array([0] * 34 + [1] + [0, 1, 1, 0, 1, 0])  # an anomalous validation image is not calibration
    fit, held, source = calibration_split(splits, labels, 0.1)
    assert source == "validation" and held.tolist() == [30, 31, 32, 33] and fit.tolist() == list(range(30))
    no_val = np.where(splits == "val", "test", splits)
    fit, held, source = calibration_split(no_val, labels, 0.1)
    assert source == "train holdout" and len(held) == 3 and np.isin(held, np.arange(30)).all()
    assert sorted([*fit, *held]) == list(range(30))


@pytest.mark.parametrize(("n", "m"), [(20, 100), (99, 50)])
def test_operating_point_check_has_the_false_positive_law_it_claims(n, m):
    """Simulated exchangeable calibration and test scores (the independent reference): the count of
    normal test images above the threshold exceeds ``allowed_fp`` at most ``CHECK_LEVEL`` of the time, and
    its distribution is the beta-binomial the check uses (compared through its mean and its tail)."""
    rng = np.random.default_rng(1)
    trials = 4000
    counts = np.empty(trials, dtype=int)
    for t in range(trials):
        calibration, test = rng.normal(size=n), rng.normal(size=m)
        counts[t] = int((test > choose_threshold(calibration, 0.01)["value"]).sum())
    info = choose_threshold(rng.normal(size=n), 0.01)
    check = operating_point_check(info, 0, m)
    a, b = n + 1 - info["rank"], info["rank"]
    assert counts.mean() == pytest.approx(m * a / (a + b), rel=0.08)
    exceed = float(np.mean(counts > check["allowed_fp"]))
    assert exceed <= check["level"] + 3 * math.sqrt(check["level"] / trials)
    # The bound is not loose either: one count below it is exceeded well above the level.
    assert float(np.mean(counts > check["allowed_fp"] - 1)) > check["level"]
    assert operating_point_check(info, check["allowed_fp"], m)["holds"] is True
    worse = operating_point_check(info, check["allowed_fp"] + 1, m)
    assert worse["holds"] is False and worse["p_value"] < check["level"]


def test_operating_point_check_is_unchecked_without_normals_or_threshold():
    info = choose_threshold(np.arange(10.0), 0.1)
    assert operating_point_check(info, 0, 0)["holds"] is None
    assert operating_point_check(choose_threshold(np.zeros(0), 0.1), 0, 10)["holds"] is None


def test_detector_refuses_images_at_another_size_and_old_stores(tiny_run, tmp_path):
    detector = load_detector(tiny_run.evaluations["cutpaste"])
    with pytest.raises(ValueError, match="working size"):
        detector.score(np.zeros((1, detector.image_size + 1, detector.image_size + 1, 3), np.uint8))
    old, _ = build_store(tmp_path, "evaluate", "brick-cutpaste-s0", {}, {}, lambda group: None)
    with pytest.raises(StoreError, match="rerun the evaluate stage"):
        load_detector(old)
