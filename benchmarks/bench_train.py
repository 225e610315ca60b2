"""Training step throughput of every method against a bare model step on the same batch.

The bare step is the floor: ``train_step`` (forward, cross-entropy, backward, SGD; under the same autocast
and memory format) on a batch that is already built. Ours is the trainer's step: drawing the images and
building the negatives (pair-bank swap, random swap, CutPaste, Scar, or two kinds for 3-way) with the
colour jitter on the device (``draw_batch``), then the same ``train_step`` run through the trainer's
out-of-memory retry (``OomRetry``, which snapshots batch-norm statistics every step). The ratio bare_time /
our_time shows what making the negatives costs (aim: >= 0.9). 3-way methods train on 3 classes (1.5 times the
images of a binary step), so each method is compared with a bare step of its own batch size.

    .venv/bin/python benchmarks/bench_train.py [--size 128 --batch 16 --steps 10 --repeats 3]
        [--device auto] [--amp auto|bf16|fp16|off] [--channels-last auto|on|off]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from cutswap.learn.execution import resolve_execution
from cutswap.learn.loop import train_step
from cutswap.learn.models import build_model
from cutswap.learn.oom import OomRetry
from cutswap.method.registry import REGISTRY, num_classes
from cutswap.method.sampler import NegativeSampler, draw_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="images per class")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    trained = [m.name for m in REGISTRY.values() if m.trains]  # imagenet-gde has no training step
    parser.add_argument("--methods", default=",".join(trained))
    args = parser.parse_args()
    execution = resolve_execution(
        args.device, args.amp, {"auto": "auto", "on": True, "off": False}[args.channels_last]
    )
    device, amp, memory_format = execution.device, execution.amp, execution.memory_format
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
    bank_t = torch.from_numpy(bank).to(device)

    def make(method: str, bare: bool):
        classes = num_classes(method)
        model = build_model([512, 128], num_classes=classes).to(device, memory_format=memory_format).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        gen = torch.Generator(device=device).manual_seed(0)
        sampler = NegativeSampler(method, bank_t)
        retry = OomRetry(model, b)
        fixed = draw_batch(data, sampler, b, gen)

        def step():
            if bare:
                train_step(model, *fixed, opt, scaler, amp, None, memory_format)
                return
            inputs, labels = draw_batch(data, sampler, b, gen)
            retry.run(lambda _parts: train_step(model, inputs, labels, opt, scaler, amp, None, memory_format))

        return step

    def run(step) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / args.steps

    print(
        f"device {device}, amp {execution.amp_name}, channels-last {execution.channels_last}, "
        f"{b} images per class at {s}px, {args.steps} steps x {args.repeats} repeats, "
        "bare and ours interleaved (medians)"
    )
    for method in args.methods.split(","):
        classes = num_classes(method)
        bare, ours = make(method, bare=True), make(method, bare=False)
        bare(), ours()  # warm-up
        times = [(run(bare), run(ours)) for _ in range(args.repeats)]  # alternating: load drifts hit both
        t_bare = statistics.median(t for t, _ in times)
        t_ours = statistics.median(t for _, t in times)
        ratio = statistics.median(tb / to for tb, to in times)
        print(
            f"{method:<14} {classes} classes  bare {classes * b / t_bare:8.1f} img/s  "
            f"ours {classes * b / t_ours:8.1f} img/s  ratio {ratio:.3f}"
        )


if __name__ == "__main__":
    main()
