"""`python -m cutswap.report.coverage --json` prints one JSON line per scenario x design."""

from __future__ import annotations

import json
import subprocess
import sys

from cutswap.report.coverage import DESIGNS, SCENARIOS

KEYS = {"scenario", "design", "reps", "coverage", "miss_low", "miss_high", "mean_width"}


def test_the_command_prints_a_json_line_per_scenario_and_design():
    out = subprocess.run(
        [sys.executable, "-m", "cutswap.report.coverage", "--json", "--reps", "200", "--seed", "3"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert len(rows) == len(SCENARIOS) * len(DESIGNS)
    assert {(r["scenario"], r["design"]) for r in rows} == {(s, d) for s in SCENARIOS for d in DESIGNS}
    assert set(DESIGNS) == {"3x3", "5x15"}
    for row in rows:
        assert set(row) >= KEYS, row
        assert row["reps"] == 200
        assert 0 <= row["miss_low"] <= 1 and 0 <= row["miss_high"] <= 1
        assert abs(row["coverage"] + row["miss_low"] + row["miss_high"] - 1) < 1e-3, row
        assert row["mean_width"] > 0
    normal = {r["design"]: r["coverage"] for r in rows if r["scenario"] == "normal-demo"}
    assert all(0.88 <= c <= 0.995 for c in normal.values()), normal  # 95 % +- about 4 standard errors
