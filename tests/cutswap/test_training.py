from __future__ import annotations

import numpy as np
import pytest
import torch

from cutswap.settings import PairSettings, TrainSettings
from cutswap.training import NegativeSampler, train_classifier


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 32, dtype=np.float32)
    stripes = np.broadcast_to(base[None, :, None], (32, 32, 3))
    return np.stack([np.clip(stripes + rng.normal(0, 8, stripes.shape), 0, 255) for _ in range(12)]).astype(
        np.uint8
    )


def _settings(**kw):
    return TrainSettings(
        **{"steps": 6, "batch_size": 4, "head_dims": [32], "log_every": 2, "device": "cpu", **kw}
    )


@pytest.mark.parametrize("method", ["cutswap", "cutpaste", "random-swap"])
def test_each_method_trains_and_logs(images, method):
    bank = np.tile(np.array([4, 6, 0, 0, 10, 20], np.int32), (12, 4, 3, 1)) if method != "cutpaste" else None
    result = train_classifier(images, method, _settings(), PairSettings(), seed=0, bank=bank)
    assert [e["step"] for e in result.log] == [2.0, 4.0, 6.0]
    assert all(np.isfinite(e["loss"]) and e["images_per_s"] > 0 for e in result.log)
    assert not result.model.training


def test_same_seed_same_weights_on_cpu(images):
    a = train_classifier(images, "cutpaste", _settings(), PairSettings(), seed=3).model.state_dict()
    b = train_classifier(images, "cutpaste", _settings(), PairSettings(), seed=3).model.state_dict()
    c = train_classifier(images, "cutpaste", _settings(), PairSettings(), seed=4).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].dtype.is_floating_point)


def test_swap_methods_need_a_bank(images):
    with pytest.raises(ValueError, match="random-swap needs a pair bank"):
        train_classifier(images, "random-swap", _settings(), PairSettings(), seed=0)


def test_cutswap_negatives_come_from_the_bank(images):
    batch = torch.from_numpy(images[:2]).permute(0, 3, 1, 2).float() / 255
    bank = torch.tensor([[[4, 6, 0, 0, 10, 20]], [[2, 2, 30, 30, 0, 0]]])
    out = NegativeSampler("cutswap", PairSettings(), bank)(batch, torch.tensor([0, 1]), torch.Generator())
    torch.testing.assert_close(out[0, :, 0:4, 0:6], batch[0, :, 10:14, 20:26])
    torch.testing.assert_close(out[1, :, 0:2, 0:2], batch[1, :, 30:32, 30:32])


def test_training_separates_cutpaste_from_normal(images):
    """The classifier must learn the task: negatives recognised well above chance after training."""
    result = train_classifier(
        images, "cutpaste", _settings(steps=60, batch_size=8, log_every=20, lr=0.01), PairSettings(), seed=0
    )
    assert result.log[-1]["loss"] < result.log[0]["loss"]
