"""prefect.yaml: the same-host deployments (`make server`, `prefect deploy --all`); prefect-remote.yaml: the
one for a host without this checkout (scripts/deploy-remote.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from cutswap.pipeline.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def _deployments(file: str = "prefect.yaml") -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load((REPO / file).read_text())["deployments"]}


def test_the_remote_deployment_clones_a_commit_installs_the_lock_and_takes_its_roots_from_the_environment():
    remote = _deployments("prefect-remote.yaml")["remote-benchmark"]
    steps = [next(iter(step)) for step in remote["pull"]]
    assert steps == [
        "prefect.deployments.steps.git_clone",
        "prefect.deployments.steps.run_shell_script",
        "prefect.deployments.steps.set_working_directory",
    ]
    clone = remote["pull"][0]["prefect.deployments.steps.git_clone"]
    assert clone["commit_sha"] == "{{ $CUTSWAP_COMMIT }}" and "branch" not in clone  # a commit, not a tip
    assert remote["pull"][1]["prefect.deployments.steps.run_shell_script"]["script"] == (
        "bash scripts/install-locked.sh"
    )
    assert remote["work_pool"]["name"] != "cutswap"  # not the same-host pool of `make server`
    overrides = remote["parameters"]["overrides"]
    assert all(v.startswith("{{ $CUTSWAP_") for v in overrides.values())
    # What the environment fills in at deploy time makes valid settings with the deployment's preset.
    filled = {
        "storage_root": "s3://bucket/cutswap/storage",
        "reports_root": "s3://bucket/cutswap/reports",
        "parallel.address": "tcp://10.0.0.5:8786",
    }
    assert set(filled) == set(overrides)
    settings = load_settings(REPO / remote["parameters"]["preset"], filled)
    assert settings.storage_root == "s3://bucket/cutswap/storage"


def test_prefect_deploy_all_deploys_the_same_host_deployments_only():
    assert {d["work_pool"]["name"] for d in _deployments().values()} == {"cutswap"}
    assert "full-benchmark" in _deployments() and "remote-benchmark" not in _deployments()
    assert "deploy --all" in (REPO / "scripts" / "prefect-local.sh").read_text()  # make server: the same


def test_deploying_the_remote_deployment_with_its_variables_unset_is_refused_by_name():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTSWAP_")}
    env["CUTSWAP_REPOSITORY"] = "https://git.example.org/lab/cutswap.git"
    env["PREFECT"] = "/bin/false"  # never reached
    done = subprocess.run(
        ["bash", "scripts/deploy-remote.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        "error: prefect-remote.yaml is rendered from CUTSWAP_STORAGE_ROOT CUTSWAP_REPORTS_ROOT "
        "CUTSWAP_SCHEDULER, unset here"
    )


def test_every_same_host_deployment_names_a_preset_that_loads():
    for name, deployment in _deployments().items():
        preset = deployment["parameters"].get("preset", "configs/demo.yaml")  # the flow's default
        if deployment["work_pool"]["name"] == "cutswap":
            assert load_settings(REPO / preset).run, name
    assert _deployments()["ablation"]["parameters"]["preset"] == "configs/ablation.yaml"
