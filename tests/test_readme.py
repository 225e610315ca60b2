"""The README's library example runs as written, without Prefect, Zarr or settings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text.split("## Use CutSwap in your own training loop", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section holds one example"
    return blocks[0]


@pytest.mark.slow
def test_the_library_example_makes_cutswap_negatives_without_the_pipeline(tmp_path):
    check = """
import sys
for heavy in ("prefect", "zarr", "cutswap.pipeline.settings", "cutswap.pipeline.stores", "pydantic"):
    assert heavy not in sys.modules, f"the example imported {heavy}"
assert negatives.shape == (8, 3, 64, 64) and labels.shape == (8,)
changed = (negatives[:4] != batch).flatten(1).any(1)
assert bool(changed.all()), "every CutSwap negative differs from its image"
assert len(bank) == 4 and bank[0].boxes.shape == (8, 16, 6)
print("ok")
"""
    script = tmp_path / "example.py"
    script.write_text(_example() + check)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("ok")
