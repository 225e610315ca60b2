"""The tiny distributed benchmark four ways: where the stores live and where the work runs.

    local-inprocess   stores in a local folder, every stage in the flow's process (the baseline)
    local-cluster     stores in a local folder, a local Dask cluster of 2 workers
    remote-local      stores in a local folder, a scheduler and 2 workers as separate processes
    remote-s3         stores and report in a bucket of an S3-compatible server process (moto_server, from
                      the test extra), the same scheduler and workers, which share no disk with the flow

Each run computes every store from empty storage (``cutswap run --preset configs/loopback.yaml`` with
smaller settings), as a user would, in its own process. Printed per way: wall time, its ratio to the
baseline, the bytes the stores take, and the bytes that crossed the loopback interface during the run
(``/proc/net/dev``: Prefect's API, Dask's messages and, for the bucket, every S3 request and answer;
everything here runs on 127.0.0.1). The aim of issue 17: remote-s3 within 1.2x of remote-local, the same
cluster with a local disk. The workers are warmed by one untimed run first.

    .venv/bin/python benchmarks/bench_storage.py [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.s3 import S3Server  # noqa: E402
from tests.support.topology import Topology  # noqa: E402


def _loopback_bytes() -> int:
    """Bytes received on the loopback interface so far (each byte sent on it is received once)."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            return int(counters.split()[0])
    raise SystemExit("no loopback interface in /proc/net/dev")


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


#: A stage's result line of ``cutswap run``: ``train brick/cutswap/seed 0: computed in 9.0 s``.
_COMPUTED = re.compile(r"\] (\w+) .*: computed in ([0-9.]+) s|^\S+ (\w+) .*: computed in ([0-9.]+) s", re.M)


def _stage_seconds(output: str) -> dict[str, float]:
    """Seconds per stage, summed over its stores, from a run's console output."""
    out: dict[str, float] = {}
    for match in _COMPUTED.finditer(output):
        stage, seconds = (
            (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        )
        out[stage] = out.get(stage, 0.0) + float(seconds)
    return out


def _run(cwd: Path, sets: list[str], env: dict[str, str]) -> tuple[float, int, dict[str, float]]:
    argv = [sys.executable, "-m", "flows.cli", "run", "--preset", str(REPO / "configs" / "loopback.yaml")]
    for item in sets:
        argv += ["--set", item]
    moved, start = _loopback_bytes(), time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    seconds, moved = time.perf_counter() - start, _loopback_bytes() - moved
    if done.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(sets)}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, moved, _stage_seconds(done.stdout + done.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=10, help="training steps per job")
    args = parser.parse_args()
    common = [f"train.steps={args.steps}", "train.seeds=[0]", "dataset.categories=[brick]"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp, S3Server() as s3:
        base = Path(tmp)
        env = {**os.environ, **s3.env, "XDG_CACHE_HOME": str(base / "cache")}

        def local(name: str) -> list[str]:
            return [f"storage_root={base / name / 'storage'}", f"reports_root={base / name / 'reports'}"]

        (base / "flow").mkdir()
        seconds, moved, stages = _run(base / "flow", [*common, *local("a"), "parallel.workers=0"], env)
        rows.append(("local-inprocess", seconds, _folder_bytes(base / "a" / "storage"), moved, stages))
        seconds, moved, stages = _run(base / "flow", [*common, *local("b"), "parallel.workers=2"], env)
        rows.append(("local-cluster", seconds, _folder_bytes(base / "b" / "storage"), moved, stages))
        (
            base / "none"
        ).mkdir()  # nothing hidden: remote-local's workers read the local stores (a shared disk)
        topology = Topology(base / "hosts", base / "none", s3.env).start(["w1", "w2"])
        try:
            address = f"parallel.address={topology.address}"
            # Warm the workers once (imports, torch's start-up), so neither timed way pays for it.
            _run(base / "flow", [*common, *local("warm"), address, "run=warm"], env)
            seconds, moved, stages = _run(base / "flow", [*common, *local("c"), address], env)
            rows.append(("remote-local", seconds, _folder_bytes(base / "c" / "storage"), moved, stages))
            bucket = s3.bucket()
            roots = [f"storage_root={bucket}/storage", f"reports_root={bucket}/reports"]
            seconds, moved, stages = _run(base / "flow", [*common, *roots, address], env)
            client = s3.client()
            name = bucket[len("s3://") :]
            stored = sum(
                o["Size"]
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix="storage/")
                for o in page.get("Contents", [])
            )
            rows.append(("remote-s3", seconds, stored, moved, stages))
        finally:
            topology.stop()
    baseline = rows[0][1]
    print(f"tiny loopback benchmark, 1 category, {args.steps} steps, {os.cpu_count()} cores")
    print(f"{'way':16} {'wall s':>8} {'x base':>7} {'stores MB':>10} {'loopback MB':>12} {'x base':>7}")
    for name, seconds, stored, moved, _ in rows:
        print(
            f"{name:16} {seconds:8.1f} {seconds / baseline:7.2f} {stored / 1e6:10.2f} {moved / 1e6:12.1f}"
            f" {moved / rows[0][3]:7.2f}"
        )
    names = sorted({stage for row in rows for stage in row[4]})
    print("\nseconds per stage (summed over its stores; jobs overlap on a cluster):")
    print(f"{'way':16} " + " ".join(f"{n:>9}" for n in names))
    for name, *_, stages in rows:
        print(f"{name:16} " + " ".join(f"{stages.get(n, 0.0):9.1f}" for n in names))
    remote_local, remote_s3 = rows[2][1], rows[3][1]
    print(f"remote-s3 / remote-local: {remote_s3 / remote_local:.2f}x (aim: at most 1.2x)")


if __name__ == "__main__":
    main()
