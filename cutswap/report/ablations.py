"""The ablation block's questions: each variant of a run against its method, and against its control.

Input, per variant (``cutswap.pipeline.variants``, as plain data)::

    name -> (method, overrides {dotted setting: value}, control row name or None)

Output: ``(a, b) -> ("ablation", question)`` for ``cutswap.report.compare.compare``'s ``asked``. The
method's own row is ``a``: a positive difference says the paper's choice (the run's settings) beats the
variant, the direction in which the paper makes each claim. The control question keeps the main block's
direction (saliency-guided minus random places).

The paper's ablations have their own wording (``CLAIMS``); any other setting reads "Does it change ...".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cutswap.report.prose import CAM_WORDS

#: Setting -> what comparing a method with its variant asks, given the variant's value.
CLAIMS = {
    "saliency.levels": lambda v: f"Does multilevel saliency help (the run's levels vs {'+'.join(v)} only)?",
    "saliency.cam": lambda v: (
        f"Does the saliency method matter (the run's maps vs {CAM_WORDS.get(v, v)} maps of the same backbone "
        "and levels)?"
    ),
    "cluster.anchor": lambda v: {
        "random": "Does the top-centroid cluster matter (vs a cluster drawn at random)?",
        "threshold": "Does clustering matter (vs the most salient pixels by a threshold)?",
        "top": "Does the anchor rule matter (vs the top-centroid cluster)?",
    }[v],
    "cluster.method": lambda v: f"Does the clustering algorithm matter (vs {v})?",
    "pairs.area": lambda v: f"Does the patch size matter (vs areas {v[0]:g}-{v[1]:g} of the image)?",
}


def variant_question(method: str, overrides: Mapping[str, Any]) -> str:
    """The question a method against its variant asks, in words."""
    parts = []
    for key, value in overrides.items():
        claim = CLAIMS.get(key)
        parts.append(claim(value) if claim else f"Does {key} matter for {method} (vs {value})?")
    return " ".join(parts) if len(parts) == 1 else f"{method} vs {len(parts)} changes: " + " ".join(parts)


def control_question(name: str) -> str:
    """The question a variant against its random-swap control asks."""
    return f"Does saliency guidance help under {name}'s settings (the same swaps at random locations)?"


def ablation_questions(
    variants: Mapping[str, tuple[str, Mapping[str, Any], str | None]],
) -> dict[tuple[str, str], tuple[str, str]]:
    """``(a, b) -> ("ablation", question)`` for every variant (module docstring), in declaration order."""
    asked: dict[tuple[str, str], tuple[str, str]] = {}
    for name, (method, overrides, control) in variants.items():
        asked[(method, name)] = ("ablation", variant_question(method, overrides))
        if control is not None:
            asked[(name, control)] = ("ablation", control_question(name))
    return asked
