from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cutswap.report.compare import (
    COLUMNS,
    Interval,
    _adjusted,
    answer,
    compare,
    comparison_pairs,
    comparisons_markdown,
    holm,
    paired_differences,
    probability_of_improvement,
    question,
    verdict,
)
from cutswap.report.intervals import Parts, satterthwaite
from cutswap.report.intervals import skew_t as compare_interval

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


def test_hand_computed_mean_counts_and_satterthwaite_t_interval_below_five_seeds():
    row = compare(_hand(), metrics=["image_AUROC"]).iloc[0]
    assert (row["a"], row["b"], row["metric"], row["n_pairs"]) == ("cutswap", "random-swap", "image_AUROC", 6)
    assert row["mean_diff"] == pytest.approx((0.0505 / 3 + 0.04 / 3) / 2)  # 0.0150833
    assert (row["wins"], row["ties"], row["losses"]) == (4, 1, 1)
    # By hand: each category's variance of the mean (s^2 / 3), averaged over 2 categories (/ 2^2);
    # Welch-Satterthwaite degrees of freedom, 2 per category. With 3 seeds the seeds' skewness is not
    # estimated (3 draws do not measure a third cumulant): the symmetric t interval, flagged.
    terms = [np.var(DIFFS[c], ddof=1) / 3 / 4 for c in ("bottle", "screw")]
    se = np.sqrt(sum(terms))
    df = sum(terms) ** 2 / sum(t**2 / 2 for t in terms)
    half = stats.t.ppf(0.975, df) * se
    assert (row["se"], row["df"]) == (pytest.approx(se), pytest.approx(df))
    assert row["ci_low"] == pytest.approx(row["mean_diff"] - half)
    assert row["ci_high"] == pytest.approx(row["mean_diff"] + half)
    assert row["detectable"] == pytest.approx((stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * se)
    assert not row["test_noise"] and row["pairing"] == "by seed"
    assert row["flag"].startswith("fewer than 5 seeds per category; screw holds 74% of the variance")
    # the p-value inverts the same interval: it contains 0 here, so p >= 0.05
    assert row["ci_low"] <= 0 and row["p_value"] == pytest.approx(2 * stats.t.sf(row["mean_diff"] / se, df))
    sym = satterthwaite(paired_differences(_hand(), "cutswap", "random-swap", "image_AUROC"))
    assert (sym.low, sym.high, sym.p) == (row["ci_low"], row["ci_high"], row["p_value"])


#: 2 categories x 5 seeds; bottle's differences skew right (one large), screw's are symmetric.
SKEWED = {"bottle": (0.00, 0.01, 0.005, 0.002, 0.06), "screw": (0.01, 0.02, 0.03, 0.04, 0.05)}


def test_hand_computed_hall_interval_from_five_seeds():
    base = {c: (0.8,) * 5 for c in SKEWED}
    frame = _frame({"cutswap": {c: tuple(0.8 + d for d in v) for c, v in SKEWED.items()}, "cutpaste": base})
    row = compare(frame, metrics=["image_AUROC"]).iloc[0]
    groups = [np.array(SKEWED[c]) for c in ("bottle", "screw")]
    terms = [g.var(ddof=1) / 5 / 4 for g in groups]
    se = np.sqrt(sum(terms))
    df = sum(terms) ** 2 / sum(t**2 / 4 for t in terms)
    k3 = [5 / (4 * 3) * np.sum((g - g.mean()) ** 3) for g in groups]  # unbiased third k-statistic
    skew = sum(k / 25 for k in k3) / 2**3 / se**3  # of the mean of category means
    q = stats.t.ppf([0.025, 0.975], df)
    t_of_q = 3 / skew * (np.cbrt(1 + skew * (q - skew / 6)) - 1)  # Hall's g(t) = q solved for t
    mean = np.mean([g.mean() for g in groups])
    assert (row["se"], row["df"]) == (pytest.approx(se), pytest.approx(df))
    assert row["ci_low"] == pytest.approx(mean - se * t_of_q[1])
    assert row["ci_high"] == pytest.approx(mean - se * t_of_q[0])
    # a long right tail in the seeds: the interval reaches further above the mean than below it
    assert row["ci_high"] - mean > mean - row["ci_low"]
    assert row["flag"] == "bottle holds 72% of the variance"  # 5 seeds: only the share rule fires
    # the p-value inverts the same interval: g(mean / se) against the t distribution
    g = mean / se + skew * (mean / se) ** 2 / 3 + skew**2 * (mean / se) ** 3 / 27 + skew / 6
    assert row["p_value"] == pytest.approx(2 * stats.t.sf(abs(g), df))
    assert (row["p_value"] < 0.05) == (row["ci_low"] > 0)


def test_one_category_of_symmetric_seeds_is_scipys_one_sample_t_interval():
    """An independent reference: seeds without skewness leave Hall's correction at 0, and one category's
    interval is then the textbook one-sample t interval, its p-value scipy's."""
    diffs = (0.01, 0.02, 0.03, 0.04, 0.05)  # five seeds (the correction is on), third cumulant 0
    frame = _frame(
        {"cutswap": {"bottle": tuple(0.9 + d for d in diffs)}, "random-swap": {"bottle": (0.9,) * 5}}
    )
    row = compare(frame, metrics=["image_AUROC"]).iloc[0]
    reference = stats.ttest_1samp(diffs, 0.0)
    interval = reference.confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(interval.low), pytest.approx(interval.high))
    assert row["df"] == pytest.approx(4) and row["p_value"] == pytest.approx(reference.pvalue)


def test_halls_interval_covers_skewed_seeds_where_the_symmetric_one_misses_on_one_side():
    """An independent check of the direction and size of the correction: exponential seed noise (skewness
    2), one category of 10 seeds, 2,000 replications; the symmetric t interval misses on one side."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"category": "c", "seed": range(10)})
    hall = sym = 0
    for _ in range(2000):
        d = frame.assign(diff=rng.exponential(size=10) - 1.0)  # true mean 0
        iv = compare_interval(d)
        hall += iv.low <= 0 <= iv.high
        s = satterthwaite(d)
        sym += s.low <= 0 <= s.high
    assert hall / 2000 >= 0.93 and hall / 2000 - sym / 2000 >= 0.02, (hall, sym)


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
    # unmatched seeds are not dropped: the comparison turns unpaired and says why, on every finite value
    row = compare(results, metrics=["image_AUROC"]).iloc[0]
    assert row["pairing"].startswith("unpaired: the seeds differ in 2 of 2 categories")
    assert "cutswap: 0, 1, 2; random-swap: 0, 1" in row["pairing"]
    # every category weighs the same: each category's mean of a minus its mean of b
    bottle = np.mean(A["bottle"]) - np.mean(B["bottle"][:2])
    screw = np.mean(A["screw"][1:]) - np.mean(B["screw"][:2])
    assert row["mean_diff"] == pytest.approx((bottle + screw) / 2)
    assert row["n_pairs"] == 3 * 2 + 2 * 2  # every run of a against every run of b, per category
    # Welch: each category's variance of the difference of means
    terms = [np.var(A["bottle"], ddof=1) / 3 + np.var(B["bottle"][:2], ddof=1) / 2,
             np.var(A["screw"][1:], ddof=1) / 2 + np.var(B["screw"][:2], ddof=1) / 2]  # fmt: skip
    assert row["se"] == pytest.approx(np.sqrt(sum(terms) / 4))


def test_fully_disjoint_seeds_are_still_compared_unpaired():
    frame = _hand()
    frame.loc[frame["method"] == "random-swap", "seed"] += 10
    row = compare(frame, metrics=["image_AUROC"]).iloc[0]
    assert row["pairing"].startswith("unpaired") and "random-swap: 10, 11, 12" in row["pairing"]
    assert row["mean_diff"] == pytest.approx(np.mean([np.mean(DIFFS[c]) for c in DIFFS]))
    assert (row["wins"] + row["ties"] + row["losses"]) == 2 * 9  # every run of a against every run of b


def _shifted(shift: float, noise: tuple[float, ...]) -> pd.DataFrame:
    base = {"bottle": (0.90, 0.91, 0.92, 0.93), "screw": (0.60, 0.62, 0.64, 0.66)}
    other = {c: tuple(v + shift + n for v, n in zip(vs, noise, strict=True)) for c, vs in base.items()}
    return _frame({"cutswap": other, "cutpaste": base})


def test_verdicts_for_a_clear_win_a_clear_loss_equivalence_and_noise():
    win = compare(_shifted(0.05, (0.002, -0.002, 0.001, -0.001)), metrics=["image_AUROC"]).iloc[0]
    assert win["ci_low"] > 0 and win["answer"] == "a better"
    assert win["verdict"].startswith(
        f"cutswap better by {win['mean_diff'] * 100:.1f} "
        f"[{win['ci_low'] * 100:.1f}, {win['ci_high'] * 100:.1f}] on these 2 categories "
        "(coverage not promised: fewer than 5 seeds per category"
    )
    assert "does not generalise beyond these 2 categories" in win["verdict"]
    loss = compare(_shifted(-0.05, (0.002, -0.002, 0.001, -0.001)), metrics=["image_AUROC"]).iloc[0]
    assert loss["ci_high"] < 0 and loss["losses"] == 8 and loss["answer"] == "b better"
    # b better: the difference b - a and its interval, as positive numbers
    assert loss["verdict"].startswith(
        f"cutpaste better by {-loss['mean_diff'] * 100:.1f} "
        f"[{-loss['ci_high'] * 100:.1f}, {-loss['ci_low'] * 100:.1f}] on these 2 categories"
    )
    noise = compare(_shifted(0.0, (0.02, -0.02, 0.01, -0.01)), metrics=["image_AUROC"]).iloc[0]
    assert noise["ci_low"] < -0.01 and noise["ci_high"] > 0.01 and noise["answer"] == "inconclusive"
    assert noise["verdict"].startswith("inconclusive on these 2 categories: ")
    assert f"(would detect ±{noise['detectable'] * 100:.1f}, an estimate)" in noise["verdict"]
    same = compare(_shifted(0.0, (0.001, -0.001, 0.0005, -0.0005)), metrics=["image_AUROC"]).iloc[0]
    assert (
        -0.01 <= same["ci_low"] < 0 < same["ci_high"] <= 0.01 and same["answer"] == "practically equivalent"
    )
    assert same["verdict"].startswith("practically equivalent on these 2 categories: ")
    assert "lies within ±1.0" in same["verdict"]
    # a wider margin turns the noisy row equivalent too; a margin must be positive
    wide = compare(_shifted(0.0, (0.02, -0.02, 0.01, -0.01)), metrics=["image_AUROC"], margin=0.2).iloc[0]
    assert wide["answer"] == "practically equivalent"
    with pytest.raises(ValueError, match="margin"):
        compare(_hand(), margin=0)
    iv = Interval(-0.05, -0.06, -0.04, 0.005, 6, 0.014)
    assert verdict("a", "b", iv, 8, 3) == "b better by 5.0 [4.0, 6.0] on these 3 categories"
    small = Interval(0.005, 0.002, 0.008, 0.001, 6, 0.003)
    assert verdict("a", "b", small, 8, 3).endswith(", less than the ±1.0-point margin")
    assert verdict("a", "b", iv, 8, 3, flag="x").endswith(" (coverage not promised: x)")


def test_answers_from_the_interval_and_the_margin():
    assert answer(0.001, 0.02, 0.01) == "a better"
    assert answer(-0.02, -0.001, 0.01) == "b better"
    assert answer(-0.01, 0.01, 0.01) == "practically equivalent"
    assert answer(-0.011, 0.005, 0.01) == "inconclusive"
    assert answer(float("nan"), float("nan"), 0.01) == "not answered"


def test_single_seed_categories_are_constants_and_alone_give_no_interval():
    results = _hand()
    results = results[(results["seed"] == 0) | (results["category"] == "bottle")]
    both = compare(results, metrics=["image_AUROC"]).iloc[0]
    # screw has one seed: its seed variance is borrowed from bottle (the only category that measures it)
    s2 = np.var(DIFFS["bottle"], ddof=1)
    assert both["mean_diff"] == pytest.approx((np.mean(DIFFS["bottle"]) - 0.01) / 2)
    assert both["se"] == pytest.approx(np.sqrt((s2 / 3 + s2 / 1) / 4))
    one_seed = compare(_hand()[lambda f: f["seed"] == 0], metrics=["image_AUROC"]).iloc[0]
    assert one_seed["n_pairs"] == 2 and np.isnan(one_seed["ci_low"]) and one_seed["answer"] == "not answered"
    assert one_seed["verdict"].startswith("not answered: no category has two seeds")


def test_round_off_is_not_noise():
    # 0.7 - 0.6, 0.8 - 0.7 and 0.9 - 0.8 differ in the last bits: still no interval, not [10.0, 10.0]
    frame = _frame({"cutswap": {"bottle": (0.7, 0.8, 0.9)}, "random-swap": {"bottle": (0.6, 0.7, 0.8)}})
    row = compare(frame, metrics=["image_AUROC"]).iloc[0]
    assert row["answer"] == "not answered" and np.isnan(row["ci_low"])


def test_equal_seed_differences_without_test_noise_give_no_zero_width_interval():
    frame = _frame({"cutswap": {"bottle": (0.91, 0.92, 0.93)}, "random-swap": {"bottle": (0.90, 0.91, 0.92)}})
    row = compare(frame, metrics=["image_AUROC"]).iloc[0]
    assert row["mean_diff"] == pytest.approx(0.01)
    assert np.isnan(row["ci_low"]) and np.isnan(row["ci_high"]) and np.isnan(row["p_value"])
    assert row["answer"] == "not answered"
    assert row["verdict"].startswith("not answered: every seed gives the same difference")


def _categories(n: int, shift: float = 0.02, seeds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    a, b = {}, {}
    for c in range(n):
        level = rng.uniform(0.7, 0.95)
        b[f"c{c}"] = tuple(level + rng.normal(0, 0.01, seeds))
        a[f"c{c}"] = tuple(level + shift * (1 if c % 3 else -1) + rng.normal(0, 0.01, seeds))
    return _frame({"cutswap": a, "random-swap": b})


def test_categories_like_these_are_scipys_t_interval_over_category_means_from_five_categories():
    frame = _categories(6)
    row = compare(frame, metrics=["image_AUROC"]).iloc[0]
    diffs = paired_differences(frame, "cutswap", "random-swap", "image_AUROC")
    means = diffs.groupby("category")["diff"].mean().to_numpy()
    reference = stats.ttest_1samp(means, 0.0).confidence_interval(0.95)  # an independent reference
    assert (row["like_these_low"], row["like_these_high"]) == (
        pytest.approx(reference.low),
        pytest.approx(reference.high),
    )
    assert (row["categories"], row["categories_a"], row["categories_b"]) == (6, 4, 2)
    assert "4 of 6 favour cutswap, 2 favour random-swap" in row["verdict"]
    assert "on categories like these" in row["verdict"]
    few = compare(_categories(4), metrics=["image_AUROC"]).iloc[0]
    assert np.isnan(few["like_these_low"]) and few["like_these_answer"] == "n/a"
    assert "does not generalise beyond these 4 categories (fewer than 5)" in few["verdict"]


def test_the_skewness_of_an_unpaired_difference_is_a_minus_b():
    skewed, flat = np.array([0.0, 0.0, 0.0, 0.0, 0.1]), np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    ab = Parts.unpaired({"c": skewed}, {"c": flat})
    ba = Parts.unpaired({"c": flat}, {"c": skewed})
    assert ab.skewness > 0 and ba.skewness == pytest.approx(-ab.skewness)
    # Welch's degrees of freedom, by hand
    ta, tb = skewed.var(ddof=1) / 5, flat.var(ddof=1) / 5
    assert ab.df == pytest.approx((ta + tb) ** 2 / (ta**2 / 4 + tb**2 / 4))


def test_a_p_of_improvement_without_spread_has_no_interval():
    a = {"c0": pd.Series([0.9, 0.95, 0.93])}
    b = {"c0": pd.Series([0.5, 0.6])}
    p, low, high = probability_of_improvement(a, b)
    assert p == 1.0 and np.isnan(low) and np.isnan(high)
    frame = _frame({"cutswap": {"c0": (0.9, 0.95, 0.93)}, "cutpaste": {"c0": (0.5, 0.6, 0.55)}})
    md = comparisons_markdown(compare(frame, metrics=["image_AUROC"]), margin=0.01)
    assert "| 1.00 (no interval) |" in md


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 0.04)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    out = holm([0.2, float("nan"), 0.6])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.4) and out[2] == pytest.approx(0.6)


def test_confirmatory_rows_and_exploratory_rows_adjusted_within_their_family():
    frame = _frame(
        {"cutswap": A, "random-swap": B, "cutpaste": B, "imagenet-gde": {"bottle": (0.8,), "screw": (0.5,)}}
    )
    confirmatory = [("cutswap", "random-swap", "image_AUROC")]
    table = compare(frame, metrics=["image_AUROC"], confirmatory=confirmatory)
    roles = dict(zip(zip(table["a"], table["b"], strict=True), table["role"], strict=True))
    assert roles[("cutswap", "random-swap")] == "confirmatory"
    assert roles[("cutswap", "cutpaste")] == "exploratory"
    explore = table[table["role"] == "exploratory"]
    np.testing.assert_allclose(explore["p_adjusted"], holm(explore["p_value"].to_numpy()))
    alone = table[table["role"] == "confirmatory"].iloc[0]
    assert alone["p_adjusted"] == pytest.approx(alone["p_value"])  # a family of one
    missing = [*confirmatory, ("cutswap", "cutpaste-3way", "image_AUROC")]
    md = comparisons_markdown(table, margin=0.01, confirmatory=missing)
    assert (
        "Not asked, so not answered: the confirmatory question cutswap − cutpaste-3way on image_AUROC" in md
    )
    assert "1 confirmatory question" in md and f"{len(explore)} exploratory rows" in md
    assert f'about {0.05 * len(explore):.1f} "better" answers' in md


def test_probability_of_improvement_is_mann_whitneys_u_averaged_over_categories():
    a = {"c0": pd.Series([0.9, 0.8, 0.7]), "c1": pd.Series([0.5, 0.6])}
    b = {"c0": pd.Series([0.85, 0.75]), "c1": pd.Series([0.6, 0.4, 0.3])}
    p, low, high = probability_of_improvement(a, b, tie=0.0)
    expected = np.mean([stats.mannwhitneyu(a[c], b[c]).statistic / (len(a[c]) * len(b[c])) for c in a])
    assert p == pytest.approx(expected)  # c0: 3 wins / 6; c1: (4 wins + a tie's half) / 6
    assert p == pytest.approx((3 / 6 + 4.5 / 6) / 2)
    assert 0 <= low <= p <= high <= 1
    assert probability_of_improvement(a, b, tie=0.0) == (p, low, high)  # seeded: the same every time


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
    md = comparisons_markdown(table, redraws=500, margin=0.01)
    row = table.iloc[0]
    head = "| Do saliency-guided swaps beat CutPaste? | cutswap − cutpaste | image_AUROC |"
    assert f"{head} exploratory, adjusted p" in md
    assert (
        f"| 8 | +5.0 | [{row['ci_low'] * 100:+.1f}, {row['ci_high'] * 100:+.1f}] | {row['p_improve']:.2f} ["
        in md
    )
    assert f"| {row['verdict']} |" in md
    assert "skewness" in md and "500 redraws of its test images" in md and "±1 points" in md
    assert "luck of the one training set" in md
    # a report of an earlier version (no role or P(a > b), a bootstrap over seeds) still shows
    old = comparisons_markdown(
        table[
            [
                "a",
                "b",
                "metric",
                "n_pairs",
                "mean_diff",
                "ci_low",
                "ci_high",
                "wins",
                "ties",
                "losses",
                "verdict",
            ]
        ],
        n_boot=10000,
        seed=0,
    )
    assert "| n/a | 8 | +5.0 |" in old and "10000 bootstrap resamples of seeds" in old


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


def test_a_difference_that_does_not_survive_holm_says_so_before_its_scope():
    # four exploratory rows: p 0.01, 0.04, 0.03, 0.005 -> Holm 0.03, 0.06, 0.06, 0.02
    table = pd.concat([compare(_hand(), metrics=["image_AUROC"])] * 4, ignore_index=True)
    table = table.assign(p_value=[0.01, 0.04, 0.03, 0.005], answer="a better", verdict="cutswap better")
    out = _adjusted(table, 0.95)
    np.testing.assert_allclose(out["p_adjusted"], [0.03, 0.06, 0.06, 0.02])
    holm_words = "; not significant after Holm's adjustment over the 4 exploratory rows (adjusted p = 0.06)"
    assert out["verdict"].tolist() == [
        "cutswap better",
        *["cutswap better" + holm_words] * 2,
        "cutswap better",
    ]
    # in compare's verdicts the scope beyond these categories comes after it
    row = compare(_hand(), metrics=["image_AUROC"]).iloc[0]
    assert row["verdict"].endswith("; does not generalise beyond these 2 categories (fewer than 5)")
