"""The machine a report was made on, as ``provenance.json`` records it under ``machine``::

    platform        str          ``platform.platform()``
    cpu             str          the CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows
    cpus            int          logical CPUs
    torch_threads   int          torch's intra-op threads
    gpu             str | None   the first CUDA device's name, None without one

Recorded because per-seed numbers do not carry across machines: training is chaotic in float rounding, so
a seed fixes a run only on the machine that made it (``cutswap.report.prose.machine_sentence`` says so on
the page).
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

import torch


def machine() -> dict[str, Any]:
    """This machine (module docstring)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
    }
