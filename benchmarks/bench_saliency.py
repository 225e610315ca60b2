"""Throughput of multilevel LayerCAM against its floor and against the grad-cam package.

Usage::

    .venv/bin/python benchmarks/bench_saliency.py [--batch 16] [--size 224] [--input-size 224] [--repeats 3]
        [--backbone efficientnet_lite0] [--device cpu] [--threads N] [--clock wall|cpu] [--skip-gradcam]

Three ways of getting the same four maps for one batch of ``--batch`` random uint8 ``(B, H, W, 3)`` images:

(a) ours: ``cutswap.method.saliency.SaliencyExtractor`` (one forward, one backward, all levels).
(b) bare: the minimum any method needs, a forward of the same backbone and
    ``torch.autograd.grad`` of the summed top-1 logits with respect to the level-1 activation. No maps.
(c) grad-cam: ``pytorch_grad_cam.LayerCAM``, one object and one call per level (how a user of that package
    gets four maps); its model copy has trainable parameters, as a user's would (grad-cam gets gradients
    through ``loss.backward()``, which needs them).

When ``--input-size`` differs from ``--size`` (e.g. ``--size 64``: the stage's default ``input_size`` 224 at a
small working size), two more are timed in the same run:

(d) ours@S: the extractor with ``input_size=S``: the batch resized to ``S x S``, maps resampled back to
    ``--size``. Its ratio to (a) is what the non-degenerate deep levels cost.
(e) bare@S: (b) on the batch already resized to ``S x S`` (the resize not timed), the floor for (d).

Each is warmed up once, then timed ``--repeats`` times on the same batch; the median is reported.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch

from cutswap.method.backbones import Backbone, load_backbone
from cutswap.method.saliency import SaliencyExtractor


def _timed(
    methods: dict[str, Callable[[], object]], repeats: int, device: torch.device, clock: Callable[[], float]
) -> dict[str, float]:
    """Median seconds per call of each method on ``clock``, after one warm-up call each.

    The methods take turns within each repeat (in alternating order), so that load from other processes on a
    shared machine falls on all of them alike rather than on whichever happened to run during a busy spell.
    """
    for fn in methods.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods.items())
    for repeat in range(repeats):
        # Alternate the order too, so that no method always runs right after the same neighbour.
        for name, fn in order if repeat % 2 == 0 else order[::-1]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = clock()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _bare(backbone: Backbone, images: torch.Tensor) -> Callable[[], object]:
    """Forward plus backward to the shallowest level: the floor for any one-pass multilevel method."""
    level1 = backbone.levels["level1"]
    captured: dict[str, torch.Tensor] = {}

    def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor | None:
        if "active" not in captured:
            return None
        output = output.detach().requires_grad_(True)
        captured["a"] = output
        return output

    level1.register_forward_hook(hook)

    def run() -> object:
        x = backbone.normalize(images.permute(0, 3, 1, 2))  # same one-pass uint8 conversion as ours
        captured["active"] = x
        try:
            logits = backbone.model(x)
        finally:
            del captured["active"]
        score = logits.gather(1, logits.detach().argmax(1, keepdim=True)).sum()
        return torch.autograd.grad(score, [captured.pop("a")])

    return run


def _gradcam(backbone: Backbone, images: torch.Tensor) -> Callable[[], object]:
    """Four grad-cam LayerCAM calls, one per level, on a trainable copy of the backbone."""
    from pytorch_grad_cam import LayerCAM

    model = copy.deepcopy(backbone.model).requires_grad_(True)
    names = {module: name for name, module in backbone.model.named_modules()}
    layers = [model.get_submodule(names[module]) for module in backbone.levels.values()]

    def run() -> object:
        x = backbone.normalize(images.permute(0, 3, 1, 2))
        maps = []
        for layer in layers:
            with LayerCAM(model, [layer]) as cam:
                maps.append(cam(x, None))
        return maps

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="working size of the random images")
    parser.add_argument(
        "--input-size",
        type=int,
        default=224,
        help="also time the extractor with this input_size (0, or equal to --size: leave (d), (e) out)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of this thread (needs --threads 1 and --device cpu), which "
        "time stolen by other processes on a shared machine does not inflate",
    )
    parser.add_argument("--skip-gradcam", action="store_true", help="leave out (c), which is slow")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--clock cpu needs --threads 1 --device cpu (it measures the calling thread only)")
    clock = time.perf_counter if args.clock == "wall" else time.thread_time

    device = torch.device(args.device)
    backbone = load_backbone(args.backbone)
    backbone.model.to(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (args.batch, args.size, args.size, 3), dtype=torch.uint8, generator=generator
    )
    images = images.to(device)
    print(
        f"backbone {backbone.name} ({backbone.weights_sha256[:12]}), batch {args.batch}, "
        f"{args.size}x{args.size}, device {device}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, {args.clock} clock, median of {args.repeats}"
    )

    # grad-cam's copy of the model is made first, before our hooks exist, so it copies none of them.
    gradcam = None if args.skip_gradcam else _gradcam(backbone, images)
    size = args.input_size if args.input_size not in (0, args.size) else None
    with (
        SaliencyExtractor(backbone) as extractor,
        SaliencyExtractor(backbone, input_size=size) as sized,
    ):
        methods = {"ours": lambda: extractor(images), "bare": _bare(backbone, images)}
        if gradcam is not None:
            methods["grad-cam"] = gradcam
        if size is not None:
            resized = torch.nn.functional.interpolate(
                images.permute(0, 3, 1, 2).float(),
                size=(size, size),
                mode="bilinear",
                align_corners=False,
                antialias=size < args.size,
            )
            resized = resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            methods[f"ours@{size}"] = lambda: sized(images)
            methods[f"bare@{size}"] = _bare(backbone, resized)
        seconds = _timed(methods, args.repeats, device, clock)
    rate = {name: args.batch / value for name, value in seconds.items()}
    notes = {
        "ours": "",
        "bare": "forward + backward to level1",
        "grad-cam": "4 x LayerCAM",
        f"ours@{size}": f"input_size={size}, maps at {args.size}x{args.size}",
        f"bare@{size}": f"(b) on images already {size}x{size}",
    }
    for label, name in zip("abcde" if gradcam is not None else "abde", seconds, strict=False):
        print(
            f"({label}) {name:9s} {rate[name]:8.2f} images/s  ({seconds[name] * 1e3:8.1f} ms/batch)  "
            f"{notes[name]}"
        )
    print(f"ours / bare     = {rate['ours'] / rate['bare']:.3f}  (aim >= 0.9)")
    if "grad-cam" in rate:
        print(f"ours / grad-cam = {rate['ours'] / rate['grad-cam']:.2f}x (aim >= 6x)")
    if size is not None:
        pixels = (size / args.size) ** 2
        print(
            f"ours@{size} / bare@{size} = {rate[f'ours@{size}'] / rate[f'bare@{size}']:.3f}  (aim >= 0.9)\n"
            f"ours / ours@{size} = {rate['ours'] / rate[f'ours@{size}']:.2f}x  "
            f"(the cost of input_size={size}; {pixels:.1f}x the pixels)"
        )


if __name__ == "__main__":
    main()
