"""Images per second of a detector on CPU: the checkpoint path (``Detector.score``, what ``cutswap predict``
and the evaluate stage run) against its ONNX export run by onnxruntime, measured in the same run.

Both compute the same outputs from uint8 images: the image score (trunk embedding, Mahalanobis distance)
and the patch route's anomaly map (every crop through the trunk, crop density, receptive-field mean,
blur). The ratio onnxruntime / checkpoint is printed with the largest differences between the two, so
that speed is not bought with other numbers. Both use the same thread count (``--threads``).

By default the detector is built here, at the demo's settings (ResNet-18 from scratch, head 512-128,
64 px images, 16 px crops every 8 px, sigma 2), on random weights and densities fitted on synthetic
images: its speed does not depend on what it learned. ``--run RUN`` benchmarks a run's detector instead
(as ``cutswap predict`` selects it) on its category's test images.

    .venv/bin/python benchmarks/bench_predict.py [--images 64 --batch 64 --repeats 3 --threads 2]
        [--run demo --category brick --method cutpaste --reports reports]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from cutswap.deploy.export import MAP, SCORE, export_onnx
from cutswap.learn.models import ProjectionNet
from cutswap.pipeline.readers import load_detector
from cutswap.score.density import GaussianDensity
from cutswap.score.detector import Detector
from cutswap.score.localization import embed_images as embed
from cutswap.score.localization import fit_patch_density


def synthetic_detector(size: int, n_fit: int = 64) -> tuple[Detector, np.ndarray]:
    """A detector at the demo's settings with random weights, and smooth random uint8 test images."""
    torch.manual_seed(0)
    model = ProjectionNet([512, 128], 2, "resnet18").eval()
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((2 * n_fit, 3, size // 8, size // 8)))
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    images = (smooth.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    fit, test = images[:n_fit], images[n_fit:]
    route = {"localization": "patch", "patch_size": 16, "patch_stride": 8, "sigma": 2.0}
    density = GaussianDensity.fit(embed(model, fit, 64, torch.device("cpu")))
    patches = fit_patch_density(model, fit, 16, 8, 6000, 512, "cpu")
    return Detector(model, density, route, size, patches, threshold={"value": float("nan")}), test


def run_detector(args: argparse.Namespace) -> tuple[Detector, np.ndarray]:
    """The detector of a run (``cutswap predict``'s selection) and its category's test images."""
    from cutswap.deploy.predict import select_detector
    from cutswap.pipeline.stores import StoreRef, open_store

    sel = select_detector(args.reports, args.run, args.category, args.method, None, None)
    detector = load_detector(sel.evaluate)
    group = open_store(sel.evaluate)
    ingest = StoreRef(**group.attrs["inputs"]["ingest"])
    print(f"run {sel.run}: {sel.category} {sel.method} s{sel.seed} ({sel.why})")
    return detector, open_store(ingest)["images"][:][group["index"][:]]


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images scored per timing")
    parser.add_argument("--batch", type=int, default=64, help="batch size of both paths")
    parser.add_argument("--size", type=int, default=64, help="working size of the synthetic detector")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--run", default=None)
    parser.add_argument("--category", default=None)
    parser.add_argument("--method", default=None)
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    detector, images = run_detector(args) if args.run else synthetic_detector(args.size)
    images = np.resize(images, (args.images, *images.shape[1:]))  # repeat to the requested count
    detector.batch_size = args.batch
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(detector, Path(tmp) / "detector.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def checkpoint():
        return detector.score(images)

    def onnxruntime():
        parts = [
            session.run([SCORE, MAP], {"images": images[i : i + args.batch]})
            for i in range(0, len(images), args.batch)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    (scores, maps), (got_scores, got_maps) = checkpoint(), onnxruntime()
    ours = timed(checkpoint, args.repeats)
    theirs = timed(onnxruntime, args.repeats)
    n = len(images)
    print(
        f"{n} images of {detector.image_size} px, batch {args.batch}, {args.threads} thread(s), "
        f"trunk {detector.model.trunk_name}, route {detector.route['localization']}"
    )
    print(f"checkpoint (Detector.score)  {n / ours:8.1f} images/s")
    print(f"onnxruntime {ort.__version__:<17}{n / theirs:8.1f} images/s")
    print(f"ratio onnxruntime / checkpoint: {ours / theirs:.2f}")
    score_err = float(np.max(np.abs(got_scores - scores) / np.abs(scores)))
    map_err = float(np.max(np.abs(got_maps - maps)) / max(float(np.abs(maps).max()), 1e-12))
    print(
        f"largest differences: scores {score_err:.1e} relative, maps {map_err:.1e} of the largest map value"
    )


if __name__ == "__main__":
    main()
