"""Training step throughput against a bare model step on the same batch.

The bare step is the floor: forward, cross-entropy, backward and SGD on a batch that is already built.
Ours adds drawing the images, building the negatives (pair-bank swap, random swap or CutPaste) and the
colour jitter on the device. The ratio bare_time / our_time shows what negative generation costs
(aim: >= 0.9).

    .venv/bin/python benchmarks/bench_train.py [--size 128 --batch 16 --steps 10 --repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from cutswap.models import build_model
from cutswap.settings import PairSettings
from cutswap.training import NegativeSampler, color_jitter, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    b, s = args.batch, args.size
    data = torch.randint(0, 256, (args.images, 3, s, s), dtype=torch.uint8, device=device)
    rng = np.random.default_rng(0)
    hw = rng.integers(s // 8, s // 4, size=(args.images, 4, 16, 2))
    bank = np.concatenate(
        [
            hw,
            rng.integers(0, s // 2, (args.images, 4, 16, 2)),
            s // 2 + rng.integers(0, s // 4, (args.images, 4, 16, 2)),
        ],
        -1,
    )
    bank_t = torch.from_numpy(bank).to(device).reshape(args.images, -1, 6)
    labels = torch.cat([torch.zeros(b), torch.ones(b)]).long().to(device)
    loss_fn = nn.CrossEntropyLoss()

    def make(method: str | None):
        model = build_model([512, 128]).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
        gen = torch.Generator(device=device).manual_seed(0)
        sampler = NegativeSampler(method or "cutpaste", PairSettings(), bank_t)
        fixed = data[: 2 * b].float() / 255

        def step():
            if method is None:
                inputs = fixed
            else:
                idx = torch.randint(args.images, (2 * b,), device=device, generator=gen)
                batch = data[idx].float().div_(255)
                inputs = color_jitter(torch.cat([batch[:b], sampler(batch[b:], idx[b:], gen)]), gen)
            _, logits = model(inputs)
            loss = loss_fn(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    def timed(step) -> float:
        step()  # warm-up
        times = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) / args.steps)
        return statistics.median(times)

    print(f"device {device}, batch {b}+{b} at {s}px, {args.steps} steps x {args.repeats} repeats (median)")
    bare = timed(make(None))
    print(f"{'bare model step':<22} {2 * b / bare:8.1f} img/s")
    for method in ("cutswap", "random-swap", "cutpaste"):
        ours = timed(make(method))
        print(f"{method + ' step':<22} {2 * b / ours:8.1f} img/s   ratio vs bare {bare / ours:.3f}")


if __name__ == "__main__":
    main()
