from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
import pytest

from cutswap.app.cli import main as cli
from cutswap.report.html import run_page
from cutswap.report.prose import summary_markdown
from cutswap.report.runs_page import write_index
from cutswap.report.tables import comparison, list_runs, pair_steps, pivot, reference_table, trunk_label


def _results(dataset: str = "textures") -> pd.DataFrame:
    rows = []
    for category, base in (("bottle", 0.9), ("screw", 0.6)):
        for method, delta in (("cutswap", 0.05), ("cutpaste", 0.0)):
            for seed, noise in ((0, -0.01), (1, 0.01)):
                rows.append(
                    {
                        "dataset": dataset, "category": category, "method": method, "seed": seed,
                        "image_AUROC": base + delta + noise, "pretrained": False, "head_dims": "512-128",
                        "steps": 10, "batch_size": 4, "image_size": 64, "lr": 0.03, "levels": "level1",
                        "cluster_method": "fcm", "cluster_k": 3, "draws": 8, "pair_fallback_rate": 0.01,
                        "momentum": 0.9, "weight_decay": 3e-5, "trunk": "resnet18",
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


PROV = {
    "run": "r1",
    "backbone": {"name": "efficientnet_lite0", "sha256": "ab" * 32, "fallback_reason": "offline"},
}


def test_pivot_mean_std_over_seeds_and_mean_row():
    table = pivot(_results())
    assert table.loc["bottle", "cutswap"] == "95.0 ± 1.4"  # 94, 96: std (ddof=1) = 1.414
    assert table.loc["screw", "cutpaste"] == "60.0 ± 1.4"
    # mean row: per seed, the mean over categories (seed 0: (94+64)/2 = 79, seed 1: 81)
    assert table.loc["mean", "cutswap"] == "80.0 ± 1.4"


def test_summary_and_page_say_how_numbers_were_obtained():
    results = _results()
    md = summary_markdown(results, PROV)
    assert "| bottle | 95.0 ± 1.4 | 90.0 ± 1.4 |" in md
    assert "**Deviation**" in md and "offline" in md and "synthetic defects" in md
    page = run_page(results, {**PROV, "settings": {}}, ["figures/bottle.png"])
    assert 'id="table-image_AUROC"' in page and '<img src="figures/bottle.png"' in page


def test_every_table_names_its_trunks_and_the_how_follows_the_run():
    results = _results()
    baseline = results[(results["method"] == "cutpaste") & (results["seed"] == 0)].assign(
        method="imagenet-gde", trunk="efficientnet_lite0", pretrained=True, steps=np.nan, lr=np.nan
    )
    results = pd.concat([results.assign(momentum=0.5), baseline], ignore_index=True)
    results = results.assign(target_class=7, saliency_input_size=224)
    prov = PROV
    md = summary_markdown(results, prov)
    note = (
        "Trunks: cutpaste, cutswap: resnet18 (scratch); "
        "imagenet-gde: efficientnet_lite0 (ImageNet, frozen: no training)."
    )
    assert md.count(note) == 1  # one metric table in these results
    assert note in run_page(results, prov, [])
    assert "Classifiers (cutpaste, cutswap): resnet18 (scratch)" in md and "momentum 0.5" in md
    assert "imagenet-gde (no training): efficientnet_lite0 with its ImageNet weights, frozen" in md
    assert "ImageNet class 7" in md and "at 224 x 224 px input" in md
    assert pivot(results).loc["bottle", "imagenet-gde"] == "89.0"  # one value, no std: it has one run


def test_mvtec_runs_are_compared_with_the_published_table():
    assert comparison(_results("textures")) is None
    table = comparison(_results("mvtec"))
    published = reference_table()
    assert table.loc["bottle", "CutPaste (paper)"] == f"{published.loc['bottle', 'cutpaste_binary']:.1f}"
    assert table.loc["screw", "3-way (paper)"] == f"{published.loc['screw', 'cutpaste_3way']:.1f}"
    assert published.loc["mean", "cutpaste_3way"] == pytest.approx(95.2)


def test_index_and_cli_list_and_show_runs(tmp_path, capsys):
    run = tmp_path / "r1"
    run.mkdir()
    _results().to_csv(run / "results.csv", index=False)
    (run / "provenance.json").write_text(
        json.dumps({**PROV, "created": "2026-01-01T00:00:00", "preset": "demo"})
    )
    runs = list_runs(tmp_path)
    assert runs.loc[0, "run"] == "r1" and "cutswap 80.0" in runs.loc[0, "mean image_AUROC"]
    page = write_index(tmp_path).read_text()
    assert '<a href="r1/index.html">r1</a>' in page
    assert cli(["--reports", str(tmp_path), "runs"]) == 0
    assert "r1" in capsys.readouterr().out
    assert cli(["--reports", str(tmp_path), "show", "r1"]) == 0
    assert "| bottle | 95.0 ± 1.4 | 90.0 ± 1.4 |" in capsys.readouterr().out
    assert cli(["--reports", str(tmp_path), "show", "nope"]) == 2
    assert "runs: r1" in capsys.readouterr().err


def test_cells_skip_missing_values():
    results = _results()
    results.loc[0, "image_AUROC"] = np.nan  # bottle, cutswap, seed 0
    assert pivot(results).loc["bottle", "cutswap"] == "96.0"


def test_pair_step_rates_are_tabled_per_category_and_level():
    results = _results()
    rates = {
        "bottle": {
            "level1": {"top": 0.9, "top-extra": 0.05, "smaller": 0.03, "next-cluster": 0.02, "random": 0.0}
        },
        "screw": {
            "level1": {"top": 0.5, "top-extra": 0.1, "smaller": 0.2, "next-cluster": 0.15, "random": 0.05}
        },
    }
    results["pair_step_rates"] = [json.dumps(rates[c]) for c in results["category"]]
    table = pair_steps(results)
    assert list(table.index) == ["bottle / level1", "screw / level1"]
    assert list(table.columns) == ["top", "top-extra", "smaller", "next-cluster", "random"]
    assert table.loc["screw / level1", "random"] == "5.0" and table.loc["bottle / level1", "top"] == "90.0"
    assert "| screw / level1 | 50.0 | 10.0 | 20.0 | 15.0 | 5.0 |" in summary_markdown(results, PROV)
    assert 'id="pair-steps"' in run_page(results, PROV, [])
    assert pair_steps(_results()) is None and "Pair-bank" not in summary_markdown(_results(), PROV)


def _fake_stores(monkeypatch, results: pd.DataFrame) -> None:
    """write_report without stores: the results table and the backbone come from here, figures are blank."""
    import cutswap.pipeline.stages.report as stage

    class _Store:
        attrs = {"backbone": PROV["backbone"]}

    monkeypatch.setattr(stage, "results_table", lambda categories: results)
    monkeypatch.setattr(stage, "open_store", lambda ref: _Store())
    monkeypatch.setattr(stage, "_negatives_figure", lambda path, settings, refs: path.write_bytes(b""))


def _write(tmp_path, monkeypatch, results: pd.DataFrame):
    from cutswap.pipeline.results import CategoryRefs
    from cutswap.pipeline.settings import Settings
    from cutswap.pipeline.stages.report import write_report
    from cutswap.pipeline.stores import StoreRef

    _fake_stores(monkeypatch, results)
    refs = CategoryRefs(
        *(StoreRef(s, "bottle", "k" + s, "") for s in ("ingest", "saliency", "cluster", "pairs")), []
    )
    return write_report(Settings(run="r1", reports_root=tmp_path), {"bottle": refs})[0]


def test_report_writes_comparisons_and_show_prints_them(tmp_path, monkeypatch, capsys):
    from cutswap.report.compare import COLUMNS

    results = _results()
    results.loc[(results["method"] == "cutswap") & (results["seed"] == 1), "image_AUROC"] += 0.004
    folder = _write(tmp_path, monkeypatch, results)
    table = pd.read_csv(folder / "comparisons.csv")
    assert tuple(table.columns) == COLUMNS
    row = table.iloc[0]
    assert (row["a"], row["b"], row["metric"], row["n_pairs"], row["wins"]) == (
        "cutswap", "cutpaste", "image_AUROC", 4, 4
    )  # fmt: skip
    assert row["mean_diff"] == pytest.approx(0.052)  # fractions: 0.05, and 0.054 for seed 1
    assert row["verdict"].startswith("cutswap better by 5.2 [")
    prov = json.loads((folder / "provenance.json").read_text())
    confirmatory = [["cutswap", "random-swap", "image_AUROC"], ["cutswap", "cutpaste", "image_AUROC"]]
    assert prov["comparisons"] == {
        "confidence": 0.95, "power": 0.8, "tie": 0.001, "redraws": 500, "margin": 0.01,
        "confirmatory": confirmatory,
    }  # fmt: skip
    assert row["role"] == "confirmatory" and row["answer"] == "a better"
    assert prov["machine"]["cpus"] >= 1 and prov["machine"]["cpu"]
    md = (folder / "summary.md").read_text()
    assert "## Comparisons" in md and row["verdict"] in md
    head = "| Do saliency-guided swaps beat CutPaste? | cutswap − cutpaste | image_AUROC |"
    assert f"{head} confirmatory, adjusted p " in md and "| 4 | +5.2 |" in md
    assert "skewness" in md and "±1 points" in md
    assert "1 confirmatory question," in md  # only cutswap - cutpaste of the two was asked in this run
    page = (folder / "index.html").read_text()
    assert "<h2>Answers</h2>" in page and 'id="comparisons"' in page and 'id="questions-grid"' in page
    assert row["verdict"] in html.unescape(page) and "figures/answers.png" in page
    assert "P(a &gt; b)" in page and "Per-seed numbers are not reproducible" in page
    assert "figures/profile.png" in page
    assert cli(["--reports", str(tmp_path), "show", "r1"]) == 0
    out = capsys.readouterr().out
    assert out.index("| bottle |") < out.index("Comparisons") and row["verdict"] in out
    assert "t interval" in out and "P(a > b)" in out


def test_report_without_a_question_writes_no_comparisons(tmp_path, monkeypatch, capsys):
    folder = _write(tmp_path, monkeypatch, _results()[lambda f: f["method"] == "cutswap"])
    assert not (folder / "comparisons.csv").exists() and "comparisons" not in json.loads(
        (folder / "provenance.json").read_text()
    )
    assert "Comparisons" not in (folder / "summary.md").read_text()
    assert "Comparisons" not in (folder / "index.html").read_text()
    assert cli(["--reports", str(tmp_path), "show", "r1"]) == 0
    assert "Comparisons" not in capsys.readouterr().out


def _how(results: pd.DataFrame, provenance: dict | None = None) -> str:
    """The "How these numbers were obtained" section of the summary, where every setting is stated."""
    md = summary_markdown(results, provenance or PROV)
    return md[md.index("## How these numbers were obtained") :]


def test_how_states_a_non_default_optimiser_and_swap_placement():
    # Values that no default has, so a sentence that ignored the rows could not contain them.
    lr, momentum, decay, steps, batch = 0.125, 0.55, 7.5e-4, 37, 6
    results = _results().assign(
        lr=lr, momentum=momentum, weight_decay=decay, steps=steps, batch_size=batch, swaps="per-level"
    )
    how = _how(results)
    assert (
        f"{steps} steps of SGD with lr {lr} (cosine decay), momentum {momentum}, weight decay {decay}" in how
    )
    assert "momentum 0.9" not in how and "weight decay 3e-05" not in how
    assert "swaps (cutswap): one pair from every saliency level per negative" in how
    assert f"cutpaste: {batch} normal + {batch} cutpaste ({2 * batch} images)" in how
    assert "one pair per negative, from one saliency level" in _how(results.assign(swaps="one"))


def test_how_gives_each_3way_method_one_block_per_negative_kind():
    batch = 5
    results = pd.concat(
        [_results().assign(method=m) for m in ("cutswap-3way", "cutpaste-3way", "cutpaste")],
        ignore_index=True,
    ).assign(batch_size=batch)
    how = _how(results)
    assert f"cutswap-3way: {batch} normal + {batch} swap + {batch} scar ({3 * batch} images)" in how
    assert f"cutpaste-3way: {batch} normal + {batch} cutpaste + {batch} scar ({3 * batch} images)" in how
    assert f"cutpaste: {batch} normal + {batch} cutpaste ({2 * batch} images)" in how
    assert "B normal + B negative" not in how and "of each negative kind" not in how


def test_how_gives_methods_trained_differently_a_sentence_each():
    # A reused train store can hold another schedule than its neighbours: the first row must not speak
    # for every method.
    results = _results()
    results.loc[results["method"] == "cutpaste", "momentum"] = 0.25
    how = _how(results)
    assert how.count("Classifiers (") == 2
    assert "Classifiers (cutpaste): resnet18 (scratch) + MLP head 512-128, 10 steps" in how
    cutpaste_line = next(line for line in how.splitlines() if "Classifiers (cutpaste)" in line)
    cutswap_line = next(line for line in how.splitlines() if "Classifiers (cutswap)" in line)
    assert "momentum 0.25" in cutpaste_line and "momentum 0.9," in cutswap_line


def test_how_names_the_saliency_target_class_and_tanh_when_configured():
    default = _how(_results().assign(target_class=None, shallow_tanh=False))
    assert "target class = each image's top-1." in default and "tanh" not in default
    configured = _how(_results().assign(target_class=283, shallow_tanh=True))
    assert "target class = ImageNet class 283 for every image" in configured
    assert "top-1" not in configured and "rescaled by tanh(2 M / max M)" in configured


def test_how_states_the_gradcam_localization_that_made_the_maps():
    prov = {
        **PROV,
        "metric_resolution": [64, 64],
        "localization": {"localization": "gradcam", "gradcam_layer": "layer2", "pixel_bins": 512},
    }
    how = _how(_results(), prov)
    assert "anomaly maps by gradcam localization (gradcam_layer layer2, pixel_bins 512)" in how
    assert "patch_size" not in how


def test_how_lists_only_the_controls_that_ran():
    only_cutswap = _how(_results()[lambda f: f["method"] == "cutswap"])
    assert "Controls:" not in only_cutswap
    with_random = _how(_results().replace({"method": {"cutpaste": "random-swap"}}))
    assert "random-swap = the same swaps" in with_random and "cutpaste = CutPaste" not in with_random


def test_every_table_names_how_a_trunk_was_fine_tuned():
    """The row's cells come from results.csv (numpy types, NaN in columns older runs lack)."""
    row = pd.Series(
        {"trunk": "efficientnet_lite0", "pretrained": True, "freeze_steps": np.int64(20)}
        | {"trunk_lr_factor": np.float64(0.03), "trunk_bn": "eval"}
    )
    assert trunk_label(row) == (
        "efficientnet_lite0 (ImageNet, fine-tuned, 20 warm-up steps, trunk lr x0.03, ImageNet BN statistics)"
    )
    older = pd.Series({"trunk": "efficientnet_lite0", "pretrained": True, "freeze_steps": np.nan})
    assert trunk_label(older) == "efficientnet_lite0 (ImageNet, fine-tuned)"
    assert trunk_label(pd.Series({"trunk": "resnet18", "pretrained": False})) == "resnet18 (scratch)"


def _with_operating_points(results: pd.DataFrame, holds: list[bool | None]) -> pd.DataFrame:
    return results.assign(
        threshold_fpr=0.3,
        threshold_fpr_target=0.01,
        threshold_expected_fpr=0.01,
        n_holdout=99,
        threshold_source="validation",
        threshold_precision=0.8,
        threshold_recall=0.7,
        threshold_holds=holds,
    )


def test_operating_points_that_do_not_hold_are_marked_never_printed_plainly():
    results = _results()
    holds = [True] * len(results)
    holds[0] = holds[1] = False  # bottle, cutswap: both seeds flagged more normal images than allowed
    holds[2] = None  # unchecked (no normal test image) is not a failure
    results = _with_operating_points(results, holds)
    table = pivot(results, "threshold_fpr")
    assert table.loc["bottle", "cutswap"] == "30.0 ± 0.0 ✗ 2/2"
    assert table.loc["mean", "cutswap"].endswith("✗ 2/4") and "✗" not in table.loc["mean", "cutpaste"]
    assert table.loc["bottle", "cutpaste"] == "30.0 ± 0.0" and "✗" not in table.loc["screw", "cutswap"]
    assert "✗" not in pivot(results, "image_AUROC").loc["bottle", "cutswap"]
    md = summary_markdown(results, PROV)
    assert "| bottle | 30.0 ± 0.0 ✗ 2/2 |" in md
    assert "the category's normal validation images (99 per category)" in md
    assert "2 of 7 operating points do not hold: cutswap on bottle (2)." in md


def test_a_run_whose_operating_points_all_hold_says_so():
    results = _with_operating_points(_results(), [True] * 8)
    md = summary_markdown(results, PROV)
    assert "0 of 8 operating points do not hold." in md and "✗ 1" not in md
