"""A training step in channels-last against the default (contiguous) memory format, both trunks, one run.

The step is ``cutswap.learn.loop.train_step`` (forward, cross-entropy, backward, SGD) on a ready batch of
random images, full precision, on ``--device``; each format's steps alternate with the other's, so a load
that comes and goes hits both, and the medians are printed with their ratio. This is what
``train.channels_last: auto`` decides on (``cutswap.learn.execution.resolve_channels_last``).

    .venv/bin/python benchmarks/bench_channels_last.py [--size 128 --batch 16 --steps 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cutswap.learn.execution import resolve_device
from cutswap.learn.loop import train_step
from cutswap.learn.models import build_model

FORMATS = {"contiguous": torch.contiguous_format, "channels-last": torch.channels_last}


def _step(trunk: str, fmt: torch.memory_format, size: int, batch: int, device: torch.device):
    torch.manual_seed(0)
    model = build_model([512, 128], False, 2, trunk).to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    x = torch.rand(2 * batch, 3, size, size, device=device)
    y = torch.arange(2 * batch, device=device) % 2

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(model, x, y, opt, scaler, None, None, fmt)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step()  # warm-up
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="images per class")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"{args.size} px, {2 * args.batch} images per step, {device}, {torch.get_num_threads()} threads")
    for trunk in ("resnet18", "efficientnet_lite0"):
        steps = {name: _step(trunk, fmt, args.size, args.batch, device) for name, fmt in FORMATS.items()}
        times: dict[str, list[float]] = {name: [] for name in FORMATS}
        for _ in range(args.steps):
            for name, step in steps.items():
                times[name].append(step())
        base, fast = (statistics.median(times[name]) for name in FORMATS)
        print(
            f"{trunk:<20} contiguous {base:7.3f} s/step  channels-last {fast:7.3f} s/step  "
            f"ratio {base / fast:.2f}x"
        )


if __name__ == "__main__":
    main()
