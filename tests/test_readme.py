"""The README's library example runs as written, without Prefect, Zarr or settings; its detector commands
(``cutswap predict``, ``cutswap export``) run as written on a small run named as they name it, and once per
method row of that run with ``--method``."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: How the README calls the console script (``make install`` puts it there).
PROGRAM = ".venv/bin/cutswap"


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


def _detector_commands() -> list[list[str]]:
    """The command lines of the README's "Use a trained detector" section, split as a shell splits them
    (so a quoted glob reaches the command unexpanded, as a user's shell passes it)."""
    section = README.read_text().split("## Use a trained detector", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    commands = [shlex.split(line) for block in blocks for line in block.splitlines() if line.strip()]
    assert commands and all(c[0] == PROGRAM for c in commands), f"every line runs {PROGRAM}: {commands}"
    assert {c[1] for c in commands} == {"predict", "export"}, "the section shows predict and export"
    return commands


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def _with_method(argv: list[str], method: str) -> list[str]:
    """The command with ``--method method``: replacing the README's choice, or added to a line without one."""
    if "--method" in argv:
        at = argv.index("--method") + 1
        return [*argv[:at], method, *argv[at + 1 :]]
    return [*argv, "--method", method]


def _output_folder(base: Path, argv: list[str], run: str) -> Path:
    """Where the command wrote: ``--out``, else the one default folder named after the chosen detector
    (``predictions/`` or ``exports/``, ``<run>-<category>-<method>-s<seed>``)."""
    if (out := _option(argv, "--out")) is not None:
        return base / out
    method = _option(argv, "--method") or "*"
    root = base / ("predictions" if argv[1] == "predict" else "exports")
    found = sorted(root.glob(f"{run}-{_option(argv, '--category')}-{method}-s*"))
    assert len(found) == 1, f"one output folder for {argv}, found {found}"
    return found[0]


def _check_outputs(base: Path, argv: list[str], run: str) -> None:
    """What the command promises, in the folder it wrote: predictions of image files (the paths as given,
    from ``base``), each decided and with its overlay, and nothing skipped; an ONNX file whose metadata
    name the detector's run and category (and method, when given) beside a ``torch.export`` program."""
    import pandas as pd

    from cutswap.deploy.export import read_metadata

    folder = _output_folder(base, argv, run)
    if argv[1] == "predict":
        table = pd.read_csv(folder / "predictions.csv")
        assert len(table) > 0 and table["path"].is_unique and not (folder / "skipped.csv").exists()
        assert all((base / path).is_file() for path in table["path"])
        assert set(table["decision"]) <= {"anomalous", "normal"}
        assert all((folder / overlay).is_file() for overlay in table["overlay"])
        return
    provenance = read_metadata(folder / "detector.onnx")["cutswap.provenance"]
    assert (provenance["run"], provenance["category"]) == (run, _option(argv, "--category"))
    if (method := _option(argv, "--method")) is not None:
        assert provenance["method"] == method
    assert (folder / "detector.pt2").is_file()


@pytest.mark.slow
def test_the_readmes_detector_commands_run_as_written_and_for_every_row(demo_run, monkeypatch, capsys):
    """After ``make demo`` the README's commands exit 0: each line, as written, by the console script in a
    fresh process in the run's folder; then each line once per row of the run with ``--method`` (in this
    process: the same ``main`` the console script calls), so no row's export or prediction is left out."""
    from flows.cli import main

    commands = _detector_commands()
    for argv in commands:
        assert argv[2] == demo_run.run, (
            f"the README names run {argv[2]!r}; the fixture built {demo_run.run!r}"
        )
        assert _option(argv, "--category") in demo_run.settings.dataset.categories

    script = Path(sys.executable).parent / "cutswap"
    assert script.is_file(), f"the cutswap console script is not installed beside {sys.executable}"
    for argv in commands:
        done = subprocess.run(
            [str(script), *argv[1:]], cwd=demo_run.base, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout}\n{done.stderr}"
        _check_outputs(demo_run.base, argv, demo_run.run)

    monkeypatch.chdir(demo_run.base)
    for method in demo_run.settings.train.methods:
        for argv in [_with_method(a, method) for a in commands]:
            code = main(argv[1:])
            printed = capsys.readouterr()
            assert code == 0, f"{shlex.join(argv)}\n{printed.out}\n{printed.err}"
            _check_outputs(demo_run.base, argv, demo_run.run)
