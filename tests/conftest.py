"""Shared fixtures. Prefect's home goes to a temporary folder before anything imports Prefect, so tests
never touch the project's .prefect/ and never reach for a server."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.runs import TinyRun

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="cutswap-prefect-")
# prefect.toml names the project's profiles file, which outranks PREFECT_HOME: a server the developer
# started (`make server`) must not receive the tests' runs.
os.environ["PREFECT_PROFILES_PATH"] = os.path.join(os.environ["PREFECT_HOME"], "profiles.toml")
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def tiny_config(run: str, dataset: dict, **sections) -> dict:
    """A preset that runs the whole flow in seconds (2 training steps of 4 + 4 images, three methods, one
    seed, CPU); ``sections`` replace whole sections of it."""
    return {
        "run": run,
        "dataset": dataset,
        "saliency": {"backbone": "efficientnet_lite0", "batch_size": 4},
        "pairs": {"draws": 4},
        "train": {
            "methods": ["cutswap", "cutpaste", "random-swap"],
            "seeds": [0],
            "steps": 2,
            "batch_size": 4,
            "head_dims": [16],
            "log_every": 1,
            "device": "cpu",
        },
        **sections,
    }


@pytest.fixture(scope="session")
def tiny_preset():
    """``make(base, run, dataset, **sections)``: writes ``base/tiny.yaml``, the ``tiny_config`` preset with
    its storage and reports under ``base``, and returns its path."""
    import yaml

    def make(base, run: str, dataset: dict, **sections):
        roots = {"storage_root": str(base / "storage"), "reports_root": str(base / "reports")}
        path = base / "tiny.yaml"
        path.write_text(yaml.safe_dump({**roots, **tiny_config(run, dataset, **sections)}))
        return path

    return make


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """The demo (``configs/demo.yaml``: its rows, its classifier trunk and its baseline trunk) at toy scale
    under the name the README's commands use, ``demo``, on the two categories they name (brick, grass):
    ``tests.support.runs.build_run``, about 25 s on 2 idle cores. Its folder holds ``storage/`` (the dataset
    under ``storage/datasets/textures``) and ``reports/``, as the project folder does after ``make demo``.
    """
    import yaml

    from tests.support.runs import build_run

    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text())
    train = {key: demo["train"][key] for key in ("trunk", "pretrained", "baseline_trunk")}
    return build_run(
        tmp_path_factory.mktemp("demo-run"),
        demo["run"],
        categories=["brick", "grass"],
        methods=list(demo["train"]["methods"]),
        train=train,
    )


# --- object storage: a real S3-compatible server process on loopback ------------------------------------


@pytest.fixture(scope="session")
def s3_server():
    """``moto_server`` (from ``moto[server]``, in the test extra) as its own process on 127.0.0.1, with this
    process's ``AWS_*`` variables pointing at it for the session (as a user's environment would)."""
    from tests.support.s3 import S3Server

    with S3Server() as server:
        saved = {k: os.environ.get(k) for k in server.env}
        os.environ.update(server.env)
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def bucket(s3_server, request):
    """A fresh bucket's root URL, ``s3://<bucket>/cutswap``."""
    return s3_server.bucket() + "/cutswap"


@pytest.fixture(params=["local", "s3"])
def any_root(request, tmp_path):
    """A storage root of each kind: a local folder, and a bucket on the S3 server."""
    if request.param == "local":
        return str(tmp_path / "storage")
    return request.getfixturevalue("bucket")
