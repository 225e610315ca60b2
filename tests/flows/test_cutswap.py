"""The flow end to end, in-process (Prefect's ephemeral API), on a tiny dataset built on disk."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from cutswap.data.textures import build_textures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("flow")
    data = build_textures(base / "data", seed=1, image_size=64, n_train=6, n_test_good=3, n_test_defect=1)
    cfg = {
        "run": "tiny",
        "storage_root": str(base / "storage"),
        "reports_root": str(base / "reports"),
        "dataset": {"name": "mvtec", "root": str(data), "categories": ["brick"], "image_size": 48},
        "saliency": {"backbone": "efficientnet_lite0", "batch_size": 4},
        "pairs": {"draws": 4},
        "train": {
            "methods": ["cutswap", "cutpaste", "random-swap"],
            "seeds": [0],
            "steps": 2,
            "batch_size": 4,
            "head_dims": [16],
            "log_every": 1,
            "device": "cpu",
        },
        "parallel": {"workers": 0},
    }
    path = base / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _stores(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("*/*/zarr.json")}


def test_flow_runs_reuses_and_recomputes_only_downstream(preset):
    from flows.cutswap import cutswap

    cfg = yaml.safe_load(preset.read_text())
    storage = Path(cfg["storage_root"])
    folder = Path(cutswap(str(preset)))
    results = pd.read_csv(folder / "results.csv")
    assert sorted(results["method"]) == ["cutpaste", "cutswap", "random-swap"]
    assert results["image_AUROC"].between(0, 1).all()
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
    from flows.cutswap import main

    code = main(["--preset", str(preset), "--set", "cluster.k=4", "--stages", "pairs"])
    assert code == 2
