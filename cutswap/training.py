"""Self-supervised training of the normal-vs-negative classifier.

Inputs:
    images   uint8 (N, H, W, 3), the normal training images of one category at the working size
    bank     int32 (N, L, D, 6) patch-pair draws ``(h, w, y1, x1, y2, x2)`` per image and saliency level:
             the saliency-anchored bank of the pairs stage (``cutswap``), or a random bank with the same
             patch sizes draw for draw (``random-swap``), so the control differs only in where patches lie

Each step draws ``batch_size`` normal images and ``batch_size`` negatives (other random normal images,
augmented by the method) on the device, applies the same light colour jitter to all of them (as CutPaste
does, so that colour alone never separates the classes) and takes one SGD step on cross-entropy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cutswap.augment import cut_paste, swap_patches
from cutswap.models import ProjectionNet, build_model
from cutswap.settings import PairSettings, TrainSettings

log = logging.getLogger(__name__)

#: Methods whose negatives swap two patches drawn from a bank.
SWAP_METHODS = ("cutswap", "random-swap")


def resolve_device(device: str) -> torch.device:
    """``auto`` means the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
    """Builds a batch of negatives for one method from a batch of normal images."""

    method: str
    pairs: PairSettings
    bank: torch.Tensor | None = None  # (N, L*D, 6) on the device

    def __post_init__(self) -> None:
        if self.method in SWAP_METHODS and self.bank is None:
            raise ValueError(f"{self.method} needs a pair bank")

    def __call__(self, images: torch.Tensor, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.method in SWAP_METHODS:
            assert self.bank is not None
            draw = torch.randint(
                self.bank.shape[1], (images.shape[0],), device=images.device, generator=generator
            )
            return swap_patches(images, self.bank[index, draw])
        if self.method == "cutpaste":
            return cut_paste(images, self.pairs.area, self.pairs.aspect, generator)
        raise ValueError(f"unknown method {self.method!r}")


@dataclass
class TrainResult:
    model: ProjectionNet
    log: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_s: float = 0.0


def train_classifier(
    images: np.ndarray,
    method: str,
    settings: TrainSettings,
    pairs: PairSettings,
    seed: int,
    bank: np.ndarray | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train one classifier from scratch (or from ImageNet weights) and return it with its log.

    The whole training set lives on the device as uint8 (MVTec's largest category is ~400 images, about
    80 MB at 256 px), so a step never waits on Python-side data loading.
    """
    device = resolve_device(settings.device)
    torch.manual_seed(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    model = build_model(settings.head_dims, settings.pretrained).to(device)
    data = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)  # uint8 NCHW
    bank_t = None
    if bank is not None:
        bank_t = torch.from_numpy(np.asarray(bank, dtype=np.int64)).to(device)
        bank_t = bank_t.reshape(bank_t.shape[0], -1, 6)
    sampler = NegativeSampler(method, pairs, bank_t)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps)
    loss_fn = nn.CrossEntropyLoss()
    b = settings.batch_size
    labels = torch.cat([torch.zeros(b, dtype=torch.long), torch.ones(b, dtype=torch.long)]).to(device)
    n = data.shape[0]
    model.train()
    history: list[dict[str, float]] = []
    start = window_start = time.perf_counter()
    window_steps = 0
    for step in range(1, settings.steps + 1):
        idx = torch.randint(n, (2 * b,), device=device, generator=generator)
        batch = data[idx].float().div_(255)
        normal, negative = batch[:b], sampler(batch[b:], idx[b:], generator)
        inputs = color_jitter(torch.cat([normal, negative]), generator)
        _, logits = model(inputs)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        window_steps += 1
        if step % settings.log_every == 0 or step == settings.steps:
            loss_v = loss.item()
            if not math.isfinite(loss_v):
                raise FloatingPointError(f"training diverged at step {step} (loss {loss_v}); lower train.lr")
            now = time.perf_counter()
            entry = {
                "step": float(step),
                "loss": loss_v,
                "acc_negative": (logits[b:].argmax(1) == 1).float().mean().item(),
                "acc_normal": (logits[:b].argmax(1) == 0).float().mean().item(),
                "lr": schedule.get_last_lr()[0],
                "images_per_s": window_steps * 2 * b / max(now - window_start, 1e-9),
            }
            history.append(entry)
            window_start, window_steps = now, 0
            if progress is not None:
                progress(entry)
    seconds = time.perf_counter() - start
    model.eval()
    return TrainResult(model, history, seconds, settings.steps * 2 * b / max(seconds, 1e-9))
