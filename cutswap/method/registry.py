"""The method registry: every training method, what negatives it makes, and where its swaps come from.

Read by the settings (the allowed ``train.methods``), the flow (which jobs need the pairs store), the train
stage (which bank a method gets, which methods train at all), the negative sampler (which negatives, in
which class order) and the report (which rows are baselines). Adding a method is one entry here.

A method's classes are ``0 = normal`` followed by one class per negative kind, in ``kinds`` order::

    swap       two patches of one image exchanged (a pair bank's draw; ``bank`` says which bank)
    cutpaste   CutPaste's rectangle, cut and pasted elsewhere in the same image
    scar       CutPaste-Scar's thin rotated stripe
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

NegativeKind = Literal["swap", "cutpaste", "scar"]


@dataclass(frozen=True)
class Method:
    """One training method.

    Attributes:
        name: as written in ``train.methods`` and in every table.
        kinds: negative kinds in class order (class 0 is normal); empty for a method that trains nothing.
        bank: where ``swap`` negatives come from: ``saliency`` (the pairs stage's bank) or ``random``
            (CutSwap's patch sizes at uniformly random places, the control); None without swaps.
        trains: False for the no-training baselines (a frozen ImageNet trunk), which are the same for
            every seed and so run once per category.
        scorer: how the evaluation scores images: ``gde`` (a Gaussian density of the pooled trunk
            embedding, CutPaste's, ``cutswap.score.density``) or ``patchcore`` (nearest-neighbour distances
            of mid-level patch features to a coreset memory bank, ``cutswap.score.patchcore``).
    """

    name: str
    kinds: tuple[NegativeKind, ...]
    bank: Literal["saliency", "random"] | None = None
    trains: bool = True
    scorer: Literal["gde", "patchcore"] = "gde"

    @property
    def num_classes(self) -> int:
        """Classifier outputs: normal plus one per negative kind (2 binary, 3 for 3-way)."""
        return 1 + len(self.kinds)

    @property
    def needs_pairs(self) -> bool:
        """Whether the method reads the pairs store (the random control copies its patch sizes)."""
        return self.bank is not None


REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method("cutswap", ("swap",), bank="saliency"),
        Method("cutswap-3way", ("swap", "scar"), bank="saliency"),
        Method("cutpaste", ("cutpaste",)),
        Method("cutpaste-scar", ("scar",)),
        Method("cutpaste-3way", ("cutpaste", "scar")),
        Method("random-swap", ("swap",), bank="random"),
        Method("imagenet-gde", (), trains=False),
        Method("patchcore", (), trains=False, scorer="patchcore"),
    )
}
#: Method names, in table order.
METHODS = tuple(REGISTRY)
#: Methods that train nothing: run for the first seed, paired with every seed of a trained method.
UNTRAINED_METHODS = tuple(m.name for m in REGISTRY.values() if not m.trains)
#: Methods whose swaps come from the saliency pair bank (the pairs stage).
SALIENCY_BANK_METHODS = tuple(m.name for m in REGISTRY.values() if m.bank == "saliency")
#: Methods whose swaps come from a random bank with the same patch sizes (built by the train stage).
RANDOM_BANK_METHODS = tuple(m.name for m in REGISTRY.values() if m.bank == "random")
#: Methods that need a bank.
SWAP_METHODS = SALIENCY_BANK_METHODS + RANDOM_BANK_METHODS


def get_method(name: str) -> Method:
    """The registry entry of a method.

    Raises:
        ValueError: an unknown method; the message lists the known ones.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; methods are {list(REGISTRY)}") from None


def method_kinds(name: str) -> tuple[NegativeKind, ...]:
    """The negative kinds of a method, in class order."""
    return get_method(name).kinds


def num_classes(name: str) -> int:
    """Classifier outputs for a method (``Method.num_classes``)."""
    return get_method(name).num_classes


def method_seeds(name: str, seeds: list[int]) -> list[int]:
    """The seeds a method runs for: all of them, or the first only for a method that trains nothing."""
    return list(seeds) if get_method(name).trains else list(seeds[:1])
