"""``cutswap show RUN | head -1``, ``cutswap runs | head -1``: the reader's leaving ends the command quietly
(status 141, as ``yes | head -1``), and ``show`` starts with its first table's title, not an empty line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cutswap.app import cli, console

CUTSWAP = Path(sys.prefix) / "bin" / "cutswap"  # the console script a user runs (flows.cli:main)


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    rows = [
        {"dataset": "textures", "category": c, "method": m, "seed": s, "image_AUROC": 0.9 + s / 100}
        for c in ("bottle", "screw")
        for m in ("cutswap", "cutpaste")
        for s in (0, 1)
    ]
    (tmp_path / "demo").mkdir()
    pd.DataFrame(rows).assign(pixel_AUROC=0.8).to_csv(tmp_path / "demo" / "results.csv", index=False)
    return tmp_path


def test_show_starts_with_its_first_table_and_separates_the_next(reports, capsys):
    assert cli.main(["--reports", str(reports), "show", "demo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "image_AUROC (%)" and lines[1].startswith("| category |")
    assert lines[lines.index("pixel_AUROC (%)") - 1] == ""


@pytest.mark.parametrize("command", [["show", "demo"], ["runs"]])
def test_a_reader_that_left_ends_the_command_quietly(reports, command):
    """The reader gone before the command writes (``head -1`` that has its line): no traceback, 141."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [str(CUTSWAP), "--reports", str(reports), *command],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write)
    assert result.stderr == ""
    assert result.returncode == console.CLOSED_STDOUT_STATUS == 141


@pytest.mark.parametrize(
    ("command", "first"), [("show demo", "image_AUROC (%)"), ("runs", "run created preset")]
)
def test_head_1_prints_the_first_line_and_nothing_else(reports, command, first):
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; '{CUTSWAP}' --reports '{reports}' {command} | head -1"],
        capture_output=True,
        text=True,
    )
    assert result.stderr == ""
    assert result.stdout.strip().startswith(first) and result.stdout.count("\n") == 1
    assert result.returncode in (0, 141)  # whether head exited before the one write: as with `yes | head -1`


def test_a_broken_pipe_of_something_else_is_still_an_error():
    """Only stdout's reader leaving is quiet: stdout still read, a BrokenPipeError is a failure."""
    code = (
        "from cutswap.app import console\n"
        "with console.quiet_when_stdout_closes():\n"
        "    raise BrokenPipeError(32, 'a socket')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1 and "BrokenPipeError: [Errno 32] a socket" in result.stderr
