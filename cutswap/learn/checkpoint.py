"""The two checkpoint formats: a trained model (``checkpoint.pt``) and a resumable training state.

Both hold tensors and plain values only and are read with ``torch.load(..., weights_only=True)``, so
loading one never runs pickled code. Both are written atomically, to a local file or an object
(``cutswap.roots``: a training job resumed on another host finds the state its first host saved).

Model (``checkpoint.pt`` in a train store)::

    model       state dict of the ``ProjectionNet``
    head_dims   list[int]; num_classes: int (1 for the untrained baseline); method: str; trunk: str

Resumable state (``resume.pt`` in a training run's work folder or prefix, every ``checkpoint_every`` steps)::

    format 1, fingerprint (JSON of what must match to resume), step, model, optimizer, scheduler, scaler,
    generator (state of the training generator), torch_rng, history (log entries), seconds, parts,
    oom_retries
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch

from cutswap import roots
from cutswap.learn.models import ProjectionNet

log = logging.getLogger(__name__)
RESUME_FORMAT = 1


def to_bytes(payload: dict[str, Any]) -> bytes:
    """What ``torch.save`` writes for ``payload``."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save(payload: dict[str, Any], location: str | Path) -> None:
    """``torch.save`` to a file or an object, atomically: a kill leaves the old version or the new one."""
    roots.write_bytes(str(location), to_bytes(payload))


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


def load_model_file(source: Path | bytes, device: torch.device | str = "cpu") -> ProjectionNet:
    """A classifier from a ``checkpoint.pt`` (a file, or its bytes), loaded safely (tensors only, no pickled
    code), in eval mode."""
    target = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    state = torch.load(target, map_location=device, weights_only=True)
    trunk = str(state.get("trunk", "resnet18"))  # stores written before trunks were a setting
    model = ProjectionNet(list(state["head_dims"]), int(state["num_classes"]), trunk)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def load_resume(location: str | Path | None, fingerprint: str) -> dict[str, Any] | None:
    """The resumable state at a file or object when it exists and belongs to this run (same fingerprint)."""
    data = None if location is None else roots.read_bytes(str(location))
    if data is None:
        return None
    saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if saved.get("format") == RESUME_FORMAT and saved.get("fingerprint") == fingerprint:
        return saved
    log.warning("ignoring checkpoint %s: it belongs to another run", location)
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
