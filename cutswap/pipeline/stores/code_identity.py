"""Each stage's code identity, so that a change to what a stage computes cannot keep its old store keys.

Store keys hold a hand-kept ``CODE_VERSIONS`` per stage (``keys``). A version that is not bumped after a
change to how, say, pairs are drawn would make every later run reuse the old pairs, trainings and
evaluations under the old keys, silently. The guard: a stage's identity is a hash, per module, of the
normalised source of every module of this library that the stage's module imports, directly or through
others (``ast.unparse`` of the parsed module without its docstrings, so comments, docstrings and
formatting do not count). ``code_identity.json`` beside this file records, per stage, the version and the
module hashes it was last checked at; a test (``tests/cutswap/pipeline/stores/test_code_identity.py``)
fails while they differ and says what to do:

- results change: bump the stage's entry in ``CODE_VERSIONS``, then record;
- results do not change (a refactor, a faster path): record without bumping, and say so in the commit.

Recording is ``python -m cutswap.pipeline.stores.code_identity`` (every stage) or with stage names.

Plumbing (``PLUMBING``: where and how stores are written, the Dask layer, settings models, errors, the
terminal) is left out: it decides where results go and how a run proceeds, not what a stage computes,
and its own tests cover it. A setting that changes results is in the key itself.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

from cutswap.pipeline.stores.keys import CODE_VERSIONS

__all__ = ["PLUMBING", "RECORD", "check", "module_digest", "record", "stage_identity"]

#: The committed identities: ``{stage: {"version": CODE_VERSIONS[stage], "modules": {module: digest}}}``.
RECORD = Path(__file__).with_name("code_identity.json")

#: Module prefixes that are not part of any stage's computation (module docstring).
PLUMBING = (
    "cutswap.app",
    "cutswap.atomic",
    "cutswap.errors",
    "cutswap.pipeline.parallel",
    "cutswap.pipeline.settings",
    "cutswap.pipeline.stores",
    "cutswap.roots",
)

_PACKAGE_ROOT = Path(__file__).resolve().parents[3]  # the folder holding the cutswap package


def _is_plumbing(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in PLUMBING)


def _path_of(module: str) -> Path | None:
    """The source file of a module of this library, or None (not ours, or not a module)."""
    if module != "cutswap" and not module.startswith("cutswap."):
        return None
    base = _PACKAGE_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _stripped(tree: ast.Module) -> ast.Module:
    """``tree`` without docstrings (module, class and function ones)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            first = body[0].value if body and isinstance(body[0], ast.Expr) else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def module_digest(source: str) -> str:
    """Hash of a module's code: comments, docstrings and layout do not change it, any statement does."""
    normalised = ast.unparse(_stripped(ast.parse(source)))
    return hashlib.sha256(normalised.encode()).hexdigest()[:16]


def _imports(module: str, path: Path) -> set[str]:
    """The modules of this library that ``module`` imports anywhere in its body (lazy imports too)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, package)
            for alias in node.names:  # a submodule where the name is one, else the module it comes from
                submodule = f"{base}.{alias.name}"
                found.add(submodule if _path_of(submodule) is not None else base)
    return {m for m in found if _path_of(m) is not None and not _is_plumbing(m)}


def stage_identity(stage: str) -> dict[str, str]:
    """``{module: digest}`` of the stage's module and every module of this library it reaches."""
    start = f"cutswap.pipeline.stages.{stage}"
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        module = todo.pop()
        path = _path_of(module)
        if module in seen or path is None:
            continue
        seen[module] = module_digest(path.read_text(encoding="utf-8"))
        todo.extend(_imports(module, path) - seen.keys())
    return dict(sorted(seen.items()))


def _recorded() -> dict[str, dict]:
    return json.loads(RECORD.read_text(encoding="utf-8")) if RECORD.is_file() else {}


def check(stage: str) -> str | None:
    """None when the stage's code is what was recorded at its version; else what changed and what to do."""
    entry = _recorded().get(stage, {"version": None, "modules": {}})
    now = stage_identity(stage)
    changed = sorted(m for m in now.keys() | entry["modules"].keys() if now.get(m) != entry["modules"].get(m))
    version = CODE_VERSIONS[stage]
    if not changed and entry["version"] == version:
        return None
    record_it = f"python -m cutswap.pipeline.stores.code_identity {stage}"
    table = "cutswap/pipeline/stores/code_identity.json"
    if entry["version"] != version:
        return (
            f"stage {stage!r} is at CODE_VERSIONS {version!r} but its code identity was recorded at "
            f"{entry['version']!r}; record the new identity: {record_it}, and commit {table}"
        )
    return (
        f"the code of stage {stage!r} changed ({', '.join(changed)}) but CODE_VERSIONS[{stage!r}] is still "
        f"{version!r}, so runs would reuse stores computed by the old code. If results can change, bump it "
        f"in cutswap/pipeline/stores/keys.py, then run {record_it}; if they cannot (a refactor), run "
        f"{record_it} alone and say so in the commit. Commit {table} either way."
    )


def record(stages: list[str]) -> None:
    """Write the current identities of ``stages`` (at their current versions) into ``RECORD``."""
    table = _recorded()
    for stage in stages:
        table[stage] = {"version": CODE_VERSIONS[stage], "modules": stage_identity(stage)}
    RECORD.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    unknown = [s for s in argv if s not in CODE_VERSIONS]
    if unknown:
        print(f"unknown stage {unknown[0]!r}; stages: {', '.join(CODE_VERSIONS)}", file=sys.stderr)
        return 2
    stages = argv or list(CODE_VERSIONS)
    record(stages)
    for stage in stages:
        print(f"recorded {stage} at version {CODE_VERSIONS[stage]} ({len(stage_identity(stage))} modules)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
