"""Train: one classifier per (category, method, seed).

Store layout (``storage/train/<category>-<method>-s<seed>-<key>/``)::

    checkpoint.pt   the model (``cutswap.learn.checkpoint``); ``cutswap.pipeline.readers.load_model``
                    reads it safely
    log             float64 (T, 6)  step, loss, acc_negative, acc_normal, lr, images_per_s
    attrs           method, seed, category, num_classes, trunk: {name, pretrained, sha256}, device,
                    worker (Dask worker or in-process), amp, channels_last, nproc, parts, oom_retries,
                    resumed_from, seconds, images_per_s, final_loss, log_columns

The no-training baseline (``imagenet-gde``: ``trains`` is False in ``cutswap.method.registry``) has a store of
the same layout, named ``<category>-<method>-<key>`` (no seed changes it): the ImageNet
``train.baseline_trunk`` (else ``train.trunk``) as its checkpoint (head and classifier untouched and
unused), an empty log, and a key of just the method and the trunk, so every schedule and seed shares it.

Work folder (``<storage_root>/train/.work/<category>-<method>-s<seed>-<key>/``, hidden, never a store; a
prefix of objects under a URL root, so a job rerun on another host resumes)::

    resume.pt       the resumable state (``cutswap.learn.checkpoint``), every ``train.checkpoint_every`` steps
    job.json, images.npy, bank.npy, result.json     the hand-over to and from a DDP run (``nproc > 1``), in
                    the work folder under a local root and in the worker's temporary folder otherwise
                    (``resume.pt`` stays in the work prefix then: rank 0 replaces it at each checkpoint)

A killed run leaves its work folder, and the next run with the same key resumes from ``resume.pt``; it
is deleted once the store is published. The key holds everything that changes the weights: the train
settings except execution knobs (``EXECUTION_KNOBS``) and the fine-tuning settings at their neutral
values (``FINE_TUNING_NEUTRAL``: the training they describe is the one made before they existed), the
precision ``train.amp`` resolves to (on the job's worker: ``execution_of``, once per job), ``nproc``, the
method and seed, the pairs store (swap methods: the saliency bank, or the patch sizes the random-swap control
copies) or the pairs settings CutPaste draws from, and the ingest store. Device, memory format, log and
checkpoint intervals are recorded in the attrs only.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cutswap import roots
from cutswap.learn import checkpoint as ckpt
from cutswap.learn.execution import Execution, resolve_execution
from cutswap.learn.loop import LOG_FIELDS, ModelSpec, Recipe, train_classifier
from cutswap.learn.models import ProjectionNet, build_model
from cutswap.method.pairs import random_swap_boxes
from cutswap.method.registry import get_method
from cutswap.pipeline.parallel import current_worker
from cutswap.pipeline.readers import read_rows, train_indices
from cutswap.pipeline.settings import FINE_TUNING_NEUTRAL, Settings, TrainSettings
from cutswap.pipeline.stores import (
    StoreRef,
    build_store,
    open_store,
    put_file,
    write_array,
)

log = logging.getLogger(__name__)
LOG_COLUMNS = LOG_FIELDS
#: Settings that change how a run executes but not what it computes (beyond floating-point noise).
EXECUTION_KNOBS = frozenset(
    {
        "methods",
        "seeds",
        "device",
        "amp",
        "channels_last",
        "log_every",
        "checkpoint_every",
        "weights",
        "allow_download",
        "baseline_trunk",
        "max_days",  # a guard checked before the run (cutswap.pipeline.feasibility)
    }
)


def execution_of(cfg: TrainSettings) -> Execution:
    """The train section's device, precision and memory format, resolved: once per job, on its worker."""
    return resolve_execution(cfg.device, cfg.amp, cfg.channels_last)


def recipe_of(cfg: TrainSettings) -> Recipe:
    return Recipe(
        cfg.steps,
        cfg.batch_size,
        cfg.lr,
        cfg.momentum,
        cfg.weight_decay,
        cfg.log_every,
        cfg.checkpoint_every,
        cfg.freeze_steps,
        cfg.trunk_lr_factor,
        cfg.trunk_bn,
    )


def model_spec_of(cfg: TrainSettings, method: str) -> ModelSpec:
    weights = None if cfg.weights is None else str(cfg.weights)
    classes = get_method(method).num_classes
    return ModelSpec(tuple(cfg.head_dims), classes, cfg.trunk, cfg.pretrained, weights, cfg.allow_download)


def train_key(settings: Settings, method: str, seed: int, amp: str | None = None) -> dict[str, Any]:
    """The settings a train store is keyed by (its inputs' keys are added by ``build_store``).

    Args:
        amp: the precision the job resolved (``Execution.amp_name``); None resolves it here, for callers
            that only want to know the key.
    """
    cfg = settings.train
    spec = get_method(method)
    kinds = spec.kinds
    if not spec.trains:
        return {"method": method, "trunk": cfg.baseline_trunk or cfg.trunk, "pretrained": True}
    keyed = {
        **cfg.model_dump(mode="json", exclude=EXECUTION_KNOBS),
        "amp": amp if amp is not None else execution_of(cfg).amp_name,
        "method": method,
        "seed": seed,
    }
    for name, neutral in FINE_TUNING_NEUTRAL.items():  # keys from before these settings stay valid
        if keyed[name] == neutral:
            del keyed[name]
    if "swap" not in kinds:
        del keyed["swaps"]
    # Swap methods (random-swap included: it copies the bank's sizes) are keyed by the pairs store's key.
    if "cutpaste" in kinds:
        keyed["pairs"] = settings.pairs.model_dump(mode="json", include={"area", "aspect"})
    return keyed


def work_dir(storage_root: str | Path, name: str, key: str) -> str:
    """Where a training run keeps its resumable checkpoint: hidden, beside the train stores (a folder or
    a URL prefix)."""
    return roots.join(roots.normalize(storage_root), "train", ".work", f"{name}-{key}")


def _untrained(settings: Settings, method: str) -> tuple[ProjectionNet, dict[str, Any]]:
    """The no-training baseline: the ImageNet trunk as it is, and a training summary with nothing in it."""
    cfg = settings.train
    trunk = cfg.baseline_trunk or cfg.trunk
    weights = cfg.weights if trunk == cfg.trunk else None  # train.weights is the classifiers' trunk's file
    with torch.random.fork_rng():  # its head is never used (the density reads the trunk); seeded, so the
        torch.manual_seed(0)  # stored file is the same on every run
        model = build_model(cfg.head_dims, True, 1, trunk, weights, cfg.allow_download)
    summary = {
        "log": [],
        "seconds": 0.0,
        "images_per_s": 0.0,
        "resumed_from": None,
        "parts": 1,
        "oom_retries": 0,
        "amp": "off",
        "channels_last": False,
        "num_classes": 1,
        "trunk": model.trunk_info.to_dict(),
    }
    return model, summary


def train_run(
    settings: Settings,
    ingest: StoreRef,
    method: str,
    seed: int,
    pairs: StoreRef | None = None,
    mode: str = "run",
    progress: Callable[[dict[str, float]], None] | None = None,
    log_line: Callable[[str], None] | None = None,
) -> tuple[StoreRef, bool]:
    """Train (or reuse) the classifier of one category, method and seed.

    Args:
        pairs: the pairs store; required for the swap methods (``SALIENCY_BANK_METHODS`` swap its draws,
            ``RANDOM_BANK_METHODS`` its patch sizes at random places), ignored by the others.
        progress: called with each log entry (a dict with the ``LOG_COLUMNS`` keys); default: a progress
            line on this module's logger (``progress_line``).
        log_line: called with each other line a DDP run prints (``nproc > 1``); default: this module's
            logger at INFO.

    Raises:
        ValueError: a swap method without the pairs store.
        cutswap.errors.CutswapError: a DDP run failed (its last output lines are in the message).
    """
    cfg = settings.train
    spec = get_method(method)
    execution = execution_of(cfg)
    keyed = train_key(settings, method, seed, execution.amp_name)
    inputs = {"ingest": ingest}
    if spec.needs_pairs:
        if pairs is None:
            raise ValueError(f"{method} training needs the pairs store")
        inputs["pairs"] = pairs
    # A method that trains nothing is the same for every seed: one store per category, named without one.
    name = f"{ingest.name}-{method}-s{seed}" if spec.trains else f"{ingest.name}-{method}"
    if (
        progress is None
    ):  # the record carries the entry too: ``cutswap.pipeline.parallel.run_job`` relays both
        progress = lambda entry: log.info(  # noqa: E731
            "%s: %s", name, progress_line(entry, cfg.steps), extra={"progress": {**entry, "total": cfg.steps}}
        )

    def record(group, outcome: dict[str, Any]) -> None:
        """The log and the attrs of a train store, from a training summary."""
        rows = np.array([[entry[c] for c in LOG_COLUMNS] for entry in outcome["log"]], dtype=np.float64)
        write_array(
            group,
            "log",
            rows.reshape(-1, len(LOG_COLUMNS)),
            per_chunk=len(rows) or 1,
            per_shard=len(rows) or 1,
        )
        group.attrs.update(
            {
                "device": str(execution.device),
                "worker": current_worker() or "in-process",
                "amp": outcome["amp"],
                "channels_last": outcome["channels_last"],
                "nproc": cfg.nproc,
                "num_classes": outcome["num_classes"],
                "trunk": outcome["trunk"],
                "parts": outcome["parts"],
                "oom_retries": outcome["oom_retries"],
                "resumed_from": outcome["resumed_from"],
                "seconds": round(outcome["seconds"], 3),
                "images_per_s": round(outcome["images_per_s"], 2),
                "final_loss": outcome["log"][-1]["loss"] if outcome["log"] else None,
            }
        )

    def write(group):
        key = group.attrs["key"]  # resumable work of this very store lives under its key
        work = work_dir(settings.storage_root, name, key)
        if not spec.trains:
            model, outcome = _untrained(settings, method)
            put_file(
                group, "checkpoint.pt", ckpt.to_bytes(ckpt.model_payload(model, cfg.head_dims, 1, method))
            )
            return record(group, outcome)
        source = open_store(ingest)
        images = read_rows(source["images"], train_indices(source))  # the train split only
        bank = None
        if spec.bank == "saliency":
            bank = open_store(pairs)["boxes"][:]
        elif spec.bank == "random":
            bank = random_swap_boxes(open_store(pairs)["boxes"][:], *images.shape[1:3], settings.pairs.seed)
        job = {
            "images": images,
            "method": method,
            "model": model_spec_of(cfg, method),
            "recipe": recipe_of(cfg),
            "execution": execution,
            "seed": seed,
            "bank": bank,
            "swaps": cfg.swaps,
            "area": tuple(settings.pairs.area),
            "aspect": tuple(settings.pairs.aspect),
            "identity": {"key": key},
        }
        if cfg.nproc > 1:
            outcome = _train_ddp(job, cfg.nproc, work, group, progress, log_line or log.info)
        else:
            result = train_classifier(**job, progress=progress, checkpoint=roots.join(work, "resume.pt"))
            payload = ckpt.model_payload(result.model, cfg.head_dims, result.num_classes, method)
            put_file(group, "checkpoint.pt", ckpt.to_bytes(payload))
            outcome = result.summary()
        record(group, outcome)

    extra = {"method": method, "seed": seed, "category": ingest.name, "log_columns": list(LOG_COLUMNS)}
    ref, computed = build_store(settings.storage_root, "train", name, keyed, inputs, write, mode, extra)
    if computed:
        roots.delete_tree(work_dir(settings.storage_root, name, ref.key))
    return ref, computed


def _train_ddp(
    job: dict[str, Any],
    nproc: int,
    work: str,
    group: Any,
    progress: Callable[[dict[str, float]], None],
    log_line: Callable[[str], None],
) -> dict[str, Any]:
    """A data-parallel training (``cutswap.learn.ddp``): its ranks hand files over in a local folder, the
    work folder itself under a local root, else a temporary one on this host. Under a URL root the resume
    state stays an object of the work prefix: the ranks read it there and rank 0 replaces it at every
    checkpoint (one PUT, whole or not at all), so a SIGKILL of the job or a preempted host keeps the last
    checkpoint and a rerun on any host resumes from it."""
    from cutswap.learn.ddp import launch

    if roots.is_local(work):
        folder = Path(work)
        outcome = launch(job, nproc, folder, folder / "checkpoint.pt", progress, log_line)
        put_file(group, "checkpoint.pt", (folder / "checkpoint.pt").read_bytes())
        return outcome
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        resume = roots.join(work, "resume.pt")
        outcome = launch(job, nproc, folder, folder / "checkpoint.pt", progress, log_line, checkpoint=resume)
        put_file(group, "checkpoint.pt", (folder / "checkpoint.pt").read_bytes())
    return outcome


def progress_line(entry: dict[str, float], total: int) -> str:
    """One log entry as a line: step, loss, accuracy per side, throughput."""
    return (
        f"step {entry['step']:.0f}/{total} loss {entry['loss']:.4f} acc(neg) {entry['acc_negative']:.2f} "
        f"acc(normal) {entry['acc_normal']:.2f} {entry['images_per_s']:.0f} img/s"
    )
