"""What the MVTec AD preset costs, stage by stage, and how long the whole of it would take.

``configs/mvtec-ad.yaml`` (15 categories at 256 px, every method, 3 seeds, 65,536 steps) has never run. This
benchmark runs that preset through the real pipeline (``python -m flows.benchmark``, the flow ``cutswap
run`` starts, in a subprocess with its own storage and reports roots in a temporary folder) on a stand-in
dataset of MVTec AD's shape (``cutswap.data.builtin.mvtec_counts``: its categories and image counts, the
project's synthetic textures, no download), for a subset: ``--categories`` at two or more ``--fractions``
of their image counts, ``--methods`` (one of each cost class by default), ``--seeds`` seeds and ``--steps``
training steps. Every other setting is the preset's, except ``parallel.workers=0`` (stages and jobs run
one after another in the flow's process, so each second, byte and peak is one stage's: the preset's
default pool of two workers would run two jobs at once, each on one core) and ``train.log_every=1``.

How each figure is obtained (printed with the figures):

- seconds: ``provenance.seconds`` in each store's ``zarr.json`` (the store's own compute time, written by
  ``cutswap.pipeline.stores.publish``); the report's from its "computed in" line of ``run.log``;
- a training's step: ``batch_size x classes / images_per_s`` of the steps its ``log`` array records
  (the first step left out when there are more: it pays for warm-up), and its fixed part: ``provenance``
  seconds minus the loop's ``seconds`` attr (loading images, building the model, writing the store);
- peak memory: RSS summed over the flow's process tree (``/proc/<pid>/statm``), sampled every
  ``--sample-s`` seconds, the highest sample while the store was being computed; and the largest single
  process over the whole run (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``);
- bytes read and written during a stage: the increase of ``rchar``/``wchar`` of ``/proc/<pid>/io`` summed
  over the tree between the samples around the stage (every ``read()``/``write()``, page cache included,
  so Python modules and weights loaded then count too); stored: the size of the store's folder;
- growth: a least-squares line ``a + b n`` per stage (and method for the jobs) through the sizes run, ``n``
  the images the stage reads (ingest and evaluate: every image of the category; saliency, cluster, pairs
  and a training's fixed part: its training images); a training's steps cost the same at every size;
- the preset's time on this machine: those lines at MVTec AD's counts for every category, job and seed,
  summed, plus ``train.steps`` steps per training (one after another, as run here);
- on a GPU: the trainings' images over a *stated* rate (``--gpu-images-per-s``; by default half of
  ``cutswap.pipeline.feasibility.TRAINING_CEILING``, scaled by pixel count from 224 px to the preset's
  size, as that module's comment says an H100 does roughly half of it). Nothing is measured on a GPU
  here: no GPU is at hand, and the other stages are given at this machine's CPU time, an upper bound.

Output: one text record (the machine, the command, the date, then the tables), printed; commit it as
``benchmarks/results/bench_scale.txt``::

    .venv/bin/python benchmarks/bench_scale.py [--categories bottle --fractions 0.2,0.4 --steps 2
        --seeds 1 --methods cutswap,cutswap-3way,imagenet-gde,patchcore --gpu-images-per-s R --keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

import numpy as np

from cutswap.data.builtin.mvtec_counts import MVTEC_AD, MVTEC_AD_SOURCE, build_mvtec_shaped, scaled
from cutswap.method.registry import get_method, method_seeds
from cutswap.pipeline.feasibility import TRAINING_CEILING
from cutswap.pipeline.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
PER_CATEGORY = ("ingest", "saliency", "cluster", "pairs")
JOB_STAGES = ("train", "evaluate")
DEFAULT_METHODS = "cutswap,cutswap-3way,imagenet-gde,patchcore"
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- sampling the flow's process tree -------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # time.time()
    rss: int  # bytes, summed over the tree
    rchar: int  # bytes read by every process of the tree seen so far (cumulative)
    wchar: int
    procs: int


class TreeSampler(threading.Thread):
    """Samples RSS and I/O counters of a process and its descendants until stopped."""

    def __init__(self, root_pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root_pid, interval
        self.samples: list[Sample] = []
        self.io: dict[int, tuple[int, int]] = {}  # pid -> last (rchar, wchar): exited ones keep theirs
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(self._sample())
            self.stop.wait(self.interval)
        self.samples.append(self._sample())

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = defaultdict(list)
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(f"/proc/{entry.name}/stat").read_text()
                except OSError:
                    continue
                children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
        tree, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    def _sample(self) -> Sample:
        now, rss, pids = time.time(), 0, self._tree()
        for pid in pids:
            try:
                rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
                io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
                self.io[pid] = (int(io["rchar"]), int(io["wchar"]))
            except (OSError, ValueError, KeyError):
                continue
        reads = sum(r for r, _ in self.io.values())
        writes = sum(w for _, w in self.io.values())
        return Sample(now, rss, reads, writes, len(pids))


# --- what a run left: its stores ------------------------------------------------------------------------


@dataclass
class Store:
    """One computed store (or the report) of a run, with what was measured while it was computed."""

    stage: str
    category: str
    method: str  # "" for the per-category stages and the report
    start: float
    seconds: float
    stored: int  # bytes of the store's folder
    n: int  # the images its cost is fitted against (see the module docstring)
    loop_seconds: float = 0.0  # train: the optimisation loop
    step_seconds: float = 0.0  # train: one step, steady state
    peak_rss: int = 0
    read: int = 0
    written: int = 0
    extra: dict = field(default_factory=dict)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _step_seconds(attrs: dict, group: Path, batch: int) -> float:
    """Steady-state seconds per step from the store's log (step images / images_per_s of each step)."""
    import zarr

    log = np.asarray(zarr.open_group(str(group), mode="r")["log"][:])
    if log.size == 0:
        return 0.0
    rates = log[1:, 5] if len(log) > 1 else log[:, 5]
    return batch * int(attrs["num_classes"]) / float(median(rates.tolist()))


def read_stores(storage: Path, counts: dict[str, tuple[int, int]], batch: int) -> list[Store]:
    """Every complete store under ``storage`` (hidden folders are writes in progress or leftovers)."""
    found = []
    for meta in sorted(storage.glob("*/*/zarr.json")):
        stage, folder = meta.parent.parent.name, meta.parent
        if stage not in PER_CATEGORY + JOB_STAGES or folder.name.startswith("."):
            continue
        attrs = json.loads(meta.read_text())["attributes"]
        prov = attrs["provenance"]
        category = attrs.get("category") or attrs["name"]
        n_train, n_all = counts[category]
        n = n_all if stage in ("ingest", "evaluate") else n_train
        store = Store(
            stage,
            category,
            attrs.get("method", ""),
            datetime.fromisoformat(prov["started"]).timestamp(),
            float(prov["seconds"]),
            folder_bytes(folder),
            n,
        )
        if stage == "train" and get_method(store.method).trains:
            store.loop_seconds = float(attrs["seconds"])
            store.step_seconds = _step_seconds(attrs, folder, batch)
        if stage == "saliency":
            store.extra["backbone"] = attrs["backbone"].get("name")
        found.append(store)
    return found


def read_report(reports: Path, run: str, jobs: int) -> Store:
    """The report stage, from its "computed in" line of run.log (it writes no store)."""
    for line in (reports / run / "run.log").read_text().splitlines():
        if f"report {run}: computed in" in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            seconds = float(line.split("computed in ")[1].split(" s")[0])
            stored = folder_bytes(reports / run) - (reports / run / "run.log").stat().st_size
            return Store("report", "", "", stamp - seconds, seconds, stored, jobs)
    raise RuntimeError(f"no report line in {reports / run / 'run.log'}")


def attribute(stores: Iterable[Store], samples: list[Sample]) -> None:
    """Peak RSS, bytes read and written of the tree while each store was computed (from the samples)."""
    times = np.array([s.t for s in samples])
    for store in stores:
        lo = max(int(np.searchsorted(times, store.start, "right")) - 1, 0)
        hi = min(int(np.searchsorted(times, store.start + store.seconds, "left")), len(samples) - 1)
        window = samples[lo : hi + 1]
        store.peak_rss = max(s.rss for s in window)
        store.read = samples[hi].rchar - samples[lo].rchar
        store.written = samples[hi].wchar - samples[lo].wchar


# --- one run of the flow at one fraction ----------------------------------------------------------------


@dataclass
class Run:
    fraction: float
    counts: dict[str, tuple[int, int]]  # category -> (training images, every image)
    stores: list[Store]
    wall: float
    build_seconds: float
    tree_peak: int
    largest_process: int
    command: list[str]
    load: tuple[float, float]  # 1-minute load average before and after: the machine is shared


def flow_command(args: argparse.Namespace, data: Path, work: Path, run: str, steps: int) -> list[str]:
    sets = {
        "dataset.root": str(data),
        "dataset.categories": "[" + ",".join(args.categories) + "]",
        "train.methods": "[" + ",".join(args.methods) + "]",
        "train.seeds": "[" + ",".join(str(s) for s in range(args.seeds)) + "]",
        "train.steps": str(steps),
        "train.log_every": "1",
        "parallel.workers": "0",
        "storage_root": str(work / "storage"),
        "reports_root": str(work / "reports"),
        "run": run,
    }
    command = [sys.executable, "-m", "flows.benchmark", "--preset", str(args.preset)]
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    return command


def run_once(args: argparse.Namespace, fraction: float, work: Path, batch: int, steps: int) -> Run:
    """Build the dataset at ``fraction`` and run the flow on it, sampling its process tree."""
    counts = {c: scaled(MVTEC_AD[c], fraction, min_train=batch) for c in args.categories}
    images = {c: (k.train, k.train + k.test_good + sum(k.defects.values())) for c, k in counts.items()}
    start = time.perf_counter()
    data = build_mvtec_shaped(work / "data", args.categories, fraction, min_train=batch)
    build_seconds = time.perf_counter() - start
    run = f"bench-scale-{fraction:g}"
    command = flow_command(args, data, work, run, steps)
    load = os.getloadavg()[0]
    log = work / "flow.out"
    start = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(child.pid, args.sample_s)
        sampler.start()
        code = child.wait()
        sampler.stop.set()
        sampler.join()
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"the flow failed (exit {code}); its output: {log}\n{log.read_text()[-3000:]}")
    stores = read_stores(work / "storage", images, batch)
    jobs = sum(1 for s in stores if s.stage == "evaluate")
    stores.append(read_report(work / "reports", run, jobs))
    attribute(stores, sampler.samples)
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    tree_peak = max(s.rss for s in sampler.samples)
    return Run(
        fraction, images, stores, wall, build_seconds, tree_peak, largest, command, (load, os.getloadavg()[0])
    )


# --- fits and the prediction ----------------------------------------------------------------------------


def fit(points: list[tuple[float, float]], proportional: bool) -> tuple[float, float]:
    """Least-squares ``a + b n`` through the points (n, y), with a >= 0 and b >= 0: a cost that fell with
    n between two noisy sizes is taken as flat (its mean), one with a negative intercept as proportional
    (through the origin). When every n is the same: proportional to n (``proportional``: seconds, bytes)
    or flat (memory)."""
    xs = np.array([p[0] for p in points], float)
    ys = np.array([p[1] for p in points], float)
    if np.ptp(xs) == 0:
        if proportional and xs.mean() > 0:
            return 0.0, float(ys.mean() / xs.mean())
        return float(ys.mean()), 0.0
    b, a = np.polyfit(xs, ys, 1)
    if b < 0:
        return float(ys.mean()), 0.0
    if a < 0:
        return 0.0, float((xs * ys).sum() / (xs * xs).sum())
    return float(a), float(b)


def proxy_of(method: str, measured: Iterable[str]) -> str:
    """The measured method whose cost stands for ``method``: itself, else one that trains the same number
    of classes (the step's images) and scores the same way (the evaluation's work)."""
    spec = get_method(method)
    for other in measured:
        o = get_method(other)
        if (o.trains, o.num_classes, o.scorer) == (spec.trains, spec.num_classes, spec.scorer):
            return other
    raise SystemExit(f"no measured method costs like {method!r}; add it to --methods")


@dataclass
class Model:
    """The fitted lines: ``lines[(stage, method)] = (a, b)`` for seconds, ``rss``/``stored`` likewise."""

    lines: dict[tuple[str, str], tuple[float, float]]
    rss: dict[tuple[str, str], tuple[float, float]]
    stored: dict[tuple[str, str], tuple[float, float]]
    step: dict[str, float]  # method -> seconds per step (median over every measured training)

    @staticmethod
    def of(stores: list[Store]) -> Model:
        groups: dict[tuple[str, str], list[Store]] = defaultdict(list)
        for s in stores:
            groups[(s.stage, s.method)].append(s)

        def line(value, proportional: bool = True) -> dict[tuple[str, str], tuple[float, float]]:
            return {key: fit([(s.n, value(s)) for s in group], proportional) for key, group in groups.items()}

        steps: dict[str, list[float]] = defaultdict(list)
        for s in stores:
            if s.step_seconds:
                steps[s.method].append(s.step_seconds)
        return Model(
            line(lambda s: s.seconds - s.loop_seconds),  # a training's fixed part; the whole of other stages
            line(lambda s: s.peak_rss, proportional=False),
            line(lambda s: s.stored),
            {m: median(v) for m, v in steps.items()},
        )


def predict(model: Model, settings: Settings, measured: list[str]) -> dict[str, dict[str, float]]:
    """Seconds, stored bytes and peak RSS of each stage for the whole preset, at MVTec AD's counts."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    steps = settings.train.steps
    jobs = 0
    for category in settings.dataset.categories:
        k = MVTEC_AD[category]
        n_train, n_all = k.train, k.train + k.test_good + sum(k.defects.values())
        for stage in PER_CATEGORY:
            n = n_all if stage == "ingest" else n_train
            _add(out[stage], model, (stage, ""), n, 1)
        for method in settings.train.methods:
            proxy = proxy_of(method, measured)
            seeds = len(method_seeds(method, settings.train.seeds))
            jobs += seeds
            _add(out["train"], model, ("train", proxy), n_train, seeds)
            out["train"]["seconds"] += seeds * steps * model.step.get(proxy, 0.0)
            if get_method(method).trains:
                spec = get_method(method)
                out["train"]["images"] += seeds * steps * settings.train.batch_size * spec.num_classes
            _add(out["evaluate"], model, ("evaluate", proxy), n_all, seeds)
    _add(out["report"], model, ("report", ""), jobs, 1)
    out["report"]["count"] = 1
    return out


def _add(into: dict[str, float], model: Model, key: tuple[str, str], n: int, times: int) -> None:
    a, b = model.lines[key]
    into["seconds"] += times * (a + b * n)
    a, b = model.stored[key]
    into["stored"] += times * (a + b * n)
    a, b = model.rss[key]
    into["peak_rss"] = max(into["peak_rss"], a + b * n)
    into["count"] += times


# --- printing -------------------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    days = seconds / 86400
    return f"{days:,.1f} days" if days < 730 else f"{days / 365.25:,.1f} years"


def machine() -> list[str]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
    )
    import torch

    return [
        f"date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"machine: {cpu}; {os.cpu_count()} cores (os.cpu_count); {int(memory) / 2**20:.1f} GiB RAM; "
        f"load average before the run {os.getloadavg()[0]:.2f}",
        f"software: Python {platform.python_version()}, torch {torch.__version__} "
        f"(CUDA available: {torch.cuda.is_available()}), {platform.platform()}",
        f"revision: {_git('rev-parse', '--short', 'HEAD')}"
        + (" (with uncommitted changes)" if _git("status", "--porcelain") else ""),
    ]


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def print_runs(runs: list[Run]) -> None:
    print("\n## Measured, per store (flow with parallel.workers=0: one stage at a time)")
    print(
        f"{'fraction':>8} {'stage':<9} {'category':<11} {'method':<14} {'n':>5} {'seconds':>8} "
        f"{'s/image':>8} {'s/step':>7} {'peak RSS MiB':>12} {'read MiB':>9} {'written MiB':>11} "
        f"{'stored MiB':>10}"
    )
    for run in runs:
        for s in sorted(run.stores, key=lambda s: s.start):
            per = s.seconds / s.n if s.n and s.stage != "report" else float("nan")
            step = f"{s.step_seconds:7.2f}" if s.step_seconds else f"{'':>7}"
            print(
                f"{run.fraction:>8g} {s.stage:<9} {s.category:<11} {s.method:<14} {s.n:>5} "
                f"{s.seconds:>8.2f} {per:>8.4f} {step} {mib(s.peak_rss):>12} {mib(s.read):>9} "
                f"{mib(s.written):>11} {mib(s.stored):>10}"
            )
        print(
            f"{run.fraction:>8g} whole run: {duration(run.wall)} wall (flow start to exit; dataset build "
            f"{run.build_seconds:.1f} s before it), tree peak RSS {mib(run.tree_peak)} MiB, largest process "
            f"{mib(run.largest_process)} MiB (ru_maxrss of the children so far); load average "
            f"{run.load[0]:.1f} before, {run.load[1]:.1f} after"
        )
    print(
        "(n: images the stage reads: ingest and evaluate every image, the others training images; the "
        "report: jobs. train seconds include its steps; s/step from its log.)"
    )


def print_model(model: Model, backbone: str) -> None:
    print("\n## Growth: least-squares a + b n per stage (train: its fixed part; steps below)")
    print(
        f"{'stage':<9} {'method':<14} {'a (s)':>8} {'b (s/image)':>11} {'RSS a MiB':>10} "
        f"{'RSS b KiB/img':>13} {'stored a MiB':>12} {'stored b KiB/img':>16}"
    )
    for (stage, method), (a, b) in sorted(model.lines.items()):
        ra, rb = model.rss[(stage, method)]
        sa, sb = model.stored[(stage, method)]
        print(
            f"{stage:<9} {method:<14} {a:>8.2f} {b:>11.4f} {mib(ra):>10} {rb / 1024:>13,.1f} {mib(sa):>12} "
            f"{sb / 1024:>16,.1f}"
        )
    for method, step in sorted(model.step.items()):
        spec = get_method(method)
        print(f"train step {method:<14} {step:.2f} s per step of {spec.num_classes} x batch images")
    print(f"(saliency backbone: {backbone}; the report's n is jobs)")


def print_prediction(
    pred: dict, settings: Settings, measured: list[str], gpu_rate: float, rate_source: str
) -> None:
    total = sum(p["seconds"] for p in pred.values())
    cats = settings.dataset.categories
    print(
        f"\n## Predicted: the whole preset ({len(cats)} categories, {len(settings.train.methods)} methods, "
        f"{len(settings.train.seeds)} seeds, {settings.train.steps:,} steps, batch "
        f"{settings.train.batch_size}) at MVTec AD's counts, on this machine, one stage at a time"
    )
    proxies = {m: proxy_of(m, measured) for m in settings.train.methods}
    print("methods costed as: " + ", ".join(f"{m}={p}" if m != p else m for m, p in proxies.items()))
    print(f"{'stage':<9} {'stores':>6} {'time':>14} {'share':>7} {'stored GiB':>10} {'peak RSS MiB':>12}")
    for stage in (*PER_CATEGORY, *JOB_STAGES, "report"):
        p = pred[stage]
        print(
            f"{stage:<9} {int(p['count']):>6} {duration(p['seconds']):>14} {p['seconds'] / total:>7.1%} "
            f"{p['stored'] / 2**30:>10.2f} {mib(p['peak_rss']):>12}"
        )
    print(f"total: {duration(total)} on this CPU")
    train_images = pred["train"]["images"]
    gpu_train = train_images / gpu_rate
    other = total - pred["train"]["seconds"]
    print(
        f"\n## On a GPU, from a STATED rate, not measured: {gpu_rate:,.0f} training images/s ({rate_source})"
    )
    print(f"trainings: {train_images:,.0f} images -> {duration(gpu_train)} at that rate")
    print(
        f"every other stage, at this CPU's time (an upper bound; no GPU rate is stated for them): "
        f"{duration(other)}; total at most {duration(gpu_train + other)}"
    )


# --- main -----------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", type=Path, default=REPO / "configs" / "mvtec-ad.yaml")
    parser.add_argument("--categories", default="bottle", help="MVTec AD categories run (comma-separated)")
    parser.add_argument(
        "--fractions", default="0.2,0.4", help="fractions of their image counts, one run each"
    )
    parser.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help="methods run; the preset's others are costed as one that trains as many classes "
        "and scores the same way ('all': the preset's)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds run (0..N-1)")
    parser.add_argument("--steps", type=int, default=2, help="training steps of each training run")
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="skip the discarded first run (1 step)"
    )
    parser.add_argument("--sample-s", type=float, default=0.1, help="seconds between memory and I/O samples")
    parser.add_argument(
        "--gpu-images-per-s",
        type=float,
        default=None,
        help="stated GPU training rate at the preset's size (default: half of "
        "feasibility.TRAINING_CEILING scaled from 224 px)",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    args.categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    args.fractions = [float(f) for f in args.fractions.split(",")]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    settings = load_settings(args.preset, {"dataset.root": "/nonexistent"})
    args.methods = list(settings.train.methods) if args.methods == "all" else args.methods.split(",")
    batch = settings.train.batch_size
    size = settings.dataset.image_size
    if args.gpu_images_per_s is None:
        gpu_rate = TRAINING_CEILING / 2 * (224 / size) ** 2
        rate_source = (
            f"default: TRAINING_CEILING {TRAINING_CEILING:,.0f} img/s at 224 px / 2, as "
            "cutswap/pipeline/feasibility.py says an H100 does roughly half of it, x (224/"
            f"{size})^2"
        )
    else:
        gpu_rate, rate_source = args.gpu_images_per_s, "--gpu-images-per-s"
    print("# bench_scale: the MVTec AD preset's cost per stage, and the whole preset's predicted time")
    print("\n".join(machine()))
    print("command: " + shlex.join([Path(sys.executable).name, *sys.argv]))
    print(
        f"preset: {args.preset.relative_to(REPO) if args.preset.is_relative_to(REPO) else args.preset}; "
        f"dataset: textures in MVTec AD's shape at {size} px (counts: {MVTEC_AD_SOURCE})"
    )
    print(
        f"subset run: categories {args.categories} at fractions {args.fractions} of their counts (at least "
        f"{batch} training images), methods {args.methods}, {args.seeds} seed(s), {args.steps} steps"
    )
    runs = []
    plan = [("warm-up", min(args.fractions), 1)] if args.warmup else []
    plan += [(f"f{f:g}", f, args.steps) for f in args.fractions]
    for name, fraction, steps in plan:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            work = (args.keep / name) if args.keep else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            run = run_once(args, fraction, work, batch, steps)
            print(f"flow command ({name}): {shlex.join(run.command)}", flush=True)
            if name == "warm-up":
                print(
                    f"warm-up run discarded ({duration(run.wall)}): a machine's first run compiles and "
                    "caches (numba's cache, weights read from disk) what later runs reuse",
                    flush=True,
                )
            else:
                runs.append(run)
    stores = [s for run in runs for s in run.stores]
    model = Model.of(stores)
    print_runs(runs)
    backbone = next((s.extra["backbone"] for s in stores if s.stage == "saliency"), "?")
    print_model(model, backbone)
    print_prediction(predict(model, settings, args.methods), settings, args.methods, gpu_rate, rate_source)


if __name__ == "__main__":
    main()
