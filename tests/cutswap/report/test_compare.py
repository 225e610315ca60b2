from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cutswap.report.compare import (
    COLUMNS,
    NO_DIFFERENCE,
    Interval,
    compare,
    comparison_pairs,
    comparisons_markdown,
    paired_differences,
    question,
    verdict,
)

# 2 categories x 3 seeds, cutswap (a) against random-swap (b); a - b per (category, seed):
#   bottle: 0.02, 0.0005 (a tie: within 0.001), 0.03      -> category mean 0.0505 / 3 = 0.016833...
#   screw:  -0.01 (a loss), 0.04, 0.01                    -> category mean 0.04 / 3   = 0.013333...
A = {"bottle": (0.90, 0.9200, 0.94), "screw": (0.60, 0.62, 0.61)}
B = {"bottle": (0.88, 0.9195, 0.91), "screw": (0.61, 0.58, 0.60)}
DIFFS = {"bottle": (0.02, 0.0005, 0.03), "screw": (-0.01, 0.04, 0.01)}


def _frame(values: dict[str, dict[str, tuple[float, ...]]], metric: str = "image_AUROC") -> pd.DataFrame:
    rows = [
        {"category": c, "method": m, "seed": s, metric: v, "pixel_AUROC": np.nan}
        for m, per_cat in values.items()
        for c, vs in per_cat.items()
        for s, v in enumerate(vs)
    ]
    return pd.DataFrame(rows)


def _hand() -> pd.DataFrame:
    return _frame({"cutswap": A, "random-swap": B})


def test_hand_computed_mean_counts_and_satterthwaite_t_interval():
    row = compare(_hand(), metrics=["image_AUROC"]).iloc[0]
    assert (row["a"], row["b"], row["metric"], row["n_pairs"]) == ("cutswap", "random-swap", "image_AUROC", 6)
    assert row["mean_diff"] == pytest.approx((0.0505 / 3 + 0.04 / 3) / 2)  # 0.0150833
    assert (row["wins"], row["ties"], row["losses"]) == (4, 1, 1)
    # By hand: each category's variance of the mean (s^2 / 3), averaged over 2 categories (/ 2^2);
    # Welch-Satterthwaite degrees of freedom, 2 per category.
    terms = [np.var(DIFFS[c], ddof=1) / 3 / 4 for c in ("bottle", "screw")]
    se = np.sqrt(sum(terms))
    df = sum(terms) ** 2 / sum(t**2 / 2 for t in terms)
    half = stats.t.ppf(0.975, df) * se
    assert (row["se"], row["df"]) == (pytest.approx(se), pytest.approx(df))
    assert row["ci_low"] == pytest.approx(row["mean_diff"] - half)
    assert row["ci_high"] == pytest.approx(row["mean_diff"] + half)
    assert row["detectable"] == pytest.approx((stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * se)
    assert not row["test_noise"]


def test_one_category_is_scipys_one_sample_t_interval():
    """An independent reference: with one category the interval is the textbook one-sample t interval."""
    bottle = _hand()[lambda f: f["category"] == "bottle"]
    row = compare(bottle, metrics=["image_AUROC"]).iloc[0]
    reference = stats.ttest_1samp(DIFFS["bottle"], 0.0).confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(reference.low), pytest.approx(reference.high))
    assert row["df"] == pytest.approx(2)


def test_test_noise_shared_by_the_seeds_widens_the_interval():
    """Redraws where every seed's difference moves together add their variance; seed-specific ones do not."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.02, 400)
    rows = []
    for c in ("bottle", "screw"):
        for s in range(3):
            for method, values in (("cutswap", A), ("random-swap", B)):
                own = rng.normal(0, 0.01, 400)
                lift = shared if method == "cutswap" else 0.0  # the test set favours cutswap in some redraws
                rows.append(pd.DataFrame({"category": c, "method": method, "seed": s, "redraw": range(400),
                                          "image_AUROC": values[c][s] + lift + own}))  # fmt: skip
    redraws = pd.concat(rows, ignore_index=True)
    plain = compare(_hand(), metrics=["image_AUROC"]).iloc[0]
    noisy = compare(_hand(), metrics=["image_AUROC"], redraws=redraws).iloc[0]
    assert noisy["test_noise"] and noisy["mean_diff"] == plain["mean_diff"]
    # the shared part: var 0.02^2 per category, / 2^2 categories, summed: 0.0002; seed-specific parts cancel
    expected = plain["se"] ** 2 + 2 * 0.02**2 / 4
    assert noisy["se"] ** 2 == pytest.approx(expected, rel=0.2)
    with pytest.raises(ValueError, match="no test redraws"):
        compare(_hand(), metrics=["image_AUROC"], redraws=redraws[redraws["seed"] != 2])


def test_paired_differences_align_on_category_and_seed_and_drop_missing_partners():
    results = _hand()
    results = results.drop(results.index[(results["method"] == "random-swap") & (results["seed"] == 2)])
    results.loc[(results["method"] == "cutswap") & (results["category"] == "screw") & (results["seed"] == 0),
                "image_AUROC"] = np.nan  # fmt: skip
    diffs = paired_differences(results, "cutswap", "random-swap", "image_AUROC")
    assert list(diffs[["category", "seed"]].itertuples(index=False, name=None)) == [
        ("bottle", 0), ("bottle", 1), ("screw", 1)
    ]  # fmt: skip
    assert diffs["diff"].to_numpy() == pytest.approx([0.02, 0.0005, 0.04])
    row = compare(results, metrics=["image_AUROC"]).iloc[0]
    assert row["n_pairs"] == 3
    # every category weighs the same: bottle's two pairs average first, screw's one pair is a constant
    assert row["mean_diff"] == pytest.approx(((0.02 + 0.0005) / 2 + 0.04) / 2)


def _shifted(shift: float, noise: tuple[float, ...]) -> pd.DataFrame:
    base = {"bottle": (0.90, 0.91, 0.92, 0.93), "screw": (0.60, 0.62, 0.64, 0.66)}
    other = {c: tuple(v + shift + n for v, n in zip(vs, noise, strict=True)) for c, vs in base.items()}
    return _frame({"cutswap": other, "cutpaste": base})


def test_verdicts_for_a_clear_win_a_clear_loss_and_noise():
    win = compare(_shifted(0.05, (0.002, -0.002, 0.001, -0.001)), metrics=["image_AUROC"]).iloc[0]
    assert win["ci_low"] > 0
    assert win["verdict"] == (
        f"cutswap better by {win['mean_diff'] * 100:.1f} "
        f"[{win['ci_low'] * 100:.1f}, {win['ci_high'] * 100:.1f}]"
    )
    assert win["verdict"].startswith("cutswap better by 5.0 [")
    loss = compare(_shifted(-0.05, (0.002, -0.002, 0.001, -0.001)), metrics=["image_AUROC"]).iloc[0]
    assert loss["ci_high"] < 0 and loss["losses"] == 8
    # b better: the difference b - a and its interval, as positive numbers
    assert loss["verdict"] == (
        f"cutpaste better by {-loss['mean_diff'] * 100:.1f} "
        f"[{-loss['ci_high'] * 100:.1f}, {-loss['ci_low'] * 100:.1f}]"
    )
    assert loss["verdict"].startswith("cutpaste better by 5.0 [")
    noise = compare(_shifted(0.0, (0.02, -0.02, 0.01, -0.01)), metrics=["image_AUROC"]).iloc[0]
    assert noise["ci_low"] < 0 < noise["ci_high"]
    assert noise["verdict"] == f"{NO_DIFFERENCE} (would detect ±{noise['detectable'] * 100:.1f})"
    assert (
        verdict("a", "b", Interval(-0.05, -0.06, -0.04, 0.005, 6, 0.014), 8) == "b better by 5.0 [4.0, 6.0]"
    )
    assert verdict("a", "b", Interval(0.05, 0.04, 0.06, 0.005, 6, 0.014), 8) == "a better by 5.0 [4.0, 6.0]"
    # fewer than 2 pairs
    assert verdict("a", "b", Interval(0.05, 0.04, 0.06, 0.005, 6, 0.014), 1).startswith(NO_DIFFERENCE)


def test_single_seed_categories_are_constants_and_alone_give_no_interval():
    results = _hand()
    results = results[(results["seed"] == 0) | (results["category"] == "bottle")]
    both = compare(results, metrics=["image_AUROC"]).iloc[0]
    # screw has one seed: its seed variance is borrowed from bottle (the only category that measures it)
    s2 = np.var(DIFFS["bottle"], ddof=1)
    assert both["mean_diff"] == pytest.approx((np.mean(DIFFS["bottle"]) - 0.01) / 2)
    assert both["se"] == pytest.approx(np.sqrt((s2 / 3 + s2 / 1) / 4))
    one_seed = compare(_hand()[lambda f: f["seed"] == 0], metrics=["image_AUROC"]).iloc[0]
    assert one_seed["n_pairs"] == 2 and np.isnan(one_seed["ci_low"])
    assert one_seed["verdict"] == f"{NO_DIFFERENCE} (too few seeds to tell)"


def test_columns_exact():
    first = compare(_hand())
    assert tuple(first.columns) == COLUMNS
    assert list(first["metric"]) == ["image_AUROC"]  # the all-NaN pixel metric is not compared by default


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="unknown metric"):
        compare(_hand(), metrics=["image_AUPR"])
    with pytest.raises(ValueError, match="seed"):
        compare(_hand().drop(columns="seed"))
    with pytest.raises(ValueError, match="several rows"):
        compare(pd.concat([_hand(), _hand()]))
    with pytest.raises(ValueError, match="not in the results"):
        compare(_hand(), pairs=[("cutswap", "cutpaste")])
    with pytest.raises(ValueError, match="power"):
        compare(_hand(), power=1.0)
    with pytest.raises(ValueError, match="confidence"):
        compare(_hand(), confidence=95)
    with pytest.raises(ValueError, match="not numeric"):
        paired_differences(_hand().assign(image_AUROC="x"), "cutswap", "random-swap", "image_AUROC")


def test_pairs_answer_the_questions_among_the_methods_present():
    everything = ["random-swap", "cutpaste", "cutswap", "imagenet-gde", "cutpaste-3way", "cutswap-3way"]
    assert comparison_pairs(everything) == [
        ("cutswap", "random-swap"),
        ("cutswap", "cutpaste"),
        ("cutswap-3way", "cutpaste-3way"),
        ("cutswap", "imagenet-gde"),
        ("cutswap-3way", "imagenet-gde"),
        ("cutpaste", "imagenet-gde"),
        ("cutpaste-3way", "imagenet-gde"),
        ("random-swap", "imagenet-gde"),
    ]
    assert comparison_pairs(["cutpaste", "cutswap", "cutswap"]) == [("cutswap", "cutpaste")]
    assert comparison_pairs(["cutswap", "cutswap-3way"]) == []
    assert question("cutswap", "random-swap").startswith("Does saliency guidance help")
    assert "untrained" in question("cutpaste", "imagenet-gde")
    # Every trained method also answers to PatchCore; the two no-training rows are not compared.
    assert comparison_pairs(["cutswap", "patchcore", "imagenet-gde", "cutpaste"]) == [
        ("cutswap", "cutpaste"),
        ("cutswap", "imagenet-gde"),
        ("cutpaste", "imagenet-gde"),
        ("cutswap", "patchcore"),
        ("cutpaste", "patchcore"),
    ]
    assert "strongest no-training detector" in question("cutswap", "patchcore")


def test_markdown_table_is_in_points_with_questions_and_how_the_interval_was_made():
    results = _shifted(0.05, (0.002, -0.002, 0.001, -0.001))
    table = compare(results, metrics=["image_AUROC"])
    md = comparisons_markdown(table, redraws=500)
    row = table.iloc[0]
    assert "| Do saliency-guided swaps beat CutPaste? | cutswap − cutpaste | image_AUROC | 8 | +5.0 |" in md
    assert f"| ±{row['detectable'] * 100:.1f} | 8/0/0 | {row['verdict']} |" in md
    assert "95% t interval" in md and "500 redraws of its test images" in md
    # a report of an earlier version (no power columns, a bootstrap over seeds) still shows
    old = comparisons_markdown(
        table.drop(columns=["se", "df", "detectable", "test_noise"]), n_boot=10000, seed=0
    )
    assert "| n/a | 8/0/0 |" in old and "10000 bootstrap resamples of seeds" in old


def test_the_no_training_baseline_pairs_its_one_value_with_every_seed():
    # imagenet-gde runs once per category (no seed changes it): bottle 0.91, screw 0.60.
    frame = _frame({"cutswap": A, "imagenet-gde": {"bottle": (0.91,), "screw": (0.60,)}})
    diffs = paired_differences(frame, "cutswap", "imagenet-gde", "image_AUROC")
    assert list(diffs["seed"]) == [0, 1, 2, 0, 1, 2]
    np.testing.assert_allclose(diffs["diff"], [-0.01, 0.01, 0.03, 0.0, 0.02, 0.01], atol=1e-12)
    row = compare(frame, [("cutswap", "imagenet-gde")], ["image_AUROC"]).iloc[0]
    assert row["n_pairs"] == 6 and row["mean_diff"] == pytest.approx((0.01 + 0.01) / 2)
    assert (row["wins"], row["ties"], row["losses"]) == (4, 1, 1)
    # with test redraws: the baseline's one series of redraws pairs with every seed's
    redraws = pd.concat(
        [pd.DataFrame({"category": r.category, "method": r.method, "seed": r.seed, "redraw": range(50),
                       "image_AUROC": r.image_AUROC + np.sin(np.arange(50) + len(r.method))})
         for r in frame.itertuples()], ignore_index=True)  # fmt: skip
    noisy = compare(frame, [("cutswap", "imagenet-gde")], ["image_AUROC"], redraws=redraws).iloc[0]
    assert noisy["test_noise"] and noisy["se"] > row["se"]
    twice = pd.concat([frame, frame.assign(seed=5)[frame["method"] == "imagenet-gde"]])
    with pytest.raises(ValueError, match="trains nothing but has several seeds"):
        paired_differences(twice, "cutswap", "imagenet-gde", "image_AUROC")
