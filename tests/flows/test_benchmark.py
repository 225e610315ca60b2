"""The flow end to end, in-process (Prefect's ephemeral API), on a tiny dataset built on disk."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr

from cutswap.data.builtin.textures import build_textures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def preset(tmp_path_factory, tiny_preset) -> Path:
    base = tmp_path_factory.mktemp("flow")
    data = build_textures(base / "data", seed=1, image_size=64, n_train=6, n_test_good=3, n_test_defect=1)
    dataset = {"name": "mvtec", "root": str(data), "categories": ["brick"], "image_size": 48}
    return tiny_preset(base, "tiny", dataset, parallel={"workers": 0})


def _stores(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("*/*/zarr.json")}


def test_flow_runs_reuses_and_recomputes_only_downstream(preset):
    from flows.benchmark import cutswap

    cfg = yaml.safe_load(preset.read_text())
    storage = Path(cfg["storage_root"])
    folder = Path(cutswap(str(preset)))
    results = pd.read_csv(folder / "results.csv")
    assert sorted(results["method"]) == ["cutpaste", "cutswap", "random-swap"]
    assert results["image_AUROC"].between(0, 1).all()
    # Every setting a train store is keyed by (what changes the weights) is a column.
    from cutswap.pipeline.settings import load_settings
    from cutswap.pipeline.stages.train import train_key

    keyed = set(train_key(load_settings(preset), "random-swap", 0)) - {"pairs", "levels"}
    assert keyed <= set(results.columns), keyed - set(results.columns)
    assert {"pair_area", "pair_aspect", "pair_seed", "cluster_k", "levels", "localization"} <= set(
        results.columns
    )
    assert (folder / "summary.md").read_text().count("brick") >= 1
    assert (folder / "figures" / "brick.png").stat().st_size > 0
    first = _stores(storage)
    assert {k.split("/")[0] for k in first} == {"ingest", "saliency", "cluster", "pairs", "train", "evaluate"}

    # A second run recomputes nothing.
    cutswap(str(preset))
    assert _stores(storage) == first

    # A changed training setting adds train and evaluate stores; everything upstream is untouched.
    cutswap(str(preset), overrides={"train.steps": 3})
    after = _stores(storage)
    new = {k.split("/")[0] for k in set(after) - set(first)}
    assert new == {"train", "evaluate"}
    assert all(after[k] == v for k, v in first.items())

    # Rerunning only the last stages with a new seed reuses upstream; the report holds that seed's rows.
    folder = Path(
        cutswap(str(preset), overrides={"train.seeds": [7]}, stages=["train", "evaluate", "report"])
    )
    assert set(pd.read_csv(folder / "results.csv")["seed"]) == {7}
    assert all(_stores(storage)[k] == v for k, v in first.items())


def test_reuse_of_a_missing_stage_is_a_clear_error(preset):
    from flows.benchmark import main

    code = main(["--preset", str(preset), "--set", "cluster.k=4", "--stages", "pairs"])
    assert code == 2


def test_jobs_on_a_dask_cluster_give_the_in_process_results(preset, tmp_path):
    """The same run with training and evaluation as jobs on 2 local workers: same scores, and the jobs'
    progress lines reach the Prefect task log."""
    from flows.benchmark import cutswap

    cfg = yaml.safe_load(preset.read_text())
    in_process = pd.read_csv(Path(cutswap(str(preset))) / "results.csv")
    overrides = {"parallel.workers": 2, "storage_root": str(tmp_path / "storage"), "run": "tiny-dask"}
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("prefect.task_runs").addHandler(handler)
    try:
        folder = Path(cutswap(str(preset), overrides=overrides))
    finally:
        logging.getLogger("prefect.task_runs").removeHandler(handler)
    on_cluster = pd.read_csv(folder / "results.csv")
    key = ["category", "method", "seed"]
    a, b = (t.sort_values(key).reset_index(drop=True) for t in (in_process, on_cluster))
    pd.testing.assert_frame_equal(a[key + ["image_AUROC"]], b[key + ["image_AUROC"]])
    # Each of 2 workers gives torch half the cores, so float sums run in another order than in-process:
    # the maps, and so the pixel metrics, agree to about 1e-4, not bit for bit.
    np.testing.assert_allclose(a["pixel_AUROC"], b["pixel_AUROC"], atol=1e-3)
    steps = cfg["train"]["steps"]
    relayed = [r for r in records if f"step {steps}/{steps}" in r.getMessage()]
    assert len(relayed) == len(cfg["train"]["methods"])
    stores = [
        *(tmp_path / "storage").glob("train/*/zarr.json"),
        *(tmp_path / "storage").glob("evaluate/*/zarr.json"),
    ]
    workers = {zarr.open_group(p.parent, mode="r").attrs["worker"] for p in stores}
    assert len(stores) == 2 * len(cfg["train"]["methods"])
    assert workers <= {"0", "1"} and workers, workers


def test_the_report_answers_its_questions_with_the_baseline_and_computed_comparisons(preset, tmp_path):
    """Two seeds and the no-training baseline: the baseline runs once per category, every table names the
    trunks, and comparisons.csv holds the paired comparisons that the summary prints."""
    from flows.benchmark import cutswap

    overrides = {
        "run": "tiny-questions",
        "storage_root": str(tmp_path / "storage"),
        "train.methods": ["cutswap", "random-swap", "imagenet-gde"],
        "train.seeds": [0, 1],
        "train.baseline_trunk": "efficientnet_lite0",
    }
    folder = Path(cutswap(str(preset), overrides=overrides))
    results = pd.read_csv(folder / "results.csv")
    assert sorted(zip(results["method"], results["seed"], strict=True)) == [
        ("cutswap", 0), ("cutswap", 1), ("imagenet-gde", 0), ("random-swap", 0), ("random-swap", 1)
    ]  # fmt: skip
    baseline = results[results["method"] == "imagenet-gde"].iloc[0]
    assert baseline["trunk"] == "efficientnet_lite0" and bool(baseline["pretrained"])
    trained = results[results["method"] != "imagenet-gde"]
    assert pd.isna(baseline["steps"]) and set(trained["steps"]) == {2}
    comparisons = pd.read_csv(folder / "comparisons.csv")
    assert list(comparisons.columns) == [
        "block", "question", "role", "a", "b", "metric", "pairing", "n_pairs", "mean_diff", "ci_low",
        "ci_high", "se", "df", "detectable", "test_noise", "flag", "p_value", "p_adjusted", "answer",
        "categories", "categories_a", "categories_b", "like_these_low", "like_these_high",
        "like_these_answer", "p_improve", "p_improve_low", "p_improve_high", "wins", "ties", "losses",
        "verdict",
    ]  # fmt: skip
    roles = comparisons.set_index(["a", "b", "metric"])["role"]
    assert roles[("cutswap", "random-swap", "image_AUROC")] == "confirmatory"
    assert (roles.drop(("cutswap", "random-swap", "image_AUROC")) == "exploratory").all()
    assert set(comparisons["block"]) == {"main"}  # no variants, no ablation block
    # every answer holds the test set's noise, from the evaluate stores' scores (and maps for pixel metrics)
    assert comparisons["test_noise"].all() and (comparisons["detectable"] > 0).all()
    auroc = comparisons[comparisons["metric"] == "image_AUROC"].set_index(["a", "b"])
    assert {("cutswap", "random-swap"), ("cutswap", "imagenet-gde"), ("random-swap", "imagenet-gde")} <= set(
        auroc.index
    )
    assert (auroc["n_pairs"] == 2).all()  # the baseline's one value pairs with both seeds
    assert (auroc[["wins", "ties", "losses"]].sum(axis=1) == auroc["n_pairs"]).all()
    diff = results.pivot_table("image_AUROC", "seed", "method")
    expected = (diff["cutswap"] - diff["imagenet-gde"].dropna().iloc[0]).mean()
    assert auroc.loc[("cutswap", "imagenet-gde"), "mean_diff"] == pytest.approx(expected)
    summary = (folder / "summary.md").read_text()
    assert "imagenet-gde: efficientnet_lite0 (ImageNet, frozen: no training)" in summary
    assert all(v in summary for v in auroc["verdict"])


def test_every_shipped_preset_is_valid():
    from cutswap.pipeline.settings import load_settings

    presets = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
    assert {p.stem for p in presets} >= {"demo", "mnist", "mvtec-ad", "visa"}
    for path in presets:
        settings = load_settings(path)
        assert settings.run and settings.train.methods, path
