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

Under the bucket the flow process's own storage traffic is counted too (issue 34: the flow host should
download nothing to commit a store, and jobs read only the items they need): the flow is given its own S3
endpoint, a counting TCP forwarder on 127.0.0.1 in front of the server (``tests.support.counting_proxy``),
while the workers use the server directly. The same remote-s3 run is repeated with the code of an earlier
commit (``--baseline``, default the commit before that work), from a temporary ``git worktree`` with its own
scheduler and workers running that code, so the bytes it printed are compared within one run:

    way                      bytes the flow process read and wrote through S3, ratio to the baseline

    .venv/bin/python benchmarks/bench_storage.py [--steps 10] [--size 256] [--baseline REV|none] [--s3-only]
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

from tests.support.counting_proxy import CountingProxy  # noqa: E402
from tests.support.s3 import S3Server  # noqa: E402
from tests.support.topology import Topology  # noqa: E402

#: The commit before issue 34's flow-side reads were removed (shard digests, sliced ingest reads).
BASELINE = "96906d2"


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


def _run(
    cwd: Path, sets: list[str], env: dict[str, str], repo: Path = REPO
) -> tuple[float, int, dict[str, float]]:
    """One ``cutswap run`` of the loopback preset, with the code of ``repo`` (first on its path)."""
    env = {**env, "PYTHONPATH": os.pathsep.join([str(repo), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    argv = [sys.executable, "-m", "flows.cli", "run", "--preset", str(repo / "configs" / "loopback.yaml")]
    for item in sets:
        argv += ["--set", item]
    moved, start = _loopback_bytes(), time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    seconds, moved = time.perf_counter() - start, _loopback_bytes() - moved
    if done.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(sets)}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, moved, _stage_seconds(done.stdout + done.stderr)


def _bucket_bytes(s3: S3Server, bucket: str) -> int:
    name = bucket[len("s3://") :]
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=name, Prefix="storage/")
    return sum(o["Size"] for page in pages for o in page.get("Contents", []))


def _remote_s3(
    base: Path, common: list[str], s3: S3Server, address: str, env: dict[str, str], repo: Path = REPO
) -> tuple:
    """The remote-s3 way into a fresh bucket, the flow process through its own counting forwarder; its
    row: wall time, bytes stored, loopback bytes, stage seconds, bytes the flow read and wrote via S3."""
    bucket = s3.bucket()
    roots = [f"storage_root={bucket}/storage", f"reports_root={bucket}/reports"]
    flow_env = {k: v for k, v in env.items() if k != "AWS_ENDPOINT_URL_S3"}
    with CountingProxy(s3.port) as proxy:
        flow_env["AWS_ENDPOINT_URL"] = proxy.endpoint
        seconds, moved, stages = _run(base / "flow", [*common, *roots, address], flow_env, repo)
        read, written = proxy.read, proxy.written
    return seconds, _bucket_bytes(s3, bucket), moved, stages, read, written


def _baseline(
    base: Path, rev: str, common: list[str], s3: S3Server, env: dict[str, str]
) -> tuple[str, tuple]:
    """The remote-s3 way with the code of commit ``rev``: a temporary worktree of it, its own scheduler and
    workers running that code (the flow refuses workers on other code). Its workers are not warmed: its
    wall time is not compared, only its bytes."""
    tree = base / "baseline-tree"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev],
        check=True,
        capture_output=True,
    )
    try:
        label = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        topology = Topology(base / "baseline-hosts", base / "none", {**s3.env, "PYTHONPATH": str(tree)})
        topology.start(["w1", "w2"])
        try:
            row = _remote_s3(base, common, s3, f"parallel.address={topology.address}", env, tree)
        finally:
            topology.stop()
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True
        )
    return label, row


def _print_flow_bytes(after: tuple, before: tuple | None, rev: str | None) -> None:
    print(
        "\nbytes the flow process itself read and wrote through S3 (its own endpoint, counted per process):"
    )
    print(f"{'way':28} {'wall s':>8} {'read MB':>10} {'written MB':>11} {'read x':>8} {'written x':>10}")
    rows = [(f"remote-s3 before ({rev})", before), ("remote-s3 after (this tree)", after)] if before else []
    for name, row in rows or [("remote-s3 (this tree)", after)]:
        read, written = row[4], row[5]
        ratios = f" {read / max(before[4], 1):8.3f} {written / max(before[5], 1):10.3f}" if before else ""
        print(f"{name:28} {row[0]:8.1f} {read / 1e6:10.2f} {written / 1e6:11.2f}{ratios}")
    if before:
        print(f"(ratios: to the baseline {rev}, measured in this run; its workers were not warmed)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=10, help="training steps per job")
    parser.add_argument("--size", type=int, default=256, help="working image size (dataset.image_size)")
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        help=f"commit whose flow bytes are compared (default {BASELINE}; none)",
    )
    parser.add_argument("--s3-only", action="store_true", help="only the remote-s3 way (and the baseline)")
    args = parser.parse_args()
    common = [
        f"train.steps={args.steps}",
        "train.seeds=[0]",
        "dataset.categories=[brick]",
        f"dataset.image_size={args.size}",
    ]
    rows = {}
    before = rev = None
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp, S3Server() as s3:
        base = Path(tmp)
        env = {**os.environ, **s3.env, "XDG_CACHE_HOME": str(base / "cache")}

        def local(name: str) -> list[str]:
            return [f"storage_root={base / name / 'storage'}", f"reports_root={base / name / 'reports'}"]

        (base / "flow").mkdir()
        if not args.s3_only:
            seconds, moved, stages = _run(base / "flow", [*common, *local("a"), "parallel.workers=0"], env)
            rows["local-inprocess"] = (seconds, _folder_bytes(base / "a" / "storage"), moved, stages)
            seconds, moved, stages = _run(base / "flow", [*common, *local("b"), "parallel.workers=2"], env)
            rows["local-cluster"] = (seconds, _folder_bytes(base / "b" / "storage"), moved, stages)
        (
            base / "none"
        ).mkdir()  # nothing hidden: remote-local's workers read the local stores (a shared disk)
        topology = Topology(base / "hosts", base / "none", {**s3.env, "PYTHONPATH": str(REPO)})
        topology.start(["w1", "w2"])
        try:
            address = f"parallel.address={topology.address}"
            # Warm the workers once (imports, torch's start-up), so neither timed way pays for it.
            _run(base / "flow", [*common, *local("warm"), address, "run=warm"], env)
            if not args.s3_only:
                seconds, moved, stages = _run(base / "flow", [*common, *local("c"), address], env)
                rows["remote-local"] = (seconds, _folder_bytes(base / "c" / "storage"), moved, stages)
            rows["remote-s3"] = _remote_s3(base, common, s3, address, env)
        finally:
            topology.stop()
        if args.baseline != "none":
            rev, before = _baseline(base, args.baseline, common, s3, env)
    _print_ways(rows, args)
    _print_flow_bytes(rows["remote-s3"], before, rev)


def _print_ways(rows: dict[str, tuple], args: argparse.Namespace) -> None:
    first = next(iter(rows.values()))
    print(
        f"tiny loopback benchmark, 1 category, {args.size} px, {args.steps} steps, {os.cpu_count()} cores"
        f"{' (x base: to ' + next(iter(rows)) + ')' if len(rows) > 1 else ''}"
    )
    print(f"{'way':16} {'wall s':>8} {'x base':>7} {'stores MB':>10} {'loopback MB':>12} {'x base':>7}")
    for name, (seconds, stored, moved, *_) in rows.items():
        print(
            f"{name:16} {seconds:8.1f} {seconds / first[0]:7.2f} {stored / 1e6:10.2f} {moved / 1e6:12.1f}"
            f" {moved / first[2]:7.2f}"
        )
    names = sorted({stage for row in rows.values() for stage in row[3]})
    print("\nseconds per stage (summed over its stores; jobs overlap on a cluster):")
    print(f"{'way':16} " + " ".join(f"{n:>9}" for n in names))
    for name, row in rows.items():
        print(f"{name:16} " + " ".join(f"{row[3].get(n, 0.0):9.1f}" for n in names))
    if "remote-local" in rows:
        ratio = rows["remote-s3"][0] / rows["remote-local"][0]
        print(f"remote-s3 / remote-local: {ratio:.2f}x (aim: at most 1.2x)")


if __name__ == "__main__":
    main()
