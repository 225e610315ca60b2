"""Did two runs of one preset compute the same thing? For a refactor that must change nothing.

    python scripts/same-results.py OLD_STORAGE OLD_REPORT NEW_STORAGE NEW_REPORT

Compares the store names of every stage (``<name>-<key>``: the keys are hashes of settings, inputs and code
versions, so equal names mean equal keys), the bytes of every trained checkpoint, and the report's
``results.csv`` and ``comparisons.csv`` cell by cell (timing columns are listed apart: they differ between
any two runs). Exits 1 when anything else differs. Both runs must come from the same machine: training is
chaotic in float rounding across CPUs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

#: Columns that measure time, not results.
TIMING = {"train_seconds", "train_images_per_s", "map_seconds", "score_seconds"}


def stores(root: Path) -> list[str]:
    return sorted(f"{p.parent.name}/{p.name}" for p in root.glob("*/*") if not p.name.startswith("."))


def main(old_storage: Path, old_report: Path, new_storage: Path, new_report: Path) -> int:
    problems = []
    old, new = stores(old_storage), stores(new_storage)
    print(f"stores: {len(old)} and {len(new)}, same names and keys: {old == new}")
    if old != new:
        problems.append(f"stores only in one run: {sorted(set(old) ^ set(new))}")
    differ = []
    checkpoints = sorted(old_storage.glob("train/*/checkpoint.pt"))
    for path in checkpoints:
        other = new_storage / "train" / path.parent.name / path.name
        if not other.is_file() or path.read_bytes() != other.read_bytes():
            differ.append(path.parent.name)
    print(f"trained checkpoints: {len(checkpoints) - len(differ)} of {len(checkpoints)} bit-identical")
    if differ:
        problems.append(f"checkpoints that differ: {differ}")
    for name in ("results.csv", "comparisons.csv"):
        a, b = pd.read_csv(old_report / name), pd.read_csv(new_report / name)
        if list(a.columns) != list(b.columns) or len(a) != len(b):
            problems.append(f"{name}: other columns or rows")
            continue
        changed = [c for c in a.columns if not a[c].equals(b[c])]
        results = [c for c in changed if c not in TIMING]
        print(
            f"{name}: {len(a)} rows; columns that differ: {results or 'none'} "
            f"(timing: {sorted(set(changed) & TIMING)})"
        )
        if results:
            problems.append(f"{name}: {results}")
    for line in problems:
        print("DIFFERENT:", line)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(main(*(Path(a) for a in sys.argv[1:])))
