"""Self-supervised training of the normal-vs-negatives classifier, on one device or several (DDP).

Inputs:
    images   uint8 (N, H, W, 3), the normal training images of one category at the working size
    bank     int32 (N, L, D, 6) patch-pair draws ``(h, w, y1, x1, y2, x2)`` per image and saliency level:
             the saliency-anchored bank of the pairs stage, or a random bank with the same patch sizes
             draw for draw (``cutswap.method.registry``: a method's ``bank``), so the control differs only in
             where patches lie; (N, D, 6) is taken as one level. Other methods take no bank.

Each step draws a batch of ``B`` images per class (``cutswap.method.sampler.draw_batch``) and makes one SGD
update on the cross-entropy over all rows. When the batch runs in ``parts`` micro-batches (after an
out-of-memory retry, ``cutswap.learn.oom``) or over ``world`` processes (DDP), each part takes an equal slice
of every class, and the losses are weighted so the gradient is that of the whole batch; only batch
normalisation sees the smaller parts. Every process draws the same whole batch from the same generator
and trains on its own slice, so the random stream does not depend on the number of processes.

The loop takes plain values: a ``Recipe`` (the optimisation), a ``ModelSpec`` (the classifier), an
``Execution`` (device, precision, memory format; resolved once by the caller) and CutPaste's patch
ranges. A run resumed from its checkpoint (``cutswap.learn.checkpoint``) finishes with exactly the weights of
an uninterrupted run (same machine, CPU).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cutswap.learn import checkpoint as ckpt
from cutswap.learn.execution import Execution
from cutswap.learn.models import ProjectionNet, TrunkInfo, build_model
from cutswap.learn.oom import OomRetry
from cutswap.method.ops import CUTPASTE_AREA, CUTPASTE_ASPECT
from cutswap.method.registry import get_method
from cutswap.method.sampler import NegativeSampler, draw_batch

log = logging.getLogger(__name__)

#: Log entry fields, in the column order of the train store's ``log`` array.
LOG_FIELDS = ("step", "loss", "acc_negative", "acc_normal", "lr", "images_per_s")


def class_slices(
    classes: int, per_class: int, parts: int, device: torch.device | str = "cpu"
) -> list[tuple[torch.Tensor, float]]:
    """Split a class-blocked batch into ``parts`` parts, each with an equal slice of every class.

    Returns:
        Per part, the row indices and the part's weight (its share of each class), so that the weighted
        sum of the parts' mean losses is the whole batch's mean loss.
    """
    if not 1 <= parts <= per_class:
        raise ValueError(f"cannot split {per_class} images per class into {parts} parts")
    out = []
    for j in range(parts):
        lo, hi = j * per_class // parts, (j + 1) * per_class // parts
        rows = torch.cat([torch.arange(c * per_class + lo, c * per_class + hi) for c in range(classes)])
        out.append((rows.to(device), (hi - lo) / per_class))
    return out


def train_step(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    parts: list[tuple[torch.Tensor, float]] | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser update on a built batch, in micro-batches when ``parts`` is given.

    Under DDP (``model`` has ``no_sync``) gradients are all-reduced once, after the last part.

    Returns:
        The batch loss (a detached scalar), the logits and the labels, both in part order.
    """
    optimizer.zero_grad(set_to_none=True)
    chunks = parts or [(None, 1.0)]
    total = torch.zeros((), device=inputs.device)
    logits_out, labels_out = [], []
    for j, (rows, weight) in enumerate(chunks):
        x, y = (inputs, labels) if rows is None else (inputs[rows], labels[rows])
        x = x.contiguous(memory_format=memory_format)
        last = j == len(chunks) - 1
        sync = model.no_sync() if hasattr(model, "no_sync") and not last else contextlib.nullcontext()
        with sync:
            with torch.autocast(inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                _, logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            scaler.scale(loss * weight if weight != 1.0 else loss).backward()
        total += loss.detach() * weight
        logits_out.append(logits.detach())
        labels_out.append(y)
    scaler.step(optimizer)
    scaler.update()
    if len(chunks) == 1:
        return total, logits_out[0], labels_out[0]
    return total, torch.cat(logits_out), torch.cat(labels_out)


@dataclass
class TrainResult:
    """A trained classifier and how its training went.

    Attributes:
        model: the classifier (eval mode, unwrapped from DDP).
        log: entries with the ``LOG_FIELDS`` keys, every ``log_every`` steps and at the last step.
        seconds: training time over all sessions of a resumed run.
        images_per_s: images (all classes, all processes) per second in this session.
        resumed_from: the checkpoint step this session started from, None for a fresh run.
        parts: micro-batches per step at the end (1 unless an out-of-memory retry split the batch).
        oom_retries: out-of-memory retries over the run.
        amp: precision used (``bf16``, ``fp16``, ``off``); channels_last: memory format used.
        world_size: processes (DDP ranks) that trained together.
        trunk: the trunk and its initialisation.
    """

    model: ProjectionNet
    trunk: TrunkInfo | None = None
    log: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_s: float = 0.0
    resumed_from: int | None = None
    parts: int = 1
    oom_retries: int = 0
    amp: str = "off"
    channels_last: bool = False
    world_size: int = 1
    num_classes: int = 2

    def summary(self) -> dict[str, Any]:
        """Everything but the model, JSON-ready: what the train store records and DDP hands back."""
        return {
            "log": self.log,
            "seconds": self.seconds,
            "images_per_s": self.images_per_s,
            "resumed_from": self.resumed_from,
            "parts": self.parts,
            "oom_retries": self.oom_retries,
            "amp": self.amp,
            "channels_last": self.channels_last,
            "world_size": self.world_size,
            "num_classes": self.num_classes,
            "trunk": self.trunk.to_dict() if self.trunk else None,
        }


def _world() -> tuple[int, int]:
    """(rank, world size) of an initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class Recipe:
    """The optimisation of one run: SGD with momentum, cosine-annealed over ``steps``.

    Attributes:
        steps: optimiser updates.
        batch_size: images per class per step (B); a multiple of the DDP processes.
        lr, momentum, weight_decay: SGD's.
        log_every: steps between log entries (the last step is always logged).
        checkpoint_every: steps between resumable checkpoints; 0 never writes one.
        freeze_steps: the first steps train the head and classifier only: the trunk's weights get no
            gradient (so no update, momentum or weight decay either) and its batch normalisation runs on
            its stored statistics, so a pretrained trunk leaves the warm-up bit-identical.
        trunk_lr_factor: the trunk's learning rate as a fraction of ``lr`` (the cosine decay scales both).
        trunk_bn: ``train`` (batch statistics, running averages updated) or ``eval`` (the trunk's stored
            statistics throughout; its affine weights still train).
    """

    steps: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 3e-5
    log_every: int = 10
    checkpoint_every: int = 0
    freeze_steps: int = 0
    trunk_lr_factor: float = 1.0
    trunk_bn: str = "train"


def set_trunk_mode(net: ProjectionNet, frozen: bool, trunk_bn: str) -> None:
    """Put a training classifier's trunk in its warm-up (``frozen``) or fine-tuning state (``Recipe``).

    The rest of the network is left in training mode; the trunk's gradients are switched off while frozen,
    so the warm-up's backward pass stops at the head.
    """
    net.train()
    net.trunk.requires_grad_(not frozen)
    if frozen:
        net.trunk.eval()
    elif trunk_bn == "eval":
        for module in net.trunk.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


@dataclass(frozen=True)
class ModelSpec:
    """The classifier to build: a trunk, from scratch or from ImageNet weights, and a projection head.

    ``weights`` is a ResNet-18 ImageNet weights file (checked by hash, ``cutswap.method.backbones``) and
    ``allow_download`` lets torchvision fetch it; neither changes what is computed, only where from.
    """

    head_dims: tuple[int, ...]
    num_classes: int
    trunk: str = "resnet18"
    pretrained: bool = False
    weights: str | None = None
    allow_download: bool = False

    def build(self) -> ProjectionNet:
        return build_model(
            list(self.head_dims),
            self.pretrained,
            self.num_classes,
            self.trunk,
            self.weights,
            self.allow_download,
        )


def _log_entry(
    step: int,
    loss: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    world: int,
    lr: float,
    images_per_s: float,
) -> dict[str, float]:
    """A log entry (``LOG_FIELDS``): the step's loss and accuracies, averaged over the DDP ranks.

    Raises:
        FloatingPointError: the loss is not finite (training diverged).
    """
    pred = logits.argmax(1)
    normal = labels == 0
    stats = torch.stack(
        [loss.float(), (pred == labels)[~normal].float().mean(), (pred == labels)[normal].float().mean()]
    )
    if world > 1:
        torch.distributed.all_reduce(stats)
        stats /= world
    loss_v, acc_negative, acc_normal = stats.tolist()
    if not math.isfinite(loss_v):
        raise FloatingPointError(f"training diverged at step {step} (loss {loss_v}); lower train.lr")
    return {
        "step": float(step),
        "loss": loss_v,
        "acc_negative": acc_negative,
        "acc_normal": acc_normal,
        "lr": lr,
        "images_per_s": images_per_s,
    }


def train_classifier(
    images: np.ndarray,
    method: str,
    model: ModelSpec,
    recipe: Recipe,
    execution: Execution,
    seed: int,
    bank: np.ndarray | None = None,
    *,
    swaps: str = "one",
    area: tuple[float, float] = CUTPASTE_AREA,
    aspect: tuple[float, float] = CUTPASTE_ASPECT,
    progress: Callable[[dict[str, float]], None] | None = None,
    checkpoint: str | Path | None = None,
    identity: dict[str, Any] | None = None,
    parts: int = 1,
) -> TrainResult:
    """Train one classifier and return it with its log.

    The whole training set lives on the device as uint8 (MVTec's largest category is ~400 images, about
    80 MB at 256 px), so a step never waits on Python-side data loading. Inside an initialised process
    group (``cutswap.learn.ddp``) the model is wrapped in DDP and every rank trains on its slice.

    Args:
        images, bank: see the module docstring.
        method: a method of ``cutswap.method.registry.REGISTRY`` that trains.
        model: the classifier; built after seeding torch with ``seed``, so its initialisation is the seed's.
        recipe: the optimisation.
        execution: device, precision and memory format, resolved by the caller.
        seed: seeds the model's initialisation and the training generator.
        swaps, area, aspect: the negatives' settings (``NegativeSampler``).
        progress: called with each log entry (rank 0 only).
        checkpoint: resumable checkpoint, a file or an object (``cutswap.roots``); resumed from when it
            exists and matches this run.
        identity: JSON-ready values that must match for a checkpoint to be resumed (the caller's key),
            besides everything given here.
        parts: micro-batches per step to start with (more save memory; an out-of-memory error on one
            process doubles it and retries the step).

    Raises:
        ValueError: a method that trains nothing, or a batch size the processes cannot share.
        FloatingPointError: the loss stopped being finite.
        torch.OutOfMemoryError: even one image per class does not fit, or the run is distributed (ranks
            cannot agree on a retry).
    """
    classes = _check(method, model, recipe.batch_size)
    rank, world = _world()
    if recipe.batch_size % world:
        raise ValueError(f"batch_size {recipe.batch_size} must be a multiple of the {world} processes")
    run = _Run.start(images, method, model, recipe, execution, seed, bank, swaps, area, aspect, world)
    negatives = {"swaps": swaps, "area": list(area), "aspect": list(aspect)}
    fingerprint = _fingerprint(
        identity, method, seed, model, recipe, negatives, execution, world, images, bank
    )
    state = _Progress(parts=parts)
    state.resume(ckpt.load_resume(checkpoint, fingerprint), run, method, seed, recipe.steps)
    retry = OomRetry(run.net, recipe.batch_size // world, state.parts, enabled=world == 1)
    retry.retries = state.oom_retries
    seconds = _steps(run, recipe, classes, rank, world, retry, state, progress, checkpoint, fingerprint)
    run.net.eval()
    return TrainResult(
        model=run.net,
        log=state.history,
        seconds=state.seconds_before + seconds,
        images_per_s=(recipe.steps - state.start_step) * classes * recipe.batch_size / max(seconds, 1e-9),
        resumed_from=state.resumed_from,
        parts=retry.parts,
        oom_retries=retry.retries,
        amp=execution.amp_name,
        channels_last=execution.channels_last,
        world_size=world,
        num_classes=classes,
        trunk=run.net.trunk_info,
    )


def _check(method: str, model: ModelSpec, batch_size: int) -> int:
    """The method's number of classes, once it is known to train and to match the model."""
    spec = get_method(method)
    if not spec.trains:
        raise ValueError(f"{method} trains nothing; build its model with cutswap.learn.models.build_model")
    if model.num_classes != spec.num_classes:
        raise ValueError(f"{method} has {spec.num_classes} classes, the model {model.num_classes}")
    return spec.num_classes


@dataclass
class _Run:
    """What one training works with, built in this order (the seed fixes the model's initialisation, then
    the generator drives every batch)."""

    net: nn.Module
    ddp: nn.Module
    data: torch.Tensor  # uint8 NCHW, the whole training set on the device
    sampler: NegativeSampler
    optimizer: torch.optim.Optimizer
    schedule: Any
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    execution: Execution

    @classmethod
    def start(
        cls,
        images: np.ndarray,
        method: str,
        model: ModelSpec,
        recipe: Recipe,
        execution: Execution,
        seed: int,
        bank: np.ndarray | None,
        swaps: str,
        area: tuple[float, float],
        aspect: tuple[float, float],
        world: int,
    ) -> _Run:
        device = execution.device
        torch.manual_seed(seed)
        generator = torch.Generator(device=device).manual_seed(seed)
        net = model.build().to(device, memory_format=execution.memory_format)
        ddp: nn.Module = net
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            ddp = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        data = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)
        bank_t = None if bank is None else torch.from_numpy(np.asarray(bank, dtype=np.int64)).to(device)
        trunk = {id(p) for p in net.trunk.parameters()}
        groups = [  # the head first: its learning rate is the one logged
            {"params": [p for p in net.parameters() if id(p) not in trunk], "lr": recipe.lr},
            {"params": list(net.trunk.parameters()), "lr": recipe.lr * recipe.trunk_lr_factor},
        ]
        optimizer = torch.optim.SGD(
            groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
        return cls(
            net=net,
            ddp=ddp,
            data=data,
            sampler=NegativeSampler(method, bank_t, swaps, area, aspect),
            optimizer=optimizer,
            schedule=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.steps),
            scaler=torch.amp.GradScaler(device.type, enabled=execution.amp == torch.float16),
            generator=generator,
            execution=execution,
        )

    @property
    def session(self) -> tuple:
        """What a resumable checkpoint holds (``cutswap.learn.checkpoint.training_state``)."""
        return self.net, self.optimizer, self.schedule, self.scaler, self.generator


def _fingerprint(
    identity: dict[str, Any] | None,
    method: str,
    seed: int,
    model: ModelSpec,
    recipe: Recipe,
    negatives: dict[str, Any],
    execution: Execution,
    world: int,
    images: np.ndarray,
    bank: np.ndarray | None,
) -> str:
    """What must match for a checkpoint to be resumed: everything that changes the numbers from here on."""
    return json.dumps(
        {
            "identity": identity,
            "method": method,
            "seed": seed,
            "model": asdict(model) | {"weights": None, "allow_download": None},
            "recipe": asdict(recipe) | {"log_every": None, "checkpoint_every": None},
            "negatives": negatives,
            "amp": execution.amp_name,
            "world": world,
            "data": [list(images.shape), None if bank is None else list(np.shape(bank))],
        },
        sort_keys=True,
    )


@dataclass
class _Progress:
    """Where a training stands: its first step (after a resume), its log, and its earlier time and retries."""

    parts: int
    start_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    seconds_before: float = 0.0
    oom_retries: int = 0
    resumed_from: int | None = None

    def resume(self, saved: dict | None, run: _Run, method: str, seed: int, steps: int) -> None:
        if saved is None:
            return
        ckpt.restore_training_state(saved, *run.session)
        self.start_step = self.resumed_from = int(saved["step"])
        self.history = [dict(e) for e in saved["history"]]
        self.seconds_before = float(saved["seconds"])
        self.parts = max(self.parts, int(saved["parts"]))
        self.oom_retries = int(saved["oom_retries"])
        log.info("resumed %s seed %d from step %d of %d", method, seed, self.start_step, steps)


def _steps(
    run: _Run,
    recipe: Recipe,
    classes: int,
    rank: int,
    world: int,
    retry: OomRetry,
    state: _Progress,
    progress: Callable[[dict[str, float]], None] | None,
    checkpoint: str | Path | None,
    fingerprint: str,
) -> float:
    """The optimisation steps after ``state.start_step``, logging and checkpointing; returns their seconds."""
    b, per_rank = recipe.batch_size, recipe.batch_size // world
    device, amp_dtype, memory_format = run.execution.device, run.execution.amp, run.execution.memory_format

    def save_checkpoint(step: int, seconds: float) -> None:
        saved = {"format": ckpt.RESUME_FORMAT, "fingerprint": fingerprint, "step": step}
        saved |= ckpt.training_state(*run.session)
        saved |= {
            "history": state.history,
            "seconds": seconds,
            "parts": retry.parts,
            "oom_retries": retry.retries,
        }
        ckpt.save(saved, checkpoint)

    shard = class_slices(classes, b, world, device)[rank][0] if world > 1 else None
    start = window_start = time.perf_counter()
    window_steps = 0
    for step in range(state.start_step + 1, recipe.steps + 1):
        if step == state.start_step + 1 or step == recipe.freeze_steps + 1:
            set_trunk_mode(run.net, step <= recipe.freeze_steps, recipe.trunk_bn)
        inputs, labels = draw_batch(run.data, run.sampler, b, run.generator)
        if shard is not None:
            inputs, labels = inputs[shard], labels[shard]

        def attempt(n_parts: int, inputs=inputs, labels=labels):
            chunks = class_slices(classes, per_rank, n_parts, device) if n_parts > 1 else None
            return train_step(
                run.ddp, inputs, labels, run.optimizer, run.scaler, amp_dtype, chunks, memory_format
            )

        loss, logits, seen = retry.run(attempt, f"step {step}")
        with warnings.catch_warnings():
            # The fp16 loss scaler skips the update of a step whose gradients overflowed; the schedule
            # still advances (the usual practice), which torch warns about.
            warnings.filterwarnings(
                "ignore", message="Detected call of `lr_scheduler.step", category=UserWarning
            )
            run.schedule.step()
        window_steps += 1
        if step % recipe.log_every == 0 or step == recipe.steps:
            now = time.perf_counter()
            rate = window_steps * classes * b / max(now - window_start, 1e-9)
            entry = _log_entry(step, loss, logits, seen, world, run.schedule.get_last_lr()[0], rate)
            state.history.append(entry)
            window_start, window_steps = now, 0
            if progress is not None and rank == 0:
                progress(entry)
        every = recipe.checkpoint_every
        if checkpoint is not None and every and step % every == 0 and step < recipe.steps and rank == 0:
            save_checkpoint(step, state.seconds_before + time.perf_counter() - start)
    return time.perf_counter() - start
