"""prefect.yaml: the same-host deployments for `make server`, and one for a host without this checkout."""

from __future__ import annotations

from pathlib import Path

import yaml

from cutswap.pipeline.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def _deployments() -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}


def test_the_remote_deployment_clones_installs_and_takes_its_roots_from_the_environment():
    remote = _deployments()["remote-benchmark"]
    steps = [next(iter(step)) for step in remote["pull"]]
    assert steps == [
        "prefect.deployments.steps.git_clone",
        "prefect.deployments.steps.run_shell_script",
        "prefect.deployments.steps.set_working_directory",
    ]
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


def test_make_server_deploys_only_the_same_host_deployments():
    script = (REPO / "scripts" / "prefect-local.sh").read_text()
    assert "deploy --all" not in script
    local = [n for n, d in _deployments().items() if d["work_pool"]["name"] == "cutswap"]
    assert "full-benchmark" in local and "remote-benchmark" not in local


def test_every_same_host_deployment_names_a_preset_that_loads():
    for name, deployment in _deployments().items():
        preset = deployment["parameters"].get("preset", "configs/demo.yaml")  # the flow's default
        if deployment["work_pool"]["name"] == "cutswap":
            assert load_settings(REPO / preset).run, name
    assert _deployments()["ablation"]["parameters"]["preset"] == "configs/ablation.yaml"
