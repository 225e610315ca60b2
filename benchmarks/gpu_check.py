"""GPU acceptance: the CUDA paths of cutswap, each checked against the CPU or a bare step, one JSON line each.

Run on a machine with a CUDA device (``benchmarks/gpu_check.sh``); every line is
``{"check": NAME, "status": "ok"|"failed"|"skipped", "device": ..., ...figures, "reason": ...}``:

    environment       torch, CUDA, the devices seen
    bf16_autocast     a training step under bf16 autocast: finite loss, bf16 activations, fp32 weights
    channels_last     the same step in channels-last and in contiguous memory: equal losses (to bf16's
                      precision), steps per second of each
    train_throughput  the trainer's step (drawing the negatives on the device, OOM retry) against a bare
                      ``train_step`` on a ready batch, images/s and their ratio (aim >= 0.9)
    saliency          ``cutswap.method.saliency.SaliencyExtractor`` on the device against the CPU on the
                      same images: largest map difference, images/s
    coreset           PatchCore's greedy coreset on the device against the CPU: the share of equal picks,
                      seconds of each
    ddp               a data-parallel training (``cutswap.learn.ddp``, torchrun, NCCL) over two devices

Without CUDA each CUDA check is skipped with its reason, so ``make test`` keeps the script working;
``--on-cpu`` runs the same checks on the CPU at ``--size`` instead (what the test does), so their code is
exercised everywhere. Exit status 1 when a check failed.

    benchmarks/gpu_check.sh [--size 128] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cutswap.learn.execution import Execution, resolve_execution  # noqa: E402
from cutswap.learn.loop import train_step  # noqa: E402
from cutswap.learn.models import build_model  # noqa: E402
from cutswap.learn.oom import OomRetry  # noqa: E402
from cutswap.method.sampler import NegativeSampler, draw_batch  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _per_second(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Calls of ``fn`` per second, after one warm-up call."""
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return repeats / (time.perf_counter() - start)


class _Step:
    """One method's training step on random images: a bare one on a fixed batch, or the trainer's."""

    def __init__(self, execution: Execution, size: int, batch: int, method: str = "cutpaste") -> None:
        device = execution.device
        torch.manual_seed(0)
        self.execution = execution
        self.model = build_model([64, 32], num_classes=2).to(device, memory_format=execution.memory_format)
        self.model.train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.scaler = torch.amp.GradScaler(device.type, enabled=execution.amp == torch.float16)
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.data = torch.randint(0, 256, (4 * batch, 3, size, size), dtype=torch.uint8, device=device)
        self.sampler = NegativeSampler(method, None)
        self.batch = batch
        self.fixed = draw_batch(self.data, self.sampler, batch, self.gen)
        self.retry = OomRetry(self.model, batch)

    def bare(self) -> float:
        e = self.execution
        loss, _, _ = train_step(self.model, *self.fixed, self.opt, self.scaler, e.amp, None, e.memory_format)
        return float(loss)

    def ours(self) -> None:
        e = self.execution
        inputs, labels = draw_batch(self.data, self.sampler, self.batch, self.gen)
        self.retry.run(
            lambda _p: train_step(
                self.model, inputs, labels, self.opt, self.scaler, e.amp, None, e.memory_format
            )
        )


def check_bf16(device: str, args: argparse.Namespace) -> dict[str, Any]:
    execution = resolve_execution(device, "bf16", "auto")
    step = _Step(execution, args.size, args.batch)
    seen: list[torch.dtype] = []
    hook = step.model.trunk.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    loss = step.bare()
    hook.remove()
    weights = {p.dtype for p in step.model.parameters()}
    ok = np.isfinite(loss) and seen and seen[0] == torch.bfloat16 and weights == {torch.float32}
    return {
        "loss": loss,
        "activations": str(seen[0]) if seen else None,
        "weights": sorted(map(str, weights)),
        "ok": bool(ok),
    }


def check_channels_last(device: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    losses = {}
    for name, flag in (("channels_last", True), ("contiguous", False)):
        step = _Step(resolve_execution(device, "auto", flag), args.size, args.batch)
        losses[name] = step.bare()
        out[f"{name}_steps_per_s"] = round(_per_second(step.bare, step.execution.device, args.steps), 2)
    out["loss_difference"] = abs(losses["channels_last"] - losses["contiguous"])
    out["speedup"] = round(out["channels_last_steps_per_s"] / out["contiguous_steps_per_s"], 3)
    out["ok"] = bool(out["loss_difference"] <= 0.05 * max(1.0, abs(losses["contiguous"])))
    return out


def check_train_throughput(device: str, args: argparse.Namespace) -> dict[str, Any]:
    step = _Step(resolve_execution(device), args.size, args.batch)
    images = 2 * args.batch
    bare = _per_second(step.bare, step.execution.device, args.steps) * images
    ours = _per_second(step.ours, step.execution.device, args.steps) * images
    return {
        "amp": step.execution.amp_name,
        "channels_last": step.execution.channels_last,
        "bare_images_per_s": round(bare, 1),
        "ours_images_per_s": round(ours, 1),
        "ratio": round(ours / bare, 3),
        "ok": True,  # a figure to read, not a pass/fail: the aim (>= 0.9) is the reader's
    }


def check_saliency(device: str, args: argparse.Namespace) -> dict[str, Any]:
    from cutswap.method.backbones import load_backbone
    from cutswap.method.saliency import SaliencyExtractor

    backbone = load_backbone("efficientnet_lite0")
    images = torch.randint(
        0,
        256,
        (args.batch, args.size, args.size, 3),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0),
    )
    with SaliencyExtractor(backbone) as extractor:
        reference = extractor(images)
        backbone.model.to(device)
        on_device = images.to(device)
        maps = extractor(on_device)
        rate = _per_second(lambda: extractor(on_device), torch.device(device), max(1, args.steps // 4))
    ref = reference[0] if isinstance(reference, tuple) else reference
    got = maps[0] if isinstance(maps, tuple) else maps
    diff = float((got.float().cpu() - ref.float()).abs().max())
    return {
        "backbone": backbone.name,
        "max_difference": diff,
        "images_per_s": round(rate * args.batch, 1),
        "ok": diff < 0.05,
    }


def check_coreset(device: str, args: argparse.Namespace) -> dict[str, Any]:
    from cutswap.score.patchcore import greedy_coreset

    features = torch.randn(args.patches, 384, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    cpu = greedy_coreset(features, 0.05)
    cpu_s = time.perf_counter() - start
    moved = features.to(device)
    _sync(torch.device(device))
    start = time.perf_counter()
    dev = greedy_coreset(moved, 0.05)
    _sync(torch.device(device))
    dev_s = time.perf_counter() - start
    same = float((dev.cpu() == cpu).float().mean())
    return {
        "patches": args.patches,
        "picked": len(cpu),
        "equal_picks": same,
        "cpu_s": round(cpu_s, 3),
        "device_s": round(dev_s, 3),
        "ok": same >= 0.95,
    }


def check_ddp(device: str, args: argparse.Namespace) -> dict[str, Any]:
    from cutswap.learn.ddp import launch
    from cutswap.learn.loop import ModelSpec, Recipe

    images = np.random.default_rng(0).integers(0, 256, (32, args.size, args.size, 3), dtype=np.uint8)
    job = {
        "images": images,
        "method": "cutpaste",
        "model": ModelSpec((32,), 2),
        "recipe": Recipe(steps=4, batch_size=4, lr=0.03),
        "execution": resolve_execution(device),
        "seed": 0,
        "bank": None,
        "swaps": "one",
        "area": (0.02, 0.15),
        "aspect": (0.3, 3.3),
        "identity": None,
    }
    with tempfile.TemporaryDirectory() as tmp:
        lines: list[str] = []
        start = time.perf_counter()
        result = launch(job, 2, Path(tmp) / "work", Path(tmp) / "out.pt", log_line=lines.append)
        seconds = time.perf_counter() - start
    return {
        "world_size": result.get("world_size"),
        "seconds": round(seconds, 1),
        "ok": result.get("world_size") == 2,
    }


CHECKS: dict[str, tuple[Callable[[str, argparse.Namespace], dict[str, Any]], int]] = {
    "bf16_autocast": (check_bf16, 1),
    "channels_last": (check_channels_last, 1),
    "train_throughput": (check_train_throughput, 1),
    "saliency": (check_saliency, 1),
    "coreset": (check_coreset, 1),
    "ddp": (check_ddp, 2),
}


def _environment() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "check": "environment",
        "status": "ok",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image side")
    parser.add_argument("--batch", type=int, default=16, help="images per class")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per figure")
    parser.add_argument("--patches", type=int, default=20000, help="patches of the coreset check")
    parser.add_argument("--on-cpu", action="store_true", help="run every check on the CPU instead")
    parser.add_argument("--only", default=None, help="comma-separated checks (default: all)")
    args = parser.parse_args(argv)
    print(json.dumps(_environment()), flush=True)
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    failed = False
    for name, (check, needs) in CHECKS.items():
        if args.only and name not in args.only.split(","):
            continue
        line: dict[str, Any] = {"check": name, "device": "cpu" if args.on_cpu else "cuda"}
        if not args.on_cpu and devices < needs:
            why = (
                "no CUDA device (torch.cuda.is_available() is False)"
                if not devices
                else f"needs {needs} CUDA devices, {devices} seen"
            )
            print(json.dumps({**line, "status": "skipped", "reason": why}), flush=True)
            continue
        try:
            figures = check(line["device"], args)
            ok = figures.pop("ok")
            line.update(status="ok" if ok else "failed", **figures)
        except Exception as exc:  # noqa: BLE001 (a check that raises is a failed check, said on its line)
            line.update(
                status="failed",
                reason=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(limit=3),
            )
        failed |= line["status"] == "failed"
        print(json.dumps(line, default=str), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
