"""The train stage: keys, the store it publishes, resuming through its work directory, and DDP."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from cutswap.pipeline.readers import load_model
from cutswap.pipeline.settings import Settings, TrainSettings
from cutswap.pipeline.stages.train import train_key, train_run, work_dir
from cutswap.pipeline.stores import StoreRef, build_store, open_store, write_array


@pytest.fixture
def stripes(make_stripes):
    return make_stripes(16)


def _pairs(root, n, levels=4):
    boxes = np.tile(np.array([4, 6, 0, 0, 8, 8], np.int32), (n, levels, 3, 1))
    return build_store(root, "pairs", "stripes", {"n": n}, {}, lambda g: write_array(g, "boxes", boxes))[0]


def _settings(root, **train):
    kw = {"steps": 4, "batch_size": 4, "head_dims": [32], "log_every": 2, "device": "cpu", **train}
    return Settings(storage_root=root, train=TrainSettings(**kw))


def test_key_ignores_execution_knobs_and_keeps_what_changes_weights(tmp_path):
    base = train_key(_settings(tmp_path), "cutswap", 0)
    for knob in (
        {"log_every": 1},
        {"checkpoint_every": 5},
        {"channels_last": True},
        {"amp": "off"},
        {"methods": ["cutpaste"]},
        {"seeds": [3]},
    ):
        assert train_key(_settings(tmp_path, **knob), "cutswap", 0) == base, knob
    for change in ({"swaps": "per-level"}, {"amp": "bf16"}, {"nproc": 2}, {"pretrained": True}, {"steps": 5}):
        assert train_key(_settings(tmp_path, **change), "cutswap", 0) != base, change
    assert train_key(_settings(tmp_path), "cutswap", 1) != base
    assert train_key(_settings(tmp_path), "cutswap-3way", 0) != base
    # Options a method does not use leave its key alone.
    scar = train_key(_settings(tmp_path), "cutpaste-scar", 0)
    assert train_key(_settings(tmp_path, swaps="per-level"), "cutpaste-scar", 0) == scar
    assert "pairs" not in scar and "pairs" not in base  # cutswap's pairs come in as the pairs store's key
    assert set(train_key(_settings(tmp_path), "cutpaste", 0)["pairs"]) == {"area", "aspect"}
    random_swap = train_key(_settings(tmp_path), "random-swap", 0)
    assert "pairs" not in random_swap and "levels" not in random_swap  # it copies the pairs store's sizes


def test_fine_tuning_settings_are_keyed_except_at_their_neutral_values(tmp_path):
    """Neutral values compute what the code computed before the settings existed, so those stores keep
    their keys; any other value is a new training."""
    pretrained = train_key(_settings(tmp_path, pretrained=True), "cutswap", 0)
    assert not {"freeze_steps", "trunk_lr_factor", "trunk_bn"} & set(pretrained)
    neutral = {"freeze_steps": 0, "trunk_lr_factor": 1.0, "trunk_bn": "train"}
    assert train_key(_settings(tmp_path, pretrained=True, **neutral), "cutswap", 0) == pretrained
    for change in ({"freeze_steps": 2}, {"trunk_lr_factor": 0.1}, {"trunk_bn": "eval"}):
        keyed = train_key(_settings(tmp_path, pretrained=True, **change), "cutswap", 0)
        assert keyed != pretrained and set(change) <= set(keyed), change


def test_store_holds_a_loadable_model_log_and_attrs_and_no_work_left(tmp_path, stripes, ingest_store):
    ingest = ingest_store(tmp_path, stripes)
    settings = _settings(tmp_path, checkpoint_every=2)
    seen = []
    ref, computed = train_run(settings, ingest, "cutpaste-3way", 0, progress=seen.append)
    assert computed and [e["step"] for e in seen] == [2.0, 4.0]
    group = open_store(ref)
    assert group["log"].shape == (2, 6)
    attrs = dict(group.attrs)
    assert attrs["num_classes"] == 3 and attrs["amp"] == "off" and attrs["resumed_from"] is None
    assert attrs["nproc"] == 1 and attrs["parts"] == 1 and attrs["oom_retries"] == 0
    assert attrs["worker"] == "in-process"
    model = load_model(ref)
    assert model.classifier.out_features == 3
    assert model(torch.rand(2, 3, 16, 16))[1].shape == (2, 3)
    assert not Path(work_dir(tmp_path, ref.name, ref.key)).exists()
    assert train_run(settings, ingest, "cutpaste-3way", 0) == (ref, False)


def test_saliency_bank_methods_need_the_pairs_store(tmp_path, stripes, ingest_store):
    ingest = ingest_store(tmp_path, stripes)
    settings = _settings(tmp_path, steps=1)
    with pytest.raises(ValueError, match="cutswap-3way training needs the pairs store"):
        train_run(settings, ingest, "cutswap-3way", 0)
    with pytest.raises(ValueError, match="random-swap training needs the pairs store"):
        train_run(settings, ingest, "random-swap", 0)
    ref, _ = train_run(settings, ingest, "cutswap-3way", 0, _pairs(tmp_path, len(stripes)))
    assert load_model(ref).classifier.out_features == 3
    assert set(open_store(ref).attrs["inputs"]) == {"ingest", "pairs"}


def test_a_failed_run_resumes_from_its_work_directory_to_the_same_weights(tmp_path, stripes, ingest_store):
    """A run that dies after its step-2 checkpoint leaves no store, only its work directory; the rerun
    resumes there and publishes exactly the weights of an uninterrupted run."""
    ingest = ingest_store(tmp_path / "a", stripes)
    settings = _settings(tmp_path / "a", checkpoint_every=2)

    class Died(Exception):
        pass

    def die(entry):
        if entry["step"] == 4:
            raise Died

    with pytest.raises(Died):
        train_run(settings, ingest, "random-swap", 0, _pairs(tmp_path / "a", len(stripes)), progress=die)
    work = list((tmp_path / "a" / "train" / ".work").iterdir())
    assert [p.name for p in work[0].iterdir()] == ["resume.pt"]
    ref, computed = train_run(settings, ingest, "random-swap", 0, _pairs(tmp_path / "a", len(stripes)))
    assert computed and open_store(ref).attrs["resumed_from"] == 2
    assert not work[0].exists()

    b_ingest, b_pairs = ingest_store(tmp_path / "b", stripes), _pairs(tmp_path / "b", len(stripes))
    whole, _ = train_run(_settings(tmp_path / "b"), b_ingest, "random-swap", 0, b_pairs)
    assert whole.key == ref.key
    a, b = load_model(ref).state_dict(), load_model(whole).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(open_store(ref)["log"][:, 1], open_store(whole)["log"][:, 1])


def test_the_resume_state_is_an_object_under_a_bucket_root(bucket, stripes, ingest_store):
    """A job that dies after its step-2 checkpoint leaves ``resume.pt`` in the bucket, not on the host's
    disk: a rerun anywhere resumes from it, and it is deleted once the store is committed."""
    import obstore

    from cutswap import roots

    ingest, pairs = ingest_store(bucket, stripes), _pairs(bucket, len(stripes))
    settings = _settings(bucket, checkpoint_every=2)

    def die(entry):
        if entry["step"] == 4:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError):
        train_run(settings, ingest, "random-swap", 0, pairs, progress=die)
    work = roots.object_store(roots.join(bucket, "train", ".work"))
    assert [m["path"].rsplit("/", 1)[-1] for m in obstore.list(work).collect()] == ["resume.pt"]
    ref, computed = train_run(settings, ingest, "random-swap", 0, pairs)
    assert computed and open_store(ref).attrs["resumed_from"] == 2
    assert obstore.list(work).collect() == []
    assert load_model(ref).state_dict()  # the checkpoint is an object of the committed store


def _ddp_stores(root: str) -> tuple[Settings, StoreRef]:
    """The settings and ingest store of a small data-parallel training (2 CPU ranks, 16 px stripes, a
    checkpoint every 2 steps), the same in every process that asks."""
    rng = np.random.default_rng(0)
    plane = np.broadcast_to(np.linspace(0, 255, 16, dtype=np.float32)[None, :, None], (16, 16, 3))
    images = np.stack([np.clip(plane + rng.normal(0, 8, plane.shape), 0, 255) for _ in range(12)])
    images = images.astype(np.uint8)

    def write(group):
        write_array(group, "images", images)
        write_array(group, "masks", np.zeros(images.shape[:3], bool))
        group.attrs["samples"] = [
            {"split": "train", "label": 0, "defect_type": "good", "image_path": f"{i}.png", "mask_path": None}
            for i in range(len(images))
        ]

    ingest = build_store(root, "ingest", "stripes", {"n": len(images)}, {}, write)[0]
    return _settings(root, nproc=2, steps=60, batch_size=4, log_every=1, checkpoint_every=2), ingest


def _ddp_training(root: str) -> None:
    """The training of ``_ddp_stores``, as a process of its own runs it (``python -c``)."""
    settings, ingest = _ddp_stores(root)
    train_run(settings, ingest, "cutpaste", 0)


@pytest.mark.slow
def test_a_data_parallel_training_killed_after_a_checkpoint_resumes_from_it(tmp_path):
    """Under a URL root (``file://``; torchrun + gloo, 2 CPU ranks) rank 0 puts the resume state into the
    work prefix at every checkpoint, whole: a SIGKILL of the job's whole process group (nothing of it
    runs on to upload anything) leaves the state of its last checkpoint there, and the next run resumes
    from exactly that step."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    from cutswap import roots

    root = (tmp_path / "bucket").as_uri()
    settings, ingest = _ddp_stores(root)
    work = roots.join(root, "train", ".work")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = "import sys, tests.cutswap.pipeline.stages.test_train as t; t._ddp_training(sys.argv[1])"
    job = subprocess.Popen([sys.executable, "-c", code, root], env=env, start_new_session=True)
    resume = None
    try:
        deadline = time.monotonic() + 240
        while resume is None and time.monotonic() < deadline and job.poll() is None:
            found = [p for p in (tmp_path / "bucket" / "train" / ".work").rglob("resume.pt")]
            resume = found[0] if found else None
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):  # (the job ended by itself)
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert resume is not None, f"no resume state in {work} while the training ran (exit {job.returncode})"
    state = torch.load(io.BytesIO(resume.read_bytes()), weights_only=True)
    assert 2 <= state["step"] < 60 and state["step"] % 2 == 0
    name = resume.parent.name
    ref, computed = train_run(settings, ingest, "cutpaste", 0)
    assert computed and name == f"{ref.name}-{ref.key}"
    assert open_store(ref).attrs["resumed_from"] == state["step"]
    assert open_store(ref)["log"].shape[0] == 60  # the resumed history and the steps after it
    assert not resume.exists()  # the work prefix is emptied once the store is committed


def test_without_a_progress_callback_progress_goes_to_the_module_logger(
    tmp_path, stripes, ingest_store, caplog
):
    ingest = ingest_store(tmp_path, stripes)
    with caplog.at_level("INFO", logger="cutswap.pipeline.stages.train"):
        train_run(_settings(tmp_path), ingest, "cutpaste", 0)
    lines = [r.getMessage() for r in caplog.records if r.name == "cutswap.pipeline.stages.train"]
    assert (
        lines == [m for m in lines if m.startswith("stripes-cutpaste-s0: step ") and " img/s" in m]
        and len(lines) == 2
    )


def test_trunk_and_its_initialisation_are_keyed_and_recorded(tmp_path, stripes, ingest_store):
    base = train_key(_settings(tmp_path), "cutpaste", 0)
    assert train_key(_settings(tmp_path, trunk="efficientnet_lite0"), "cutpaste", 0) != base
    assert (
        train_key(_settings(tmp_path, weights=tmp_path / "w.pth", allow_download=True), "cutpaste", 0) == base
    )
    settings = _settings(tmp_path, trunk="efficientnet_lite0", pretrained=True, steps=1, log_every=1)
    ref, _ = train_run(settings, ingest_store(tmp_path, stripes), "cutpaste", 0)
    assert open_store(ref).attrs["trunk"]["name"] == "efficientnet_lite0"
    assert open_store(ref).attrs["trunk"]["pretrained"] is True
    model = load_model(ref)
    assert model.trunk_name == "efficientnet_lite0" and model.embed(torch.rand(1, 3, 16, 16)).shape == (
        1,
        1280,
    )


def test_no_training_baseline_is_the_imagenet_trunk_shared_by_every_schedule(tmp_path, stripes, ingest_store):
    from cutswap.method.backbones import effnet_imagenet, effnet_packaged_weights

    key = train_key(_settings(tmp_path, trunk="efficientnet_lite0"), "imagenet-gde", 0)
    for change in ({"steps": 9}, {"lr": 0.1}, {"pretrained": True}):
        assert train_key(_settings(tmp_path, trunk="efficientnet_lite0", **change), "imagenet-gde", 0) == key
    assert train_key(_settings(tmp_path, trunk="efficientnet_lite0"), "imagenet-gde", 3) == key
    assert train_key(_settings(tmp_path), "imagenet-gde", 0) != key  # another trunk
    settings = _settings(tmp_path, trunk="efficientnet_lite0")
    ref, computed = train_run(settings, ingest_store(tmp_path, stripes), "imagenet-gde", 0)
    attrs = open_store(ref).attrs
    assert computed and attrs["num_classes"] == 1 and open_store(ref)["log"].shape == (0, 6)
    assert attrs["trunk"]["pretrained"] is True and attrs["seconds"] == 0.0
    frozen = effnet_imagenet(effnet_packaged_weights()).state_dict()
    got = load_model(ref).trunk.state_dict()
    assert all(torch.equal(got[k], frozen[k]) for k in got)  # the ImageNet weights, untouched
    again, computed = train_run(settings, ingest_store(tmp_path, stripes), "imagenet-gde", 3)
    assert again.path == ref.path and not computed  # one store per category, whatever the seed
