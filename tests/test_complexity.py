"""No function of ``cutswap/``, ``flows/`` or ``tasks/`` is above cyclomatic complexity 15 as radon counts it.

Ruff's C901 (``max-complexity = 12`` in pyproject.toml) counts branching statements only. Radon also counts
what hides branching inside one statement: conditional expressions, each ``and``/``or`` operand, each ``for``
and ``if`` of a comprehension. Functions that passed ruff had grown to 24 that way (issue 29). Methods and
functions nested in functions are checked too, each on its own (radon leaves a closure out of the count of
the function around it).

``PENDING`` lists functions known to be above the limit that are being split elsewhere, with the score
they had when listed. An entry fails the test once it is no longer needed (the function is at 15 or below,
or gone) so that the list cannot go stale, and when its function grows beyond the recorded score.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Class, Function

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cutswap", "flows", "tasks")
LIMIT = 15

#: ``"path:qualified name"`` -> the radon score it had when listed; being split into named steps elsewhere.
PENDING: dict[str, int] = {}


def _functions(blocks: list[Function | Class], prefix: str = "") -> Iterator[tuple[str, Function]]:
    """Every function of radon's blocks with its qualified name: ``Class.method``, ``outer.inner``."""
    for block in blocks:
        name = f"{prefix}{block.name}"
        if isinstance(block, Class):
            yield from _functions([*block.methods, *block.inner_classes], f"{name}.")
        else:
            yield name, block
            yield from _functions(block.closures, f"{name}.")


def complexities() -> dict[str, tuple[int, int]]:
    """``{"path:qualified name": (line, complexity)}`` of every function of the three packages.

    ``cc_visit`` lists module-level functions and classes, and each class's methods once more on their
    own; closures and inner classes only inside their block. So the walk starts from all but those
    methods. Of two definitions of one name in a module (a conditional one), the more complex counts.
    """
    found: dict[str, tuple[int, int]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            blocks = cc_visit(path.read_text(encoding="utf-8"))
            top = [b for b in blocks if not (isinstance(b, Function) and b.is_method)]
            for name, function in _functions(top):
                if function.complexity > found.get(f"{rel}:{name}", (0, 0))[1]:
                    found[f"{rel}:{name}"] = (function.lineno, function.complexity)
    return found


def test_no_function_is_above_the_limit():
    over = {key: value for key, value in complexities().items() if value[1] > LIMIT and key not in PENDING}
    listed = "\n".join(
        f"  {key.partition(':')[0]}:{line} {key.partition(':')[2]}: {score}"
        for key, (line, score) in sorted(over.items())
    )
    assert not over, (
        f"{len(over)} function(s) above complexity {LIMIT} as radon counts it (ternaries, boolean operands "
        f"and comprehensions count, unlike ruff's C901); split each into named steps:\n{listed}"
    )


def test_pending_exceptions_are_still_needed_and_do_not_grow():
    scores = complexities()
    stale = [key for key in PENDING if key not in scores or scores[key][1] <= LIMIT]
    assert not stale, (
        f"no longer above {LIMIT} (or gone): remove from PENDING in tests/test_complexity.py: {stale}"
    )
    grown = [
        f"{key}: {scores[key][1]} (listed at {PENDING[key]})"
        for key in PENDING
        if scores[key][1] > PENDING[key]
    ]
    assert not grown, (
        f"grew beyond the score PENDING records: {'; '.join(grown)}; split into named steps rather than "
        "raise the entry"
    )
