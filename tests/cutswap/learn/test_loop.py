from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import cutswap.learn.loop as training
from cutswap.learn.execution import resolve_amp
from cutswap.learn.loop import class_slices, train_step
from cutswap.method.ops import swap_patches
from cutswap.method.registry import (
    METHODS,
    REGISTRY,
    SWAP_METHODS,
    UNTRAINED_METHODS,
    method_seeds,
    num_classes,
)
from cutswap.method.sampler import NegativeSampler, draw_batch
from cutswap.pipeline.settings import PairSettings, TrainSettings
from cutswap.pipeline.stages.train import execution_of, model_spec_of, recipe_of


def _train(images, method, settings, pairs, seed=0, bank=None, progress=None, *, checkpoint=None, parts=1):
    """The library loop, given settings mapped onto its arguments as the train stage maps them."""
    return training.train_classifier(
        images,
        method,
        model_spec_of(settings, method),
        recipe_of(settings),
        execution_of(settings),
        seed,
        bank,
        swaps=settings.swaps,
        area=tuple(pairs.area),
        aspect=tuple(pairs.aspect),
        progress=progress,
        checkpoint=checkpoint,
        parts=parts,
    )


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 32, dtype=np.float32)
    stripes = np.broadcast_to(base[None, :, None], (32, 32, 3))
    return np.stack([np.clip(stripes + rng.normal(0, 8, stripes.shape), 0, 255) for _ in range(12)]).astype(
        np.uint8
    )


BANK = np.tile(np.array([4, 6, 0, 0, 10, 20], np.int32), (12, 4, 3, 1))
SMALL_BANK = np.tile(np.array([4, 6, 0, 0, 8, 8], np.int32), (12, 4, 3, 1))


@pytest.fixture
def small(images):
    """16 px images for the tests that train: ResNet-18 still ends at 1x1, at a fraction of the cost."""
    return np.ascontiguousarray(images[:, ::2, ::2])


def _settings(**kw):
    return TrainSettings(
        **{"steps": 2, "batch_size": 4, "head_dims": [32], "log_every": 1, "device": "cpu", **kw}
    )


def _bank(method):
    return SMALL_BANK if method in SWAP_METHODS else None


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_every_setting_method_has_kinds():
    assert set(METHODS) == set(REGISTRY)
    assert [num_classes(m) for m in METHODS] == [2, 3, 2, 2, 3, 2, 1, 1]


def test_the_no_training_baseline_runs_once_and_is_not_trained(images):
    assert method_seeds("imagenet-gde", [4, 5, 6]) == [4]
    assert method_seeds("cutswap", [4, 5, 6]) == [4, 5, 6]
    with pytest.raises(ValueError, match="imagenet-gde trains nothing"):
        _train(images, "imagenet-gde", _settings(), PairSettings(), seed=0)


@pytest.mark.parametrize("method", [m for m in METHODS if m not in UNTRAINED_METHODS])
def test_each_method_trains_logs_and_is_deterministic(small, method):
    """Same seed, same machine, CPU: identical weights (hence identical embeddings and scores)."""
    a = _train(small, method, _settings(), PairSettings(), seed=0, bank=_bank(method))
    b = _train(small, method, _settings(), PairSettings(), seed=0, bank=_bank(method))
    assert [e["step"] for e in a.log] == [1.0, 2.0]
    assert all(np.isfinite(e["loss"]) and e["images_per_s"] > 0 for e in a.log)
    assert not a.model.training
    assert a.num_classes == num_classes(method) == a.model.classifier.out_features
    assert _same(a.model.state_dict(), b.model.state_dict())
    assert [e["loss"] for e in a.log] == [e["loss"] for e in b.log]


def test_another_seed_gives_other_weights(small):
    a = _train(small, "cutpaste", _settings(steps=1), PairSettings(), seed=3).model.state_dict()
    c = _train(small, "cutpaste", _settings(steps=1), PairSettings(), seed=4).model.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].dtype.is_floating_point)


@pytest.mark.parametrize("method", SWAP_METHODS)
def test_swap_methods_need_a_bank(images, method):
    with pytest.raises(ValueError, match=f"{method} needs a pair bank"):
        _train(images, method, _settings(), PairSettings(), seed=0)


def test_unknown_method_is_refused(images):
    with pytest.raises(ValueError, match="unknown method 'cutmix'"):
        _train(images, "cutmix", _settings(), PairSettings(), seed=0)


def test_cutswap_negatives_come_from_the_bank(images):
    batch = torch.from_numpy(images[:2]).permute(0, 3, 1, 2).float() / 255
    bank = torch.tensor([[[4, 6, 0, 0, 10, 20]], [[2, 2, 30, 30, 0, 0]]])
    out = NegativeSampler("cutswap", bank)(batch, torch.tensor([0, 1]), torch.Generator())
    torch.testing.assert_close(out[0, :, 0:4, 0:6], batch[0, :, 10:14, 20:26])
    torch.testing.assert_close(out[1, :, 0:2, 0:2], batch[1, :, 30:32, 30:32])


def test_per_level_swaps_one_draw_of_every_level_in_order(images):
    batch = torch.from_numpy(images[:2]).permute(0, 3, 1, 2).float() / 255
    levels = torch.tensor([[4, 6, 0, 0, 10, 20], [3, 3, 20, 20, 2, 25], [5, 2, 8, 0, 25, 30]])
    bank = levels.view(1, 3, 1, 6).expand(2, 3, 1, 6)  # one draw per level: the draw is fixed
    out = NegativeSampler("random-swap", bank, swaps="per-level")(
        batch, torch.tensor([0, 1]), torch.Generator()
    )
    expected = batch
    for level in levels:
        expected = swap_patches(expected, level.expand(2, 6))
    torch.testing.assert_close(out, expected)


def test_one_swap_draws_a_level_and_draw_at_random(images):
    batch = torch.from_numpy(images[:1]).permute(0, 3, 1, 2).float().div(255).expand(64, 3, 32, 32)
    levels = torch.tensor([[4, 6, 0, 0, 10, 20], [3, 3, 20, 20, 2, 25]])
    bank = levels.view(1, 2, 1, 6)
    out = NegativeSampler("cutswap", bank)(batch, torch.zeros(64, dtype=torch.long), torch.Generator())
    singles = torch.stack([swap_patches(batch[:1], lv.view(1, 6))[0] for lv in levels])
    which = [[torch.equal(o, s) for s in singles] for o in out]
    assert all(sum(w) == 1 for w in which) and {w.index(True) for w in which} == {0, 1}


@pytest.mark.parametrize("method", ["cutpaste-3way", "cutswap-3way"])
def test_three_way_batches_hold_one_block_per_class(images, method):
    data = torch.from_numpy(images).permute(0, 3, 1, 2)
    sampler = NegativeSampler(method, torch.from_numpy(BANK).long())
    inputs, labels = draw_batch(data, sampler, 5, torch.Generator().manual_seed(0))
    assert inputs.shape == (15, 3, 32, 32)
    assert labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5


def test_class_slices_take_an_equal_share_of_every_class():
    parts = class_slices(3, 5, 2)
    assert [rows.tolist() for rows, _ in parts] == [[0, 1, 5, 6, 10, 11], [2, 3, 4, 7, 8, 9, 12, 13, 14]]
    assert sum(w for _, w in parts) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        class_slices(2, 4, 5)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return x, self.fc(x.flatten(1))


def test_micro_batches_give_the_whole_batch_gradient():
    torch.manual_seed(0)
    inputs, labels = torch.randn(15, 3, 2, 2), torch.arange(3).repeat_interleave(5)
    grads, losses = [], []
    for parts in (None, class_slices(3, 5, 2), class_slices(3, 5, 5)):
        torch.manual_seed(1)
        model = _Tiny()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        loss, logits, seen = train_step(model, inputs, labels, opt, scaler, None, parts)
        assert logits.shape == (15, 3) and sorted(seen.tolist()) == labels.tolist()
        grads.append(model.fc.weight.grad.clone())
        losses.append(loss)
    for g, loss in zip(grads[1:], losses[1:], strict=True):
        torch.testing.assert_close(g, grads[0])
        torch.testing.assert_close(loss, losses[0])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_runs_the_cuda_code_path_on_cpu(small, amp):
    """The autocast (and for fp16 the loss scaler) path of a GPU run, exercised on the CPU."""
    dtype = resolve_amp(amp, torch.device("cpu"))
    model = training.build_model([32], num_classes=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    inputs, labels = torch.rand(4, 3, 16, 16), torch.tensor([0, 0, 1, 1])
    _, logits, _ = train_step(model, inputs, labels, opt, scaler, dtype)
    assert logits.dtype == dtype
    result = _train(small, "cutpaste", _settings(amp=amp, steps=1), PairSettings(), seed=0)
    assert result.amp == amp and all(np.isfinite(e["loss"]) for e in result.log)


def test_amp_auto_is_off_on_cpu():
    assert resolve_amp("auto", torch.device("cpu")) is None
    assert resolve_amp("off", torch.device("cpu")) is None


def test_channels_last_runs_on_cpu(small):
    result = _train(small, "cutpaste", _settings(channels_last=True), PairSettings(), seed=0)
    assert result.channels_last
    assert result.model.trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(np.isfinite(e["loss"]) for e in result.log)


def test_out_of_memory_halves_the_micro_batch_and_retries_the_same_step(small, monkeypatch):
    """An OOM on a step reruns that step in smaller parts; the run then equals one started that way."""
    real_build = training.build_model
    limit = [4]  # rows a forward pass may take before "running out of memory"

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        forward = model.forward

        def limited(x):
            if x.shape[0] > limit[0]:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return forward(x)

        model.forward = limited
        return model

    settings = _settings(steps=2)
    reference = _train(small, "cutpaste", settings, PairSettings(), seed=0, parts=2)
    monkeypatch.setattr(training, "build_model", build)
    retried = _train(small, "cutpaste", settings, PairSettings(), seed=0)
    assert (retried.parts, retried.oom_retries) == (2, 1)
    assert _same(retried.model.state_dict(), reference.model.state_dict())
    limit[0] = 1  # not even one image per class fits: the error reaches the caller
    with pytest.raises(torch.OutOfMemoryError):
        _train(small, "cutpaste", settings, PairSettings(), seed=0)


_KILLED_RUN = """
import os, sys, time
import numpy as np
import torch
from cutswap.pipeline.settings import PairSettings, TrainSettings
from cutswap.pipeline.stages.train import execution_of, model_spec_of, recipe_of
from cutswap.learn.loop import train_classifier

torch.set_num_threads(int(sys.argv[4]))  # the parent's: results depend on the summation order
images = np.load(sys.argv[1])
settings = TrainSettings(**{settings!r})

def progress(entry):
    print("step", int(entry["step"]), flush=True)
    if entry["step"] >= 4:  # past the checkpoint at step 2: wait here to be killed
        time.sleep(3600)

train_classifier(images, "cutswap-3way", model_spec_of(settings, "cutswap-3way"), recipe_of(settings),
                 execution_of(settings), 0, np.load(sys.argv[2]), swaps=settings.swaps, progress=progress,
                 checkpoint=sys.argv[3])
"""


def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_weights(small, tmp_path):
    """SIGKILL a CPU run in a subprocess after its step-2 checkpoint, at step 4; resuming redoes steps 3-6
    and ends with exactly the weights, and the losses, of an uninterrupted run."""
    kw = {
        "steps": 6,
        "batch_size": 2,
        "head_dims": [32],
        "log_every": 2,
        "device": "cpu",
        "checkpoint_every": 2,
    }
    np.save(tmp_path / "small.npy", small)
    np.save(tmp_path / "bank.npy", SMALL_BANK)
    checkpoint = tmp_path / "work" / "resume.pt"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(_KILLED_RUN.replace("{settings!r}", repr(kw))))
    child = subprocess.Popen(
        [
            sys.executable,
            str(script),
            *(str(p) for p in (tmp_path / "small.npy", tmp_path / "bank.npy", checkpoint)),
            str(torch.get_num_threads()),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    seen = []
    for line in child.stdout:
        seen.append(line.strip())
        if line.strip() == "step 4":
            os.kill(child.pid, signal.SIGKILL)
            break
    assert child.wait() == -signal.SIGKILL, seen
    assert seen == ["step 2", "step 4"] and checkpoint.is_file()

    settings = TrainSettings(**kw)
    resumed = _train(small, "cutswap-3way", settings, PairSettings(), 0, SMALL_BANK, checkpoint=checkpoint)
    whole = _train(small, "cutswap-3way", settings, PairSettings(), 0, SMALL_BANK)
    assert resumed.resumed_from == 2 and whole.resumed_from is None
    assert _same(resumed.model.state_dict(), whole.model.state_dict())
    assert [e["loss"] for e in resumed.log] == [e["loss"] for e in whole.log]
    assert [e["step"] for e in resumed.log] == [2.0, 4.0, 6.0]


def test_a_checkpoint_of_another_run_is_ignored(small, tmp_path):
    checkpoint = tmp_path / "resume.pt"
    _train(
        small, "cutpaste", _settings(steps=2, checkpoint_every=1), PairSettings(), 1, checkpoint=checkpoint
    )
    assert checkpoint.is_file()
    fresh = _train(small, "cutpaste", _settings(steps=2), PairSettings(), 0)
    other = _train(small, "cutpaste", _settings(steps=2), PairSettings(), 0, checkpoint=checkpoint)
    assert other.resumed_from is None
    assert _same(fresh.model.state_dict(), other.model.state_dict())


def test_training_separates_cutpaste_from_normal(small):
    """The classifier must learn the task: negatives recognised well above chance after training."""
    result = _train(
        small, "cutpaste", _settings(steps=60, batch_size=8, log_every=20, lr=0.01), PairSettings(), seed=0
    )
    assert result.log[-1]["loss"] < result.log[0]["loss"]


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["cutswap-3way", "cutpaste-3way"])
def test_cuda_run_uses_bf16_and_channels_last(images, method):
    settings = _settings(device="cuda", steps=4)
    result = _train(images, method, settings, PairSettings(), 0, _bank(method))
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert result.amp == expected and result.channels_last
    assert next(result.model.parameters()).is_cuda
    assert all(np.isfinite(e["loss"]) for e in result.log)


@pytest.mark.gpu
def test_cuda_fp16_scaler_and_resume(images, tmp_path):
    settings = _settings(device="cuda", steps=4, amp="fp16", checkpoint_every=2)
    checkpoint = tmp_path / "resume.pt"
    first = _train(images, "cutpaste", settings, PairSettings(), 0, checkpoint=checkpoint)
    again = _train(images, "cutpaste", settings, PairSettings(), 0, checkpoint=checkpoint)
    assert first.amp == "fp16" and again.resumed_from == 2
    assert all(np.isfinite(e["loss"]) for e in again.log)


@pytest.mark.gpu
def test_cuda_oom_retry_on_a_real_device(images):
    """A batch far too large for the device: the trainer splits it until it fits, or says it cannot."""
    free, _ = torch.cuda.mem_get_info()
    side = 1024
    per_image = 3 * side * side * 4 * 60  # rough activation bytes of ResNet-18 training per image (fp32)
    batch = int(min(512, max(8, 2 * free // per_image)))
    big = np.random.default_rng(0).integers(0, 255, (batch, side, side, 3), dtype=np.uint8)
    settings = _settings(device="cuda", steps=1, batch_size=batch, amp="off", channels_last=False)
    try:
        result = _train(big, "cutpaste", settings, PairSettings(), 0)
    except torch.OutOfMemoryError:
        pytest.skip("even one image per class does not fit")
    assert result.oom_retries >= 1 and result.parts > 1


def _trunk_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.trunk.state_dict().items()}


def _imagenet_trunk() -> dict[str, torch.Tensor]:
    from cutswap.learn.models import build_trunk

    return {
        k: v.clone() for k, v in build_trunk("efficientnet_lite0", pretrained=True)[0].state_dict().items()
    }


def test_during_the_warm_up_the_trunk_stays_bit_identical_to_imagenet(small, monkeypatch):
    """Weights and batch-norm statistics alike, checked after the last warm-up step; the head trains
    meanwhile, and the step after the warm-up trains the trunk too."""
    imagenet = _imagenet_trunk()
    nets, seen = [], {}
    real_mode = training.set_trunk_mode
    monkeypatch.setattr(training, "set_trunk_mode", lambda net, *a: nets.append(net) or real_mode(net, *a))

    def snapshot(entry):
        seen[int(entry["step"])] = (
            _trunk_state(nets[0]),
            {k: v.clone() for k, v in nets[0].head.state_dict().items()},
        )

    cfg = _settings(steps=4, freeze_steps=3, trunk="efficientnet_lite0", pretrained=True, trunk_lr_factor=0.1)
    result = _train(small, "cutpaste", cfg, PairSettings(), progress=snapshot)
    for step in (1, 2, 3):
        assert _same(seen[step][0], imagenet), step
    assert not _same(seen[1][1], seen[3][1])  # the head trained during the warm-up
    assert not _same(_trunk_state(result.model), imagenet)  # step 4 trained the trunk
    assert all(p.requires_grad for p in result.model.parameters())


def test_the_trunk_learns_at_its_factor_and_eval_batch_norm_keeps_imagenet_statistics(small, monkeypatch):
    groups = []
    real_sgd = torch.optim.SGD
    monkeypatch.setattr(
        torch.optim,
        "SGD",
        lambda params, **kw: groups.append([dict(g) for g in params]) or real_sgd(params, **kw),
    )
    imagenet = _imagenet_trunk()
    cfg = _settings(
        steps=2, trunk="efficientnet_lite0", pretrained=True, trunk_lr_factor=0.25, trunk_bn="eval"
    )
    model = _train(small, "cutpaste", cfg, PairSettings()).model
    head, trunk = groups[0]
    assert (head["lr"], trunk["lr"]) == (cfg.lr, cfg.lr * 0.25)
    assert {id(p) for p in trunk["params"]} == {id(p) for p in model.trunk.parameters()}
    state = _trunk_state(model)
    stats = [k for k in state if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(state[k], imagenet[k]) for k in stats)
    weights = [k for k in state if k.endswith("weight")]
    assert not all(torch.equal(state[k], imagenet[k]) for k in weights)  # the trunk still trained
