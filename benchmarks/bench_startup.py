"""How fast ``cutswap`` answers when it has nothing to do: a mistyped setting, ``--help``.

Each command runs ``--repeat`` times in a fresh interpreter, alternating with ``python -c pass`` (the floor:
the interpreter's own start), and the medians are printed with their ratio to that floor. With
``--baseline REV`` the mistyped setting is also timed from a temporary checkout of REV (``git worktree``,
put first on ``PYTHONPATH``), in the same run, and the ratio of the two is printed.

    .venv/bin/python benchmarks/bench_startup.py [--repeat 15] [--baseline 1510767]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TYPO = ["run", "--preset", "configs/demo.yaml", "--set", "train.stepz=5"]


def _seconds(command: list[str], env: dict[str, str], code: int) -> float:
    """One run's wall time, from the checkout ``PYTHONPATH`` names (``-m`` puts the working folder first)."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=env["PYTHONPATH"], env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != code:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}, not {code}: {done.stderr[-500:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--baseline", default=None, help="a git revision to time the mistyped setting at")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": tempfile.mkdtemp()}
    cases = {
        "python -c pass": ([sys.executable, "-c", "pass"], env, 0),
        "cutswap run --set train.stepz=5": ([sys.executable, "-m", "flows.cli", *TYPO], env, 2),
        "cutswap --help": ([sys.executable, "-m", "flows.cli", "--help"], env, 0),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            old = Path(tmp) / "baseline"
            subprocess.run(
                ["git", "worktree", "add", "-q", "--detach", str(old), args.baseline], cwd=REPO, check=True
            )
            old_env = {**env, "PYTHONPATH": str(old)}
            cases[f"cutswap run --set train.stepz=5 at {args.baseline}"] = (
                [sys.executable, "-m", "flows.cli", *TYPO],
                old_env,
                2,
            )
        try:
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.repeat):  # interleaved: a load that comes and goes hits every case alike
                for name, (command, case_env, code) in cases.items():
                    times[name].append(_seconds(command, case_env, code))
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, check=False)
    floor = statistics.median(times["python -c pass"])
    print(f"{'command':<52} {'median s':>9} {'x python -c pass':>17}")
    for name, values in times.items():
        print(f"{name:<52} {statistics.median(values):>9.3f} {statistics.median(values) / floor:>17.1f}")
    if args.baseline:
        now = statistics.median(times["cutswap run --set train.stepz=5"])
        then = statistics.median(times[f"cutswap run --set train.stepz=5 at {args.baseline}"])
        print(
            f"\nmistyped setting: {then / now:.2f}x faster than at {args.baseline} "
            f"({then:.3f} s -> {now:.3f} s)"
        )
    print(f"({args.repeat} runs each, interleaved; {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
