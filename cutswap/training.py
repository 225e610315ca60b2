"""Self-supervised training of the normal-vs-negatives classifier, on one device or several (DDP).

Inputs:
    images   uint8 (N, H, W, 3), the normal training images of one category at the working size
    bank     int32 (N, L, D, 6) patch-pair draws ``(h, w, y1, x1, y2, x2)`` per image and saliency level:
             the saliency-anchored bank of the pairs stage (``SALIENCY_BANK_METHODS``), or a random bank with
             the same patch sizes draw for draw (``RANDOM_BANK_METHODS``), so the control differs only in
             where patches lie; (N, D, 6) is taken as one level. Other methods take no bank.

A step's batch, built on the device from one ``torch.Generator`` (no per-sample Python)::

    rows [c * B, (c + 1) * B)   class c: 0 = normal, 1.. = one per negative kind of the method (METHOD_KINDS)

``B = batch_size``; the images of every row are drawn at random from the normal images, negatives are made
from theirs, then all rows get the same light colour jitter (as CutPaste, so colour alone never separates
the classes). The step is one SGD update on the cross-entropy over all rows. When the batch runs in
``parts`` micro-batches (after an out-of-memory retry) or over ``world`` processes (DDP), each part takes
an equal slice of every class, and the losses are weighted so the gradient is that of the whole batch;
only batch normalisation sees the smaller parts. Every process draws the same whole batch from the same
generator and trains on its own slice, so the random stream does not depend on the number of processes.

Resumable checkpoint (``checkpoint``, written atomically every ``checkpoint_every`` steps by rank 0;
``torch.load(..., weights_only=True)``)::

    format 1, fingerprint (JSON of what must match to resume), step, model, optimizer, scheduler, scaler,
    generator (state of the training generator), torch_rng, history (log entries), seconds, parts,
    oom_retries

A run resumed from it finishes with exactly the weights of an uninterrupted run (same machine, CPU).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cutswap.augment import cut_paste, cut_paste_scar, swap_patches
from cutswap.models import ProjectionNet, TrunkInfo, build_model
from cutswap.settings import UNTRAINED_METHODS, PairSettings, TrainSettings

log = logging.getLogger(__name__)

#: Negative kinds per method, in class order (class 0 is normal): ``swap`` swaps a bank pair,
#: ``cutpaste`` is CutPaste's rectangle, ``scar`` CutPaste-Scar. The number of classes is 1 + len(kinds).
METHOD_KINDS: dict[str, tuple[str, ...]] = {
    "cutswap": ("swap",),
    "cutswap-3way": ("swap", "scar"),
    "cutpaste": ("cutpaste",),
    "cutpaste-scar": ("scar",),
    "cutpaste-3way": ("cutpaste", "scar"),
    "random-swap": ("swap",),
    "imagenet-gde": (),
}
#: Methods whose swaps come from the saliency pair bank (the pairs stage): the flow passes them its store.
SALIENCY_BANK_METHODS = ("cutswap", "cutswap-3way")
#: Methods whose swaps come from a random bank with the same patch sizes (built by the train stage).
RANDOM_BANK_METHODS = ("random-swap",)
#: Methods that need a bank.
SWAP_METHODS = SALIENCY_BANK_METHODS + RANDOM_BANK_METHODS

#: Log entry fields, in the column order of the train store's ``log`` array.
LOG_FIELDS = ("step", "loss", "acc_negative", "acc_normal", "lr", "images_per_s")
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
    }
)
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def method_kinds(method: str) -> tuple[str, ...]:
    """The negative kinds of a method, in class order; raises ``ValueError`` for an unknown method."""
    try:
        return METHOD_KINDS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; methods are {list(METHOD_KINDS)}") from None


def method_seeds(method: str, seeds: list[int]) -> list[int]:
    """The seeds a method runs for: all of them, or the first only for a method that trains nothing."""
    return list(seeds[:1]) if method in UNTRAINED_METHODS else list(seeds)


def num_classes(method: str) -> int:
    """Classifier outputs for a method: normal plus one per negative kind (2 binary, 3 for 3-way)."""
    return 1 + len(method_kinds(method))


def resolve_device(device: str) -> torch.device:
    """``auto`` means the first CUDA device when there is one, else the CPU; bare ``cuda`` gets its index."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.amp``, None for full precision.

    ``auto`` is bf16 on a CUDA device that supports it (no loss scaling needed), fp16 with loss scaling on
    older CUDA devices, and off on the CPU, where autocast rarely pays; ``bf16``/``fp16`` force it anywhere
    (the CPU tests use them to run the same code path as a GPU).
    """
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def amp_name(dtype: torch.dtype | None) -> str:
    """``bf16``, ``fp16`` or ``off``: the precision a run used, as keyed and recorded."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "off"}[dtype]


def resolve_channels_last(setting: str | bool, device: torch.device) -> bool:
    """``auto`` is channels-last on CUDA (faster convolutions with tensor cores), not on the CPU."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def color_jitter(images: torch.Tensor, generator: torch.Generator, strength: float = 0.1) -> torch.Tensor:
    """Per-image brightness and contrast jitter in [-strength, strength], images in [0, 1]."""
    b = images.shape[0]
    gain = 1 + torch.empty(b, 1, 1, 1, device=images.device).uniform_(
        -strength, strength, generator=generator
    )
    shift = torch.empty(b, 1, 1, 1, device=images.device).uniform_(-strength, strength, generator=generator)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * gain + mean + shift).clamp(0, 1)


@dataclass
class NegativeSampler:
    """Builds the negatives of one method from normal images, one block per negative kind.

    Attributes:
        method: a key of ``METHOD_KINDS``.
        pairs: patch-size settings (CutPaste's area and aspect ratio).
        bank: (N, L, D, 6) or (N, D, 6) int pair draws on the device, for the swap methods.
        swaps: ``one`` (one draw of one level per negative) or ``per-level`` (one draw of every level,
            swapped in level order on the same image).
    """

    method: str
    pairs: PairSettings
    bank: torch.Tensor | None = None
    swaps: str = "one"

    def __post_init__(self) -> None:
        self.kinds = method_kinds(self.method)
        if "swap" in self.kinds:
            if self.bank is None:
                raise ValueError(f"{self.method} needs a pair bank")
            if self.bank.dim() == 3:
                self.bank = self.bank.unsqueeze(1)
            if self.bank.dim() != 4 or self.bank.shape[-1] != 6:
                raise ValueError(f"bank must be (N, L, D, 6), got {tuple(self.bank.shape)}")
        if self.swaps not in ("one", "per-level"):
            raise ValueError(f"swaps must be 'one' or 'per-level', got {self.swaps!r}")

    @property
    def num_classes(self) -> int:
        return 1 + len(self.kinds)

    def _swap(self, images: torch.Tensor, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        assert self.bank is not None
        n, levels, draws, _ = self.bank.shape
        b = images.shape[0]
        if self.swaps == "one":
            draw = torch.randint(levels * draws, (b,), device=images.device, generator=generator)
            return swap_patches(images, self.bank.view(n, levels * draws, 6)[index, draw])
        draw = torch.randint(draws, (b, levels), device=images.device, generator=generator)
        level = torch.arange(levels, device=images.device).expand(b, levels)
        return swap_patches(images, self.bank[index.view(b, 1), level, draw])  # (B, L, 6)

    def negative(
        self, kind: str, images: torch.Tensor, index: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Negatives of one kind from images (B, C, H, W) in [0, 1] whose bank rows are ``index`` (B,)."""
        if kind == "swap":
            return self._swap(images, index, generator)
        if kind == "cutpaste":
            return cut_paste(images, self.pairs.area, self.pairs.aspect, generator)
        if kind == "scar":
            return cut_paste_scar(images, generator)
        raise ValueError(f"unknown negative kind {kind!r}")

    def __call__(self, images: torch.Tensor, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Negatives for ``len(kinds)`` equal blocks of ``images``, block k made by kind k."""
        blocks = zip(self.kinds, images.chunk(len(self.kinds)), index.chunk(len(self.kinds)), strict=True)
        out = [self.negative(kind, imgs, idx, generator) for kind, imgs, idx in blocks]
        return out[0] if len(out) == 1 else torch.cat(out)


def draw_batch(
    data: torch.Tensor, sampler: NegativeSampler, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's inputs (C * B, 3, H, W) float in [0, 1] and labels (C * B,), C classes (module docstring).

    Args:
        data: uint8 (N, 3, H, W) normal images on the device.
        sampler: the method's negatives.
        batch_size: B, images per class.
        generator: the training generator; all randomness of the batch comes from it.
    """
    b, classes = batch_size, sampler.num_classes
    idx = torch.randint(data.shape[0], (classes * b,), device=data.device, generator=generator)
    batch = data[idx].float().div_(255)
    inputs = color_jitter(torch.cat([batch[:b], sampler(batch[b:], idx[b:], generator)]), generator)
    labels = torch.arange(classes, device=data.device).repeat_interleave(b)
    return inputs, labels


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


def _atomic_save(payload: dict, path: Path) -> None:
    """Write ``payload`` next to ``path`` and rename it into place: a kill leaves the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def train_classifier(
    images: np.ndarray,
    method: str,
    settings: TrainSettings,
    pairs: PairSettings,
    seed: int,
    bank: np.ndarray | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
    *,
    checkpoint: Path | None = None,
    parts: int = 1,
) -> TrainResult:
    """Train one classifier from scratch (or from ImageNet weights) and return it with its log.

    The whole training set lives on the device as uint8 (MVTec's largest category is ~400 images, about
    80 MB at 256 px), so a step never waits on Python-side data loading. Inside an initialised process
    group (``cutswap.distributed``) the model is wrapped in DDP and every rank trains on its slice.

    Args:
        images, bank: see the module docstring.
        method: a key of ``METHOD_KINDS``.
        settings: the train section; ``checkpoint_every`` applies when ``checkpoint`` is given.
        pairs: CutPaste's patch-size ranges.
        seed: seeds the model's initialisation and the training generator.
        progress: called with each log entry (rank 0 only).
        checkpoint: resumable checkpoint file; resumed from when it exists and matches this run.
        parts: micro-batches per step to start with (more save memory; an out-of-memory error on one
            process doubles it and retries the step).

    Raises:
        FloatingPointError: the loss stopped being finite.
        torch.OutOfMemoryError: even one image per class does not fit, or the run is distributed (ranks
            cannot agree on a retry).
    """
    kinds = method_kinds(method)
    classes = 1 + len(kinds)
    rank, world = _world()
    device = resolve_device(settings.device)
    amp_dtype = resolve_amp(settings.amp, device)
    channels_last = resolve_channels_last(settings.channels_last, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    b = settings.batch_size
    if b % world:
        raise ValueError(f"batch_size {b} must be a multiple of the {world} processes")
    per_rank = b // world

    torch.manual_seed(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    if method in UNTRAINED_METHODS:
        raise ValueError(f"{method} trains nothing; build its model with cutswap.models.build_model")
    net = build_model(
        settings.head_dims,
        settings.pretrained,
        classes,
        settings.trunk,
        settings.weights,
        settings.allow_download,
    )
    net = net.to(device, memory_format=memory_format)
    model: nn.Module = net
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    data = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)  # uint8 NCHW
    bank_t = None
    if bank is not None:
        bank_t = torch.from_numpy(np.asarray(bank, dtype=np.int64)).to(device)
    sampler = NegativeSampler(method, pairs, bank_t, settings.swaps)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    fingerprint = json.dumps(
        {
            "method": method,
            "seed": seed,
            "train": settings.model_dump(mode="json", exclude=EXECUTION_KNOBS),
            "amp": amp_name(amp_dtype),
            "world": world,
            "images": list(images.shape),
            "bank": None if bank is None else list(np.shape(bank)),
        },
        sort_keys=True,
    )
    start_step, history, seconds_before, oom_retries, resumed_from = 0, [], 0.0, 0, None
    if checkpoint is not None and Path(checkpoint).is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved.get("format") == 1 and saved.get("fingerprint") == fingerprint:
            net.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            generator.set_state(saved["generator"])
            torch.set_rng_state(saved["torch_rng"])
            start_step = resumed_from = int(saved["step"])
            history = [dict(e) for e in saved["history"]]
            seconds_before = float(saved["seconds"])
            parts = max(parts, int(saved["parts"]))
            oom_retries = int(saved["oom_retries"])
            log.info("resumed %s seed %d from step %d of %d", method, seed, start_step, settings.steps)
        else:
            log.warning("ignoring checkpoint %s: it belongs to another run", checkpoint)

    def save_checkpoint(step: int, seconds: float) -> None:
        _atomic_save(
            {
                "format": 1,
                "fingerprint": fingerprint,
                "step": step,
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": schedule.state_dict(),
                "scaler": scaler.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "seconds": seconds,
                "parts": parts,
                "oom_retries": oom_retries,
            },
            Path(checkpoint),
        )

    shard = class_slices(classes, b, world, device)[rank][0] if world > 1 else None
    buffers = [buf for buf in net.buffers()] if world == 1 else []
    net.train()
    start = window_start = time.perf_counter()
    window_steps = 0
    for step in range(start_step + 1, settings.steps + 1):
        inputs, labels = draw_batch(data, sampler, b, generator)
        if shard is not None:
            inputs, labels = inputs[shard], labels[shard]
        while True:
            snapshot = [buf.clone() for buf in buffers]  # batch-norm statistics, restored on a retry
            oom = None
            try:
                chunks = class_slices(classes, per_rank, parts, device) if parts > 1 else None
                loss, logits, seen = train_step(
                    model, inputs, labels, optimizer, scaler, amp_dtype, chunks, memory_format
                )
                break
            except _OOM as exc:
                if world > 1 or parts >= per_rank:
                    raise
                oom = str(exc).splitlines()[0] if str(exc) else "out of memory"
            # Outside the except block, so the failed step's tensors are freed before the retry.
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buf, old in zip(buffers, snapshot, strict=True):
                    buf.copy_(old)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            parts, oom_retries = min(2 * parts, per_rank), oom_retries + 1
            log.warning("out of memory at step %d (%s); retrying in %d micro-batches", step, oom, parts)
        with warnings.catch_warnings():
            # The fp16 loss scaler skips the update of a step whose gradients overflowed; the schedule
            # still advances (the usual practice), which torch warns about.
            warnings.filterwarnings(
                "ignore", message="Detected call of `lr_scheduler.step", category=UserWarning
            )
            schedule.step()
        window_steps += 1
        if step % settings.log_every == 0 or step == settings.steps:
            pred = logits.argmax(1)
            normal = seen == 0
            stats = torch.stack(
                [loss.float(), (pred == seen)[~normal].float().mean(), (pred == seen)[normal].float().mean()]
            )
            if world > 1:
                torch.distributed.all_reduce(stats)
                stats /= world
            loss_v, acc_negative, acc_normal = stats.tolist()
            if not math.isfinite(loss_v):
                raise FloatingPointError(f"training diverged at step {step} (loss {loss_v}); lower train.lr")
            now = time.perf_counter()
            entry = {
                "step": float(step),
                "loss": loss_v,
                "acc_negative": acc_negative,
                "acc_normal": acc_normal,
                "lr": schedule.get_last_lr()[0],
                "images_per_s": window_steps * classes * b / max(now - window_start, 1e-9),
            }
            history.append(entry)
            window_start, window_steps = now, 0
            if progress is not None and rank == 0:
                progress(entry)
        every = settings.checkpoint_every
        if checkpoint is not None and every and step % every == 0 and step < settings.steps and rank == 0:
            save_checkpoint(step, seconds_before + time.perf_counter() - start)
    session = time.perf_counter() - start
    net.eval()
    return TrainResult(
        model=net,
        log=history,
        seconds=seconds_before + session,
        images_per_s=(settings.steps - start_step) * classes * b / max(session, 1e-9),
        resumed_from=resumed_from,
        parts=parts,
        oom_retries=oom_retries,
        amp=amp_name(amp_dtype),
        channels_last=channels_last,
        world_size=world,
        num_classes=classes,
        trunk=net.trunk_info,
    )
