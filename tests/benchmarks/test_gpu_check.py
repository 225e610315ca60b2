"""``benchmarks/gpu_check.sh``, the GPU acceptance script, kept working on machines without CUDA."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _lines(*args: str) -> tuple[int, list[dict]]:
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the checks themselves")
def test_without_cuda_every_cuda_check_is_skipped_with_its_reason():
    code, lines = _lines()
    assert code == 0
    assert lines[0]["check"] == "environment" and lines[0]["devices"] == []
    checks = {line["check"]: line for line in lines[1:]}
    assert set(checks) == {"bf16_autocast", "channels_last", "train_throughput", "saliency", "coreset", "ddp"}
    for line in checks.values():
        assert line["status"] == "skipped" and "no CUDA device" in line["reason"], line


@pytest.mark.slow
def test_every_check_runs_on_the_cpu_and_passes():
    """The same checks on the CPU at toy sizes, so their code cannot rot where there is no GPU."""
    code, lines = _lines("--on-cpu", "--size", "32", "--batch", "2", "--steps", "2", "--patches", "2000")
    failed = [line for line in lines if line["status"] != "ok"]
    assert code == 0 and not failed, failed
    by_name = {line["check"]: line for line in lines}
    assert by_name["bf16_autocast"]["activations"] == "torch.bfloat16"
    assert by_name["coreset"]["equal_picks"] == 1.0  # the same device computes the same picks
    assert by_name["ddp"]["world_size"] == 2
