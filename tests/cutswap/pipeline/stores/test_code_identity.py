"""The guard on store keys: a stage whose code changed without a ``CODE_VERSIONS`` bump (or a recorded
"results unchanged") fails the suite, with a message saying what to do; comments and docstrings
do not count."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from cutswap.pipeline.stores import code_identity
from cutswap.pipeline.stores.code_identity import check, module_digest, stage_identity
from cutswap.pipeline.stores.keys import CODE_VERSIONS

PACKAGE = Path(code_identity.__file__).resolve().parents[2]


@pytest.mark.parametrize("stage", list(CODE_VERSIONS))
def test_each_stage_code_is_the_one_recorded_at_its_version(stage):
    assert check(stage) is None, check(stage)


@pytest.fixture
def copy(tmp_path, monkeypatch) -> Path:
    """A copy of the package that the identities are computed from, to edit."""
    shutil.copytree(PACKAGE, tmp_path / "cutswap", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_identity, "_PACKAGE_ROOT", tmp_path)
    return tmp_path / "cutswap"


def _edit(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text()
    edited, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
    assert count == 1, pattern
    path.write_text(edited)


@pytest.mark.parametrize(
    ("module", "stages"),
    [("method/pairs.py", {"pairs", "train", "report"}), ("learn/loop.py", {"train"})],
)
def test_a_body_edit_fails_the_stages_that_run_it_and_says_what_to_do(copy, module, stages):
    # A statement added before the first statement of the first function's body: a real (if harmless) change.
    source = (copy / module).read_text()
    body = re.search(
        r"^def \w+\(.*?\).*?:\n(?:    \"\"\"(?:.|\n)*?\"\"\"\n)?(    \S[^\n]*)$", source, re.M | re.S
    )
    assert body is not None
    _edit(copy / module, re.escape(body.group(1)) + "$", "    _unused = 0\n" + body.group(1))
    failing = {stage for stage in CODE_VERSIONS if check(stage) is not None}
    assert failing == stages
    message = check(sorted(stages)[0])
    dotted = "cutswap." + module.removesuffix(".py").replace("/", ".")
    assert dotted in message and "bump it in cutswap/pipeline/stores/keys.py" in message
    assert "python -m cutswap.pipeline.stores.code_identity" in message


def test_comments_docstrings_and_layout_do_not_count(copy):
    pairs = copy / "method" / "pairs.py"
    _edit(pairs, r"^(def \w+\()", r"# a comment above a function\n\1")
    _edit(pairs, r'^(    """)', r"\1Reworded. ")  # the first docstring of a function or class
    _edit(pairs, r"^(\w+ = )", r"\1 ")  # spacing of a top-level assignment
    assert all(check(stage) is None for stage in CODE_VERSIONS)


def test_a_bump_without_recording_is_named(monkeypatch):
    monkeypatch.setitem(CODE_VERSIONS, "pairs", "999")
    assert "record the new identity" in check("pairs")


def test_recording_writes_what_check_compares(tmp_path, monkeypatch):
    monkeypatch.setattr(code_identity, "RECORD", tmp_path / "identity.json")
    assert check("cluster") is not None  # nothing recorded there yet
    assert code_identity.main(["cluster"]) == 0
    assert check("cluster") is None and check("pairs") is not None
    assert code_identity.main(["nope"]) == 2


def test_the_digest_sees_statements_not_text():
    base = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    assert module_digest(base) == module_digest(base.replace('"""Doc."""', "# no doc"))
    assert module_digest(base) != module_digest(base.replace("x + 1", "x + 2"))
    assert "cutswap.method.pairs" in stage_identity(
        "pairs"
    ) and "cutswap.pipeline.stores.keys" not in stage_identity("pairs")
