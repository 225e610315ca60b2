"""DDP training through torchrun, on the CPU with gloo and 2 processes (issue 4, point 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cutswap.learn.ddp import PROGRESS_PREFIX, DistributedTrainingError, command, launch
from cutswap.learn.execution import resolve_execution
from cutswap.learn.loop import ModelSpec, Recipe, train_classifier
from cutswap.pipeline.readers import load_model
from cutswap.pipeline.settings import Settings, TrainSettings
from cutswap.pipeline.stages.train import execution_of, model_spec_of, recipe_of, train_run
from cutswap.pipeline.stores import open_store


@pytest.fixture
def stripes(make_stripes):
    return make_stripes(32)


def test_the_command_is_torchrun_on_this_module(tmp_path):
    cmd = command(2, tmp_path / "job.json")
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert cmd[6:] == ["cutswap.learn.ddp", str(tmp_path / "job.json")]


@pytest.mark.slow
def test_a_failing_job_reports_its_output(tmp_path, stripes):
    """A rank that dies (here: an unknown method) fails the stage with the ranks' last lines in
    the message."""
    job = {
        "images": stripes,
        "method": "cutmix",
        "model": ModelSpec((32,), 2),
        "recipe": Recipe(steps=1, batch_size=2, lr=0.03),
        "execution": resolve_execution("cpu"),
        "seed": 0,
        "bank": None,
        "swaps": "one",
        "area": (0.02, 0.15),
        "aspect": (0.3, 3.3),
        "identity": None,
    }
    lines = []
    with pytest.raises(
        DistributedTrainingError, match=r"failed \(exit 1\): \[rank\d\]: ValueError: unknown method"
    ) as info:
        launch(job, 2, tmp_path / "work", tmp_path / "out.pt", log_line=lines.append)
    assert "exit" in str(info.value) and any("unknown method" in line for line in lines)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_a_loadable_model_whose_loss_falls(
    tmp_path, stripes, monkeypatch, ingest_store
):
    """torchrun + gloo, 2 ranks: completes, streams progress, the store's checkpoint loads, the loss falls,
    and the weights are bit for bit those of one process running the same batches in 2 micro-batches (each
    rank's slice), with one thread per process so that both sum in the same order."""
    small = stripes[:, ::2, ::2]  # 16 px: ResNet-18 still ends at 1x1, four times cheaper
    train = {"steps": 30, "batch_size": 8, "head_dims": [32], "log_every": 1, "lr": 0.03, "device": "cpu"}
    settings = Settings(storage_root=tmp_path, train=TrainSettings(nproc=2, **train))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    progress, lines = [], []
    ref, computed = train_run(
        settings,
        ingest_store(tmp_path, small),
        "cutpaste",
        0,
        progress=progress.append,
        log_line=lines.append,
    )
    assert computed, lines
    assert [e["step"] for e in progress] == list(range(1, 31))
    assert not any(line.startswith(PROGRESS_PREFIX) for line in lines)
    group = open_store(ref)
    assert group.attrs["nproc"] == 2
    log = group["log"][:]
    assert log[-10:, 1].mean() < log[:10, 1].mean(), log[:, 1]  # single-step losses are noisy
    model = load_model(ref)
    assert model.classifier.out_features == 2

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainSettings(**train)
        spec, recipe = model_spec_of(cfg, "cutpaste"), recipe_of(cfg)
        single = train_classifier(small, "cutpaste", spec, recipe, execution_of(cfg), 0, parts=2)
    finally:
        torch.set_num_threads(threads)
    ddp, one = model.state_dict(), single.model.state_dict()
    for name, _ in single.model.named_parameters():
        assert torch.equal(ddp[name], one[name]), name
    np.testing.assert_array_equal(log[:, 1], [e["loss"] for e in single.log])
