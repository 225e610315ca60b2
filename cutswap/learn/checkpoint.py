"""The two checkpoint formats: a trained model (``checkpoint.pt``) and a resumable training state.

Both hold tensors and plain values only and are read with ``torch.load(..., weights_only=True)``, so
loading one never runs pickled code. Both are written atomically (``cutswap.atomic``).

Model (``checkpoint.pt`` in a train store)::

    model       state dict of the ``ProjectionNet``
    head_dims   list[int]; num_classes: int (1 for the untrained baseline); method: str; trunk: str

Resumable state (``resume.pt`` in a training run's work directory, every ``checkpoint_every`` steps)::

    format 1, fingerprint (JSON of what must match to resume), step, model, optimizer, scheduler, scaler,
    generator (state of the training generator), torch_rng, history (log entries), seconds, parts,
    oom_retries
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from cutswap.atomic import atomic_file
from cutswap.learn.models import ProjectionNet

log = logging.getLogger(__name__)
RESUME_FORMAT = 1


def save(payload: dict[str, Any], path: Path) -> None:
    """``torch.save``, atomically: a kill leaves the old file or the new one."""
    with atomic_file(Path(path)) as tmp:
        torch.save(payload, tmp)


def model_payload(model: ProjectionNet, head_dims: list[int], num_classes: int, method: str) -> dict:
    """What ``checkpoint.pt`` holds: tensors and plain values only, so it loads with weights_only."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {
        "model": state,
        "head_dims": list(head_dims),
        "num_classes": num_classes,
        "method": method,
        "trunk": model.trunk_name,
    }


def load_model_file(path: Path, device: torch.device | str = "cpu") -> ProjectionNet:
    """A classifier from a ``checkpoint.pt``, loaded safely (tensors only, no pickled code), in eval mode."""
    state = torch.load(Path(path), map_location=device, weights_only=True)
    trunk = str(state.get("trunk", "resnet18"))  # stores written before trunks were a setting
    model = ProjectionNet(list(state["head_dims"]), int(state["num_classes"]), trunk)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def load_resume(path: Path | None, fingerprint: str) -> dict[str, Any] | None:
    """The resumable state at ``path`` when it exists and belongs to this run (same fingerprint)."""
    if path is None or not Path(path).is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") == RESUME_FORMAT and saved.get("fingerprint") == fingerprint:
        return saved
    log.warning("ignoring checkpoint %s: it belongs to another run", path)
    return None


def training_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Everything that decides the rest of a run, as the resumable format holds it."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }


def restore_training_state(
    saved: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
) -> None:
    """Put a ``training_state`` back, so the run continues with exactly the numbers it would have had."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
