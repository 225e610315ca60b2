"""Crash safety and concurrency of store writers, proven on real processes.

A child process runs ingest (and saliency) on a tiny dataset and is SIGKILLed at chosen points: before
its k-th file write into Zarr, halfway through writing a file, or just before the publishing rename. The
kill hooks live only in the child script below (it wraps Zarr's local-store ``_put`` and ``os.rename``);
the library has no test hooks. After each kill, nothing may look complete, and a rerun must produce a store
equal, array for array, to an uninterrupted run's, leaving no leftovers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from cutswap.pipeline.stores import is_complete

REPO = Path(__file__).resolve().parents[4]
SETTINGS = {
    "dataset.name": "mvtec",
    "dataset.image_size": 32,
    "saliency.backbone": "efficientnet_lite0",
    "saliency.batch_size": 2,
    "train.device": "cpu",
}

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    storage, data, stage, kill = sys.argv[1:5]
    sys.path.insert(0, {repo!r})

    def arm():
        # Install the kill point; called right before the stage under test runs.
        import zarr.storage._local as local
        if kill.startswith(("put:", "half:")):
            original, calls = local._put, [0]
            target = int(kill.split(":")[1])

            def put(path, value, exclusive=False):
                calls[0] += 1
                if calls[0] == target:
                    if kill.startswith("half:"):  # a torn file at its final name, as non-atomic stores leave
                        data = bytes(value.as_buffer_like())
                        os.makedirs(os.path.dirname(path), exist_ok=True)  # as the real _put does
                        with open(path, "wb") as handle:
                            handle.write(data[: len(data) // 2])
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(path, value, exclusive=exclusive)

            local._put = put
        if kill == "rename":
            rename = os.rename

            def killing_rename(src, dst):
                if ".tmp-" in str(src):
                    os.kill(os.getpid(), signal.SIGKILL)
                return rename(src, dst)

            os.rename = killing_rename
        if kill == "overlap":  # the other writer of the key starts while this one computes it
            import cutswap.pipeline.stores.publish as stores
            publishing = stores.publishing

            def slow(final, attrs, replace=False):
                while sum(n.startswith("started-") for n in os.listdir(storage)) < 2:
                    time.sleep(0.01)
                time.sleep(1.0)  # the other one is at the key's lock by now
                return publishing(final, attrs, replace)

            stores.publishing = slow
            open(os.path.join(storage, f"started-{{os.getpid()}}"), "w").close()

    from cutswap.pipeline.run_dataset import resolve_dataset
    from cutswap.pipeline.settings import load_settings
    from cutswap.pipeline.stages.ingest import ingest_category

    settings = load_settings(None, {{**{settings!r}, "storage_root": storage, "dataset.root": data}})
    root, table = resolve_dataset(settings)
    if stage == "ingest":
        arm()
    ref, computed = ingest_category(settings, root, "bottle", table)
    if stage == "saliency":
        from cutswap.pipeline.stages.saliency import saliency_category
        arm()
        ref, computed = saliency_category(settings, ref)
    print(json.dumps({{"path": ref.path, "computed": computed}}))
    """
).format(repo=str(REPO), settings=SETTINGS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """MVTec AD layout, one category: 5 training images (two shards' worth of chunks), 3 test images."""
    root = tmp_path_factory.mktemp("crash") / "data"
    rng = np.random.default_rng(0)

    def save(rel: str, array: np.ndarray) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)

    for i in range(5):
        save(f"bottle/train/good/{i:03d}.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    save("bottle/test/good/000.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    for i in range(2):
        save(f"bottle/test/broken/{i:03d}.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
        mask = np.zeros((40, 40), np.uint8)
        mask[5:15, 5:15] = 255
        save(f"bottle/ground_truth/broken/{i:03d}_mask.png", mask)
    return root


def start(script: Path, storage: Path, data: Path, stage: str, kill: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(storage), str(data), stage, kill],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def run_all(
    script: Path, jobs: list[tuple[Path, Path, str, str]], at_once: int = 3
) -> list[tuple[int, str, str]]:
    """Run the child for each job, a few at a time (most of a child's life is importing, on 2 cores)."""
    results: list[tuple[int, str, str]] = []
    for i in range(0, len(jobs), at_once):
        procs = [start(script, *job) for job in jobs[i : i + at_once]]
        results.extend(finish(p) for p in procs)
    return results


def arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    return {name: arr[...] for name, arr in group.arrays()}


def stage_entries(storage: Path, stage: str) -> tuple[list[str], list[str]]:
    """(visible stores, hidden entries) of one stage folder."""
    folder = storage / stage
    names = sorted(os.listdir(folder)) if folder.exists() else []
    return [n for n in names if not n.startswith(".")], [n for n in names if n.startswith(".")]


def run_here(storage: Path, data: Path, stage: str) -> Path:
    """The uninterrupted run (and every rerun), in this process: ingest, then saliency if asked."""
    from cutswap.pipeline.run_dataset import resolve_dataset
    from cutswap.pipeline.settings import load_settings
    from cutswap.pipeline.stages.ingest import ingest_category

    settings = load_settings(None, {**SETTINGS, "storage_root": str(storage), "dataset.root": str(data)})
    root, table = resolve_dataset(settings)
    ref, _ = ingest_category(settings, root, "bottle", table)
    if stage == "saliency":
        from cutswap.pipeline.stages.saliency import saliency_category

        ref, _ = saliency_category(settings, ref)
    return Path(ref.path)


def count_puts(storage: Path, data: Path, stage: str, monkeypatch) -> tuple[Path, int]:
    """Run the stage here once, counting its file writes into Zarr (where the kill points can fall)."""
    import zarr.storage._local as local

    if stage == "saliency":
        run_here(storage, data, "ingest")
    calls = [0]
    original = local._put

    def counting(path, value, exclusive=False):
        calls[0] += 1
        return original(path, value, exclusive=exclusive)

    with monkeypatch.context() as patch:
        patch.setattr(local, "_put", counting)
        path = run_here(storage, data, stage)
    return path, calls[0]


def check_kills(tmp_path: Path, dataset: Path, stage: str, points: list[str], monkeypatch) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    reference, puts = count_puts(tmp_path / "reference", dataset, stage, monkeypatch)
    assert puts >= 4, "the stage should write several files; the kill points below assume it"
    points = [p.replace("LAST", str(puts)).replace("MID", str(puts // 2)) for p in points]
    expected = arrays(reference)

    storages = {point: tmp_path / f"killed-{point.replace(':', '-')}" for point in points}
    killed = run_all(script, [(storages[p], dataset, stage, p) for p in points])
    for point, (code, _, err) in zip(points, killed, strict=True):
        assert code == -9, f"{point}: the child should have been killed, got {code}: {err[-2000:]}"
        visible, hidden = stage_entries(storages[point], stage)
        assert visible == [], f"{point}: a killed writer published {visible}"
        # A hidden temporary directory is left (complete, for a kill right before the rename), which no
        # reader ever opens: readers only look up the final name.
        assert any(".tmp-" in h and not h.endswith(".lock") for h in hidden), f"{point}: {hidden}"
        assert any(h.endswith(".lock") for h in hidden), f"{point}: the dead writer's lock file: {hidden}"
        assert not is_complete(storages[point] / stage / reference.name)

    # The dead writers' heartbeats stopped when they were killed; count them silent long enough already
    # (the default wait, ten heartbeats, is the subject of tests/cutswap/test_atomic.py).
    monkeypatch.setenv("CUTSWAP_GC_STALE_SECONDS", "0")
    for point in points:
        path = run_here(storages[point], dataset, stage)
        assert path.name == reference.name  # same key
        visible, hidden = stage_entries(storages[point], stage)
        assert visible == [path.name] and hidden == [], f"{point}: leftovers {hidden}"
        got = arrays(path)
        assert sorted(got) == sorted(expected)
        for name, array in expected.items():
            np.testing.assert_array_equal(got[name], array, err_msg=f"{point}: {name}")


def test_ingest_killed_anywhere_reruns_to_the_same_store(tmp_path, dataset, monkeypatch):
    check_kills(
        tmp_path, dataset, "ingest", ["put:1", "put:MID", "half:MID", "put:LAST", "rename"], monkeypatch
    )


@pytest.fixture
def one_torch_thread():
    """Saliency on several CPU threads differs between runs in the last float16 bit (kernels split their
    reductions differently from call to call); one thread makes the recomputation bitwise repeatable, so
    what is compared is the store writer, not the kernels."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_saliency_killed_anywhere_reruns_to_the_same_store(tmp_path, dataset, monkeypatch, one_torch_thread):
    # Two points (each child imports torch, the slow part): mid-write with a torn file, and at the rename.
    check_kills(tmp_path, dataset, "saliency", ["half:MID", "rename"], monkeypatch)


def test_two_concurrent_ingests_compute_one_store_and_share_it(tmp_path, dataset):
    """The second writer of a key waits for the first (inside its publish) and reuses its store."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    expected = arrays(run_here(tmp_path / "reference", dataset, "ingest"))
    storage = tmp_path / "shared"
    storage.mkdir()
    results = run_all(script, [(storage, dataset, "ingest", "overlap")] * 2)
    assert [code for code, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    answers = [json.loads(out.splitlines()[-1]) for _, out, _ in results]
    assert len({a["path"] for a in answers}) == 1
    assert sorted(a["computed"] for a in answers) == [False, True]  # one computed, one waited and reused
    visible, hidden = stage_entries(storage, "ingest")
    assert len(visible) == 1 and hidden == []  # no temporary, no lock file
    got = arrays(storage / "ingest" / visible[0])
    for name, array in expected.items():
        np.testing.assert_array_equal(got[name], array)
