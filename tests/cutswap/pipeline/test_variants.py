"""Variants as settings: which rows a run has, what each may set, and what is refused (and how it is said)."""

from __future__ import annotations

import pytest

from cutswap.errors import SettingsError
from cutswap.pipeline.settings import load_settings
from cutswap.pipeline.variants import (
    feeds,
    precomputed_chains,
    run_rows,
    variant_specs,
)

METHODS = {"train.methods": ["cutswap", "random-swap", "cutpaste", "patchcore"]}


def _settings(variants: dict, **overrides):
    return load_settings(None, {**METHODS, **overrides, "variants": variants})


def test_rows_are_the_methods_then_each_variant_and_its_control():
    settings = _settings(
        {
            "c4": {"method": "cutswap", "set": {"saliency.levels": ["level4"]}},
            "km": {"method": "cutswap", "set": {"cluster": {"method": "kmeans"}}, "control": False},
            "cp-small": {"method": "cutpaste", "set": {"pairs.area": [0.01, 0.05]}},
            "long": {"method": "cutswap", "set": {"train.steps": 512}},
        }
    )
    rows = {r.name: r for r in run_rows(settings)}
    assert list(rows) == [
        "cutswap",
        "random-swap",
        "cutpaste",
        "patchcore",
        "c4",
        "c4-random-swap",
        "km",
        "cp-small",
        "long",
    ]
    assert rows["c4"].settings.saliency.levels == ["level4"]
    assert rows["c4"].settings.train.methods == ["cutswap"] and not rows["c4"].settings.variants
    control = rows["c4-random-swap"]
    assert (control.method, control.control_of, control.settings.saliency.levels) == (
        "random-swap",
        "c4",
        ["level4"],
    )
    # the nested form of ``set`` reads as the dotted one
    assert rows["km"].overrides == {"cluster.method": "kmeans"}
    # no control where the swap places are the run's (a schedule) or the method has no random twin
    assert "long-random-swap" not in rows and "cp-small-random-swap" not in rows
    assert rows["cutswap"].settings.saliency.levels == ["level1", "level2", "level3", "level4"]
    assert variant_specs(settings) == {
        "c4": ("cutswap", {"saliency.levels": ["level4"]}, "c4-random-swap"),
        "km": ("cutswap", {"cluster.method": "kmeans"}, None),
        "cp-small": ("cutpaste", {"pairs.area": [0.01, 0.05]}, None),
        "long": ("cutswap", {"train.steps": 512}, None),
    }


def test_precomputed_stores_are_counted_once_per_distinct_settings():
    assert precomputed_chains(_settings({})) == 3
    # kmeans: its own cluster and pairs stores; the schedule variant none; the levels variant three
    settings = _settings(
        {
            "km": {"method": "cutswap", "set": {"cluster.method": "kmeans"}},
            "long": {"method": "cutswap", "set": {"train.steps": 512}},
            "c4": {"method": "cutswap", "set": {"saliency.levels": ["level4"]}},
            "cp": {"method": "cutpaste", "set": {"pairs.area": [0.01, 0.05]}},  # reads no bank
        }
    )
    assert precomputed_chains(settings) == 3 + 2 + 3


@pytest.mark.parametrize(
    ("method", "setting", "fed"),
    [
        ("cutswap", "saliency.levels", True),
        ("random-swap", "cluster.k", True),  # its patch sizes are the bank's
        ("cutpaste", "saliency.levels", False),
        ("cutpaste", "pairs.area", True),
        ("cutpaste", "pairs.draws", False),
        ("cutpaste", "train.swaps", False),
        ("cutswap", "train.swaps", True),
        ("cutpaste", "evaluate.sigma", True),
    ],
)
def test_what_feeds_a_method(method, setting, fed):
    assert feeds(method, setting) is fed


#: (variants, the message's part that names the variant and the fix)
REFUSED = {
    "unknown method": ({"v": {"method": "cutswapp", "set": {"cluster.k": 4}}}, "variants.v: unknown method"),
    "trains nothing": (
        {"v": {"method": "patchcore", "set": {"evaluate.sigma": 1.0}}},
        "variants.v: patchcore trains nothing",
    ),
    "method not run": (
        {"v": {"method": "cutpaste-scar", "set": {"train.steps": 9}}},
        "variants.v: cutpaste-scar is not in train.methods",
    ),
    "name of a method": (
        {"random-swap": {"method": "cutswap", "set": {"cluster.k": 4}}},
        "variants.random-swap: the name is taken by a method",
    ),
    "name of a control": (
        {
            "a": {"method": "cutswap", "set": {"cluster.k": 4}},
            "a-random-swap": {"method": "cutswap", "set": {"cluster.k": 5}},
        },
        "variants.a-random-swap: the name is taken by another row",
    ),
    "odd name": ({"a b": {"method": "cutswap", "set": {"cluster.k": 4}}}, "letters, digits, - and _ only"),
    "empty set": ({"v": {"method": "cutswap", "set": {}}}, "variants.v: set is empty"),
    "not a stage": (
        {"v": {"method": "cutswap", "set": {"dataset.image_size": 64}}},
        "is not a stage setting",
    ),
    "unknown setting": (
        {"v": {"method": "cutswap", "set": {"pairs.drawz": 8}}},
        "variants.v: unknown setting pairs.drawz; did you mean pairs.draws?",
    ),
    "execution knob": (
        {"v": {"method": "cutswap", "set": {"train.device": "cpu"}}},
        "variants.v: train.device is set for the whole run",
    ),
    "seeds": (
        {"v": {"method": "cutswap", "set": {"train.seeds": [3]}}},
        "train.seeds is set for the whole run",
    ),
    "another stage": (
        {"v": {"method": "cutpaste", "set": {"cluster.method": "kmeans"}}},
        "variants.v: cluster.method does not feed cutpaste",
    ),
    "invalid value": (
        {"v": {"method": "cutswap", "set": {"cluster.k": 1}}},
        "variants.v: cluster.k: Input should",
    ),
    "unchanged value": (
        {"v": {"method": "cutswap", "set": {"pairs.area": [0.02, 0.15]}}},
        "variants.v: pairs.area is [0.02, 0.15] in this run already",
    ),
    "control of random-swap": (
        {"v": {"method": "random-swap", "set": {"pairs.area": [0.01, 0.05]}, "control": True}},
        "variants.v: random-swap has no random-places counterpart",
    ),
    "two rows alike": (
        {
            "a": {"method": "cutswap", "set": {"cluster.k": 4}, "control": False},
            "b": {"method": "cutswap", "set": {"cluster": {"k": 4}}},
        },
        "variants.b: row b runs cutswap with the same settings as row a",
    ),
    "a control twice": (
        {
            "a": {"method": "cutswap", "set": {"cluster.k": 4}},
            "b": {"method": "random-swap", "set": {"cluster.k": 4}},
        },
        "variants.b: row b runs random-swap with the same settings as row a-random-swap",
    ),
    "control without a twin": (
        {"v": {"method": "cutpaste", "set": {"pairs.area": [0.01, 0.05]}, "control": True}},
        "variants.v: cutpaste has no random-places counterpart",
    ),
}


@pytest.mark.parametrize(("variants", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_a_variant_that_cannot_run_is_refused_by_name(variants, message):
    with pytest.raises(SettingsError) as caught:
        _settings(variants)
    assert message in str(caught.value)


def test_a_variant_counts_in_the_feasibility_of_its_schedule():
    from cutswap.pipeline.feasibility import training_days_lower_bound

    plain = training_days_lower_bound(_settings({}), 1)
    longer = _settings({"long": {"method": "cutswap", "set": {"train.steps": 2560}}})
    # cutswap trains 256 steps of 2 classes; its variant ten times as long
    assert training_days_lower_bound(longer, 1) == pytest.approx(plain * (1 + 10 / 3))
