"""Wall time of a batch of training jobs: in-process one after another vs as jobs on a
local pool of Dask workers.

The baseline is what a run with ``parallel.workers: 0`` does: every job in this process, one at a time,
torch using every core. Ours is the flow's way: each job submitted from its own thread to a local pool of Dask
workers of ``--workers`` processes; on a CPU, ``parallel.cpu_jobs`` of them at once, each with its share of
the cores (timed for 1 and for one per worker), or, with GPUs, one job per GPU. The ratio baseline / ours is
the speed-up of the job scheduling alone (same jobs, same settings). It shows whether running small-batch
steps side by side beats splitting each step over every core, which decides ``cpu_jobs`` on a machine.

    .venv/bin/python benchmarks/bench_jobs.py [--jobs 4 --workers 2 --size 64 --steps 30 --batch 16]
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cutswap.pipeline.parallel import dask_pool, run_job
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.train import train_run
from cutswap.pipeline.stores import StoreRef, build_store, write_array


def ingest(root: Path, size: int, n: int = 32) -> StoreRef:
    """A minimal ingest store of n noisy ramps, all normal training images."""
    rng = np.random.default_rng(0)
    ramp = np.broadcast_to(np.linspace(0, 255, size, dtype=np.float32)[None, :, None], (size, size, 3))
    images = np.stack([np.clip(ramp + rng.normal(0, 8, ramp.shape), 0, 255) for _ in range(n)]).astype(
        np.uint8
    )

    def write(group):
        write_array(group, "images", images)
        write_array(group, "masks", np.zeros(images.shape[:3], bool))
        group.attrs["samples"] = [
            {"split": "train", "label": 0, "defect_type": "good", "image_path": f"{i}.png", "mask_path": None}
            for i in range(n)
        ]

    return build_store(root, "ingest", "ramps", {"n": n, "size": size}, {}, write)[0]


def run_all(settings: Settings, source: StoreRef, jobs: int, dask) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda s: run_job(train_run, settings, source, "cutpaste", s, pool=dask), range(jobs)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train = {
            "steps": args.steps,
            "batch_size": args.batch,
            "log_every": args.steps,
            "checkpoint_every": 0,
        }
        settings = Settings(storage_root=Path(tmp) / "base", train=train)
        base = run_all(settings, ingest(settings.storage_root, args.size), args.jobs, None)
        ours = {}
        for cpu_jobs in dict.fromkeys((1, args.workers)):
            root = Path(tmp) / f"ours-{cpu_jobs}"  # fresh stores: every job computes
            with dask_pool(workers=args.workers, cpu_jobs=cpu_jobs) as dask:
                # Started and warmed outside the timing, as a run has its pool up before the first job.
                dask.client.wait_for_workers(dask.workers)
                dask.client.run(importlib.import_module, "cutswap.pipeline.stages.train")
                cfg = settings.model_copy(update={"storage_root": root})
                label = (
                    f"{dask.workers} GPU workers" if dask.gpus else f"{cpu_jobs} of {dask.workers} at once"
                )
                ours[label] = run_all(cfg, ingest(root, args.size), args.jobs, dask)
    print(
        f"{args.jobs} cutpaste jobs, {args.steps} steps of {args.batch}+{args.batch} images at "
        f"{args.size} px; torch {torch.__version__}, {torch.get_num_threads()} threads in-process"
    )
    print(f"in-process, one at a time:   {base:7.1f} s  (baseline)")
    for label, seconds in ours.items():
        print(f"Dask jobs, {label + ':':<18}{seconds:7.1f} s  speed-up {base / seconds:.2f}x")


if __name__ == "__main__":
    main()
