"""Speed and agreement of cutswap's batched clustering against the reference packages.

Run: ``.venv/bin/python benchmarks/bench_cluster.py [--maps 64 --size 128 --repeats 3 --device cpu]``

Compares, on synthetic saliency-like maps (bicubic-upsampled smooth random fields, ReLU'd, min-max normalised
to [0, 1] and stored as float16, like the saliency stage's output):

- our fuzzy c-means (histogram mode, the default; and exact mode) against ``skfuzzy.cluster.cmeans`` run map
  by map with the same K, m, error tolerance and iteration cap, as a user of that package would;
- our k-means against scikit-learn ``KMeans(n_clusters=K, n_init=10)`` map by map.

Every timing is the median of ``--repeats`` runs after one warm-up run. Beside the speed it prints the largest
absolute centroid difference to the reference, so that speed is not bought with wrong answers. For k-means it
also prints the objective (inertia) relative to sklearn's, because both are local searches and sklearn's best
of 10 restarts is not always the optimum.
"""

from __future__ import annotations

import argparse

import numpy as np
import skfuzzy
import torch
from sklearn.cluster import KMeans
from timing import timed

from cutswap.method.clustering import cluster_maps

K = 3
M = 2.0
TOL = 1e-5
MAX_ITER = 100


def synthetic_maps(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``(n, size, size)`` float16 maps in [0, 1]: smooth fields with a zero floor, like ReLU'd CAMs."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, 7, 7, generator=g)
    field = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[
        :, 0
    ]
    field = (field - 0.3).clamp_min(0)
    lo = field.amin(dim=(1, 2), keepdim=True)
    hi = field.amax(dim=(1, 2), keepdim=True)
    return ((field - lo) / (hi - lo).clamp_min(1e-12)).to(torch.float16)


def skfuzzy_all(maps: np.ndarray) -> np.ndarray:
    out = []
    for m in maps:
        data = m.reshape(1, -1)  # skfuzzy wants (features, samples)
        cntr = skfuzzy.cluster.cmeans(data, c=K, m=M, error=TOL, maxiter=MAX_ITER, seed=0)[0]
        out.append(np.sort(cntr[:, 0]))
    return np.stack(out)


def sklearn_all(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centres, inertia = [], []
    for m in maps:
        km = KMeans(n_clusters=K, n_init=10, random_state=0).fit(m.reshape(-1, 1))
        centres.append(np.sort(km.cluster_centers_[:, 0]))
        inertia.append(km.inertia_)
    return np.stack(centres), np.array(inertia)


def inertia(maps: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    x = maps.reshape(len(maps), -1, 1)
    return ((x - centroids[:, None, :]) ** 2).min(axis=2).sum(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="device for our implementation (cpu, cuda)")
    args = parser.parse_args()

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    maps16 = synthetic_maps(args.maps, args.size)
    maps = maps16.to(device)
    ref_maps = maps16.double().numpy()  # the references get float64 copies of the same float16 values
    n = args.maps
    print(
        f"{n} maps of {args.size}x{args.size} (float16), K={K}, m={M}, tol/error={TOL}, max_iter={MAX_ITER}, "
        f"ours on {device} with {torch.get_num_threads()} CPU threads, median of {args.repeats} after warm-up"
    )

    rows: list[tuple[str, float, str]] = []

    def report(name: str, seconds: float, note: str) -> None:
        rows.append((name, seconds, note))
        print(f"{name:<38}  {seconds:8.3f} s  {n / seconds:10.1f} maps/s  {note}", flush=True)

    def ours(**kw) -> np.ndarray:
        return cluster_maps(maps, k=K, m=M, tol=TOL, max_iter=MAX_ITER, **kw)[0].cpu().numpy()

    # Both FCMs stop on a tolerance, ~10x tol short of the fixed point (FCM converges linearly). To tell
    # stopping error from real error, also compare with the converged fixed point: our exact float64 FCM run
    # to tol=1e-12 (tests/cutswap/method/test_clustering.py ties it to a converged skfuzzy within 1e-7).
    converged = cluster_maps(maps16, k=K, m=M, bins=None, tol=1e-12, max_iter=10_000)[0].numpy()
    t_ref, ref = timed(lambda: skfuzzy_all(ref_maps), args.repeats, lambda: None)
    report(
        "skfuzzy cmeans, map by map",
        t_ref,
        f"reference; max |dc| vs converged {np.abs(ref - converged).max():.1e}",
    )
    for label, bins in (("histogram (1024 bins)", 1024), ("exact", None)):
        t, c = timed(lambda bins=bins: ours(method="fcm", bins=bins), args.repeats, sync)
        note = (
            f"max |dc| vs skfuzzy {np.abs(c - ref).max():.1e}; vs converged {np.abs(c - converged).max():.1e}"
        )
        report(f"ours FCM, {label}", t, note)
    t_fcm, t_exact = rows[-2][1], rows[-1][1]

    t_skl, (skl, skl_inertia) = timed(lambda: sklearn_all(ref_maps), args.repeats, lambda: None)
    report("sklearn KMeans(n_init=10), map by map", t_skl, "reference")
    for label, bins in (("histogram (1024 bins)", 1024), ("exact", None)):
        t_km, km = timed(lambda bins=bins: ours(method="kmeans", bins=bins), args.repeats, sync)
        rel = inertia(ref_maps, km) / skl_inertia - 1
        note = (
            f"max |dc| vs sklearn {np.abs(km - skl).max():.1e}; objective vs sklearn: "
            f"max {rel.max():+.1e}, min {rel.min():+.1e}, better or equal on {(rel <= 1e-9).sum()}/{n}"
        )
        report(f"ours k-means, {label}", t_km, note)

    print(
        f"speed-up FCM histogram vs skfuzzy: {t_ref / t_fcm:.0f}x; exact vs skfuzzy: {t_ref / t_exact:.1f}x"
    )
    print(f"speed-up k-means histogram vs sklearn: {t_skl / rows[-2][1]:.0f}x")


if __name__ == "__main__":
    main()
