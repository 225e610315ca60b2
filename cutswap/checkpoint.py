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
from cutswap.models import ProjectionNet

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
