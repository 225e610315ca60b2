"""How a job computes: device, precision and memory format, resolved once and passed on resolved.

The settings say ``auto`` for all three; what ``auto`` means depends on the machine, so it is resolved in
one place per job (``resolve_execution``) and the resolved value travels to everything that computes (the
training loop, DDP ranks through ``to_dict``/``from_dict``, the evaluation), is keyed where it changes
results (precision) and recorded in the store attrs. Nothing below re-reads the settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

_AMP_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "off"}
_AMP_DTYPES = {name: dtype for dtype, name in _AMP_NAMES.items()}


def resolve_device(device: str) -> torch.device:
    """``auto`` means the first CUDA device when there is one, else the CPU; bare ``cuda`` gets its index."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for an ``amp`` setting, None for full precision.

    ``auto`` is bf16 on a CUDA device that supports it (no loss scaling needed), fp16 with loss scaling on
    older CUDA devices, and off on the CPU, where autocast rarely pays; ``bf16``/``fp16`` force it anywhere
    (the CPU tests use them to run the same code path as a GPU).

    Raises:
        ValueError: not one of ``auto``, ``bf16``, ``fp16``, ``off``.
    """
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp not in _AMP_DTYPES:
        raise ValueError(f"amp must be auto, bf16, fp16 or off, got {amp!r}")
    return _AMP_DTYPES[amp]


def amp_name(dtype: torch.dtype | None) -> str:
    """``bf16``, ``fp16`` or ``off``: the precision a run used, as keyed and recorded."""
    return _AMP_NAMES[dtype]


def resolve_channels_last(setting: str | bool, device: torch.device) -> bool:
    """``auto`` is channels-last on CUDA (faster convolutions with tensor cores), not on the CPU.

    Why not on the CPU, although oneDNN runs a training step faster in it there too (EfficientNet-Lite0
    2.4x at 128 px and 3.8x at 256 px, ResNet-18 1.03x and 1.11x, on 2 cores:
    ``benchmarks/bench_channels_last.py``): its convolutions' sums then depend far more on how many threads
    run them. Three steps of ResNet-18 at 1 and at 2 threads end 0.009 apart in some weight channels-last,
    0.0005 contiguous, and a run's trainings on 1-thread Dask workers stopped matching the same run in one
    2-thread process (``tests/flows/test_benchmark.py``). A CPU user who wants the speed over that
    agreement sets ``train.channels_last: true``; like the device, it is not in the store's key.
    """
    return device.type == "cuda" if setting == "auto" else bool(setting)


@dataclass(frozen=True)
class Execution:
    """A resolved device, autocast dtype and memory format.

    Attributes:
        device: where tensors live.
        amp: autocast dtype, None for full precision.
        channels_last: whether inputs and the model use the channels-last memory format.
    """

    device: torch.device
    amp: torch.dtype | None = None
    channels_last: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def amp_name(self) -> str:
        return amp_name(self.amp)

    def for_rank(self, local_rank: int) -> Execution:
        """The same execution on a DDP rank's own GPU (one CUDA device per rank); unchanged on the CPU."""
        if self.device.type != "cuda":
            return self
        return replace(self, device=torch.device("cuda", local_rank))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for job files and store attrs."""
        return {"device": str(self.device), "amp": self.amp_name, "channels_last": self.channels_last}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Execution:
        return cls(torch.device(data["device"]), _AMP_DTYPES[data["amp"]], bool(data["channels_last"]))


def resolve_execution(
    device: str = "auto", amp: str = "auto", channels_last: str | bool = "auto"
) -> Execution:
    """Resolve the three settings together: precision and memory format depend on the device."""
    dev = resolve_device(device)
    return Execution(dev, resolve_amp(amp, dev), resolve_channels_last(channels_last, dev))
