"""Out-of-memory retry of a training step in more micro-batches, with batch-norm statistics restored.

A step that runs out of memory has already updated batch-norm running statistics in its forward pass;
the retry must start from the statistics before it, or the retried run would differ from one that fit
the first time. So every attempt snapshots the model's buffers, and a failed attempt restores them,
doubles the micro-batches (``parts``) and runs again, until one image per class per part.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)
T = TypeVar("T")
OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class OomRetry:
    """Runs steps, splitting them into more micro-batches after an out-of-memory error.

    Args:
        model: whose buffers (batch-norm statistics) a failed attempt restores.
        per_class: images per class of a step on this process; ``parts`` never exceeds it.
        parts: micro-batches to start with.
        enabled: False re-raises the first error (DDP: ranks cannot agree on a retry).
    """

    def __init__(self, model: nn.Module, per_class: int, parts: int = 1, enabled: bool = True) -> None:
        if not 1 <= parts <= per_class:
            raise ValueError(f"cannot split {per_class} images per class into {parts} parts")
        self.buffers = list(model.buffers()) if enabled else []
        self.per_class, self.parts, self.enabled, self.retries = per_class, parts, enabled, 0

    def run(self, step: Callable[[int], T], label: str = "step") -> T:
        """``step(parts)``, retried with twice the parts after each out-of-memory error."""
        while True:
            snapshot = [buf.clone() for buf in self.buffers]
            try:
                return step(self.parts)
            except OutOfMemoryError as exc:
                if not self.enabled or self.parts >= self.per_class:
                    raise
                why = str(exc).splitlines()[0] if str(exc) else "out of memory"
            # Outside the except block, so the failed attempt's tensors are freed before the retry.
            with torch.no_grad():
                for buf, old in zip(self.buffers, snapshot, strict=True):
                    buf.copy_(old)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.parts, self.retries = min(2 * self.parts, self.per_class), self.retries + 1
            log.warning("out of memory at %s (%s); retrying in %d micro-batches", label, why, self.parts)
