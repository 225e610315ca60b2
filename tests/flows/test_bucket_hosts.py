"""Two flow hosts, one bucket: the second host, with its own copy of the dataset in another folder and its
own home, torch cache and cutswap folders, reuses every store the first one computed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    """The runs are processes of their own, each with its temporary API: no shared one here."""
    yield


def _host(base: Path, data: Path, bucket: str) -> tuple[Path, dict[str, str]]:
    """One flow host: its preset (its own dataset copy, the shared bucket) and its environment (its own
    HOME, torch cache, cutswap cache folder and Prefect home; the bucket's endpoint and credentials)."""
    dataset = {"name": "mvtec", "root": str(data), "categories": ["brick"], "image_size": 48}
    config = tiny_config("tiny", dataset, parallel={"workers": 0})
    config["saliency"] = {**config["saliency"], "backbone": "auto"}  # resolved on each host, from its cache
    preset = base / "tiny.yaml"
    preset.write_text(yaml.safe_dump({"storage_root": bucket, "reports_root": f"{bucket}-reports", **config}))
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("DASK_DISTRIBUTED__")}
    for name, folder in (("HOME", "home"), ("TORCH_HOME", "torch"), ("XDG_CACHE_HOME", "cache")):
        env[name] = str(base / folder)
    env |= {"PYTHONPATH": str(REPO), "PREFECT_HOME": str(base / "prefect")}
    env["PREFECT_PROFILES_PATH"] = str(base / "prefect" / "profiles.toml")
    return preset, env


def _run(preset: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--preset", str(preset)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout + done.stderr


def test_a_second_host_with_its_own_dataset_copy_recomputes_nothing(tmp_path, bucket):
    from cutswap import roots
    from cutswap.data.builtin.textures import build_textures

    data = build_textures(
        tmp_path / "a" / "data", seed=1, image_size=64, n_train=6, n_test_good=3, n_test_defect=1
    )
    copy = Path(shutil.copytree(data, tmp_path / "b" / "elsewhere" / "mvtec", copy_function=shutil.copyfile))
    for path in copy.rglob("*.png"):  # another host's copy: the same bytes, other times
        os.utime(path, (1_000_000_000, 1_000_000_000))
    storage = f"{bucket}/storage"

    first = _run(*_host(tmp_path / "a", data, storage))
    assert re.search(r"saliency brick: computed in", first)
    second = _run(*_host(tmp_path / "b", copy, storage))

    # The second run's own record of what it did: its log, which it uploaded beside its report.
    log = roots.read_bytes(roots.join(f"{storage}-reports", "tiny", "run.log")).decode()
    assert str(tmp_path / "b") in log and str(tmp_path / "a") not in log  # (it is the second host's)
    said = re.findall(
        r"\b(ingest|saliency|cluster|pairs|train|evaluate|report) ([^:\n]+): (reused|computed)", log
    )
    assert {(stage, how) for stage, _, how in said} == {
        (stage, "reused")
        for stage in ("ingest", "saliency", "cluster", "pairs", "train", "evaluate", "report")
    }, second[-3000:]
    assert len({label for stage, label, _ in said if stage == "train"}) == 3  # every job, each reused
