"""Variants end to end: rows of one run that share every store they can, answered in the ablation block,
and usable as detectors (``cutswap export/predict --method VARIANT``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cutswap.data.builtin.textures import build_textures

pytestmark = pytest.mark.slow

VARIANTS = {
    # another clustering algorithm: new cluster and pairs stores, the saliency maps shared; a control
    "cutswap-kmeans": {"method": "cutswap", "set": {"cluster.method": "kmeans"}},
    # another schedule only: the run's own pairs store, new train and evaluate stores
    "cutswap-long": {"method": "cutswap", "set": {"train.steps": 3}},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_preset) -> tuple[Path, Path]:
    from flows.benchmark import cutswap

    base = tmp_path_factory.mktemp("variants")
    data = build_textures(base / "data", seed=1, image_size=64, n_train=6, n_test_good=3, n_test_defect=1)
    dataset = {"name": "mvtec", "root": str(data), "categories": ["brick"], "image_size": 48}
    preset = tiny_preset(base, "variants", dataset, parallel={"workers": 0})
    config = yaml.safe_load(preset.read_text())
    preset.write_text(yaml.safe_dump({**config, "variants": VARIANTS}))
    return Path(cutswap(str(preset))), base


def _stores(storage: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(storage.glob("*/*/zarr.json")):
        found.setdefault(path.parent.parent.name, []).append(path.parent.name)
    return found


def test_every_row_is_in_the_results_and_shared_stores_are_computed_once(run):
    folder, base = run
    results = pd.read_csv(folder / "results.csv")
    rows = [
        "cutpaste",
        "cutswap",
        "cutswap-kmeans",
        "cutswap-kmeans-random-swap",
        "cutswap-long",
        "random-swap",
    ]
    assert sorted(results["method"]) == rows
    by_row = results.set_index("method")
    assert by_row.loc["cutswap-kmeans", "base_method"] == "cutswap"
    assert by_row.loc["cutswap-kmeans-random-swap", "base_method"] == "random-swap"
    assert by_row.loc["cutswap-kmeans", "cluster_method"] == "kmeans"
    assert by_row.loc["cutswap-kmeans-random-swap", "cluster_method"] == "kmeans"
    assert by_row.loc["cutswap-long", "steps"] == 3 and by_row.loc["cutswap", "steps"] == 2
    # The kmeans rows read their own pair bank; the longer schedule reads the run's own.
    assert by_row.loc["cutswap-long", "pairs_key"] == by_row.loc["cutswap", "pairs_key"]
    assert by_row.loc["cutswap-kmeans", "pairs_key"] != by_row.loc["cutswap", "pairs_key"]
    assert by_row.loc["cutswap-kmeans", "pairs_key"] == by_row.loc["cutswap-kmeans-random-swap", "pairs_key"]
    assert results["saliency_key"].nunique() == 1

    stores = _stores(base / "storage")
    # one saliency store (every row's maps are the same), two cluster and pairs stores (fcm, kmeans), and a
    # training and an evaluation per row
    assert {stage: len(names) for stage, names in stores.items()} == {
        "ingest": 1,
        "saliency": 1,
        "cluster": 2,
        "pairs": 2,
        "train": 6,
        "evaluate": 6,
    }


def test_the_ablation_block_answers_one_question_per_variant_and_control(run):
    folder, _ = run
    comparisons = pd.read_csv(folder / "comparisons.csv")
    ablation = comparisons[comparisons["block"] == "ablation"]
    assert sorted(set(zip(ablation["a"], ablation["b"], strict=True))) == [
        ("cutswap", "cutswap-kmeans"),
        ("cutswap", "cutswap-long"),
        ("cutswap-kmeans", "cutswap-kmeans-random-swap"),
    ]
    kmeans = ablation[ablation["b"] == "cutswap-kmeans"]["question"].iloc[0]
    assert kmeans == "Does the clustering algorithm matter (vs kmeans)?"
    # The benchmark's own questions stay among the methods' rows: no variant there.
    main = comparisons[comparisons["block"] == "main"]
    assert set(main["a"]) | set(main["b"]) <= {"cutswap", "random-swap", "cutpaste"}
    summary = (folder / "summary.md").read_text()
    assert "### Ablations" in summary and "cutswap − cutswap-kmeans" in summary
    assert 'id="ablations"' in (folder / "index.html").read_text()
    provenance = json.loads((folder / "provenance.json").read_text())
    assert set(provenance["settings"]["variants"]) == set(VARIANTS)


def test_show_prints_the_ablation_block(run, capsys):
    from cutswap.app.cli import main

    folder, _ = run
    assert main(["--reports", str(folder.parent), "show", folder.name, "--metric", "image_AUROC"]) == 0
    out = capsys.readouterr().out
    assert "### Ablations" in out and "cutswap-long" in out


def test_a_variant_exports_and_predicts(run, tmp_path, capsys):
    from cutswap.app.cli import main

    folder, base = run
    reports = ["--reports", str(folder.parent)]
    images = sorted((base / "data" / "brick" / "test").rglob("*.png"))[:3]
    out = tmp_path / "predicted"
    argv = [
        *reports,
        "predict",
        folder.name,
        *map(str, images),
        "--method",
        "cutswap-long",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "method cutswap-long (given)" in said
    assert len(pd.read_csv(out / "predictions.csv")) == 3
    exported = tmp_path / "exported"
    assert main([*reports, "export", folder.name, "--method", "cutswap-kmeans", "--out", str(exported)]) == 0
    from cutswap.deploy.export import read_metadata

    provenance = read_metadata(exported / "detector.onnx")["cutswap.provenance"]
    assert (provenance["row"], provenance["method"]) == ("cutswap-kmeans", "cutswap")


def test_a_variant_whose_own_stores_are_missing_fails_alone(run):
    # Rerunning the last stages after adding a variant: its cluster store was never made, so its jobs fail
    # (named) while the report of every other row is written. (Last: it rewrites the module's report.)
    from cutswap.errors import RunFailed
    from flows.benchmark import cutswap

    folder, base = run
    added = {"variants.cutswap-k4": {"method": "cutswap", "set": {"cluster.k": 4}, "control": False}}
    with pytest.raises(RunFailed, match="cluster of brick/cutswap-k4/seed 0 failed"):
        cutswap(str(base / "tiny.yaml"), overrides=added, stages=["train", "evaluate", "report"])
    rows = set(pd.read_csv(folder / "results.csv")["method"])
    assert "cutswap-k4" not in rows and {"cutswap", "cutswap-long", "cutswap-kmeans"} <= rows
    failed = json.loads((folder / "provenance.json").read_text())["failed_jobs"]
    assert [(f["method"], f["stage"]) for f in failed] == [("cutswap-k4", "cluster")]
