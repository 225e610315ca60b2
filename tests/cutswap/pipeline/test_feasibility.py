"""``check_feasible``: what the image counts make impossible is refused from the sample table alone, and
what a test set cannot measure is said, before any stage runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cutswap.errors import DatasetError, SettingsError
from cutswap.pipeline.feasibility import _held_out, check_feasible, training_days_lower_bound
from cutswap.pipeline.settings import load_settings
from cutswap.score.detector import threshold_split

REPO = Path(__file__).parents[3]
DEMO = REPO / "configs" / "demo.yaml"


def table(
    n_train: int = 20, n_val: int = 0, n_good: int = 5, n_bad: int = 5, category: str = "brick"
) -> pd.DataFrame:
    rows = [("train", 0)] * n_train + [("val", 0)] * n_val + [("test", 0)] * n_good + [("test", 1)] * n_bad
    return pd.DataFrame(
        {
            "category": category,
            "split": [s for s, _ in rows],
            "label": [label for _, label in rows],
            "defect_type": ["good" if label == 0 else "crack" for _, label in rows],
            "image_path": [f"{category}/{i}.png" for i in range(len(rows))],
            "mask_path": None,
        }
    )


def settings(**overrides):
    return load_settings(DEMO, {"train.batch_size": "4", **overrides})


def test_a_category_with_one_training_image_is_refused_naming_it():
    with pytest.raises(DatasetError, match=r"brick \(1 training images, 1 held out\).*validation/good"):
        check_feasible(settings(), table(n_train=1))
    # With validation images nothing is held out of the training images: two are enough for the fit.
    assert check_feasible(settings(**{"train.batch_size": "2"}), table(n_train=2, n_val=3)) == []


def test_a_batch_larger_than_the_smallest_category_is_refused():
    both = pd.concat([table(20), table(6, category="grass")])
    with pytest.raises(
        SettingsError, match=r"train.batch_size 8 is larger than the 6 training images of category 'grass'"
    ):
        check_feasible(settings(**{"train.batch_size": "8"}), both)
    # Methods that train nothing draw no batch.
    untrained = settings(**{"train.batch_size": "8", "train.methods": "[imagenet-gde, patchcore]"})
    assert check_feasible(untrained, both) == []


def test_a_schedule_beyond_max_days_is_refused_and_can_be_allowed():
    huge = {"train.steps": str(10**12)}
    with pytest.raises(SettingsError, match=r"train.steps 1000000000000 .* above train.max_days 7"):
        check_feasible(settings(**huge), table())
    days = training_days_lower_bound(settings(**huge), 1)
    assert check_feasible(settings(**huge, **{"train.max_days": str(days * 1.01)}), table()) == []
    # The demo's own schedule (3 trained methods, 3 seeds, 40 steps) is seconds at that ceiling.
    assert training_days_lower_bound(load_settings(DEMO), 3) < 1e-3


def test_a_lower_bound_counts_every_trained_image():
    cfg = settings(
        **{"train.steps": "100", "train.seeds": "[0, 1]", "train.methods": "[cutswap, imagenet-gde]"}
    )
    # cutswap is binary: batch_size normal plus batch_size negatives per step; imagenet-gde trains nothing.
    images = 100 * 4 * 2 * 2 * 3  # steps x batch x classes x seeds x categories
    rate = 20_000 * (224 / cfg.dataset.image_size) ** 2
    assert training_days_lower_bound(cfg, 3) == pytest.approx(images / rate / 86_400)


@pytest.mark.parametrize(
    ("counts", "says"),
    [
        ({"n_bad": 0}, "no anomalous image, so image and pixel AUROC"),
        ({"n_good": 0}, "no normal image, so image AUROC and the false-positive rate"),
    ],
)
def test_what_a_test_set_cannot_measure_is_a_warning_naming_the_category(counts, says):
    warnings = check_feasible(settings(), table(**counts))
    assert len(warnings) == 1 and warnings[0].startswith("category 'brick'") and says in warnings[0]


@pytest.mark.slow  # one process start, no Prefect
def test_the_command_line_refuses_before_any_stage(tmp_path):
    """`cutswap run` on a dataset whose category has one training image: exit 2 in one line, no store."""
    root = tmp_path / "data" / "bottle"
    for part in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
        (root / part).mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (32, 32)).save(root / "train/good/000.png")
    Image.new("RGB", (32, 32)).save(root / "test/good/000.png")
    Image.new("RGB", (32, 32)).save(root / "test/crack/000.png")
    Image.new("L", (32, 32)).save(root / "ground_truth/crack/000_mask.png")
    preset = tmp_path / "one.yaml"
    preset.write_text(
        yaml.safe_dump(
            {
                "run": "one",
                "storage_root": str(tmp_path / "storage"),
                "reports_root": str(tmp_path / "reports"),
                "dataset": {"name": "mvtec", "root": str(tmp_path / "data"), "image_size": 32},
                "train": {"baseline_trunk": "efficientnet_lite0", "batch_size": 2},
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--preset", str(preset)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert (
        done.stderr.startswith("error: too few normal training images")
        and "bottle (1 training" in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not any((tmp_path / "storage").rglob("*.json"))  # no store begun


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.1, 0.25, 0.5])
def test_the_hold_out_counted_here_is_the_one_evaluate_holds_out(fraction):
    """Preflight counts the hold-out without torch; it must agree with ``threshold_split`` (its twin)."""
    for n in range(1, 60):
        try:
            held = len(threshold_split(np.arange(n), fraction)[1])
        except SettingsError:  # evaluate refuses it: so must preflight
            assert n - _held_out(n, fraction) < 2, (n, fraction)
        else:
            assert held == _held_out(n, fraction), (n, fraction)
