"""Variants: named rows of a run that are a registered method run under other settings of its stages.

A preset declares them beside ``train.methods``::

    variants:
      cutswap-level4: {method: cutswap, set: {saliency.levels: [level4]}}
      cutswap-kmeans: {method: cutswap, set: {cluster.method: kmeans}}
      cutswap-small:  {method: cutswap, set: {pairs.area: [0.01, 0.05]}, control: true}

A variant is a row everywhere a method is (``results.csv``'s ``method`` column holds the row's name, and
``base_method`` the registered method it runs). Its stores are keyed by its own settings, so a store that
two rows share (the saliency maps of ``cutswap-kmeans`` and ``cutswap``; the pairs of two variants that
differ only in training) is computed once. Each variant is compared with its method's own row, and, when
it changes where swaps come from and ``control`` is not false, with a **control**: the random-swap method
under the same settings (``<variant>-random-swap``), whose patch sizes are copied from the variant's own
pair bank, so "saliency beats random places" is asked again under the variant's settings.

What a variant may set (:func:`feeds`): the settings of the stages that feed its method and change what they
compute. Swap methods read the pairs store, so every saliency, cluster and pairs setting feeds them;
CutPaste draws its rectangles from ``pairs.area`` and ``pairs.aspect`` only; every trained method reads
the train and evaluate sections. Execution knobs (batch sizes of the precompute stages and the
evaluation, the device, precision, logs) never change a store and are refused, as are the run-wide
``train.methods`` and ``train.seeds``. Methods that train nothing have no variants: a variant asks what a
choice of the *method* changes, and their only settings are the evaluation's.

Settings come in through :class:`cutswap.pipeline.settings.Settings` (which calls :func:`check_variants`);
the flow and the report read :func:`run_rows`. Overrides are applied by :func:`set_dotted`, as the command
line's ``--set`` is.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from cutswap.errors import SettingsError
from cutswap.method.registry import METHODS, RANDOM_BANK_METHODS, REGISTRY, get_method

#: A ``cutswap.pipeline.settings.Settings``: that module validates variants through this one, so this one
#: does not import it (``tests/test_layers.py``: no import circles) and builds variants' settings with the
#: class of the settings it is given.
Settings: TypeAlias = Any

#: Sections a variant may set; the rest of the settings are the run's (data, roots, pool).
STAGE_SECTIONS = ("saliency", "cluster", "pairs", "train", "evaluate")
#: Settings of those sections that never change a store (``cutswap.pipeline.stages`` leave them out of
#: every key) or belong to the whole run.
NOT_PER_VARIANT = {
    "saliency": {"batch_size", "weights", "allow_download"},
    "cluster": set(),
    "pairs": set(),
    "train": {
        "methods",
        "seeds",
        "device",
        "amp",
        "channels_last",
        "log_every",
        "checkpoint_every",
        "weights",
        "allow_download",
        "baseline_trunk",
        "max_days",
        "nproc",
    },
    "evaluate": {"batch_size", "patch_batch_size", "coreset_fraction"},
}
#: The suffix of a variant's control row.
CONTROL_SUFFIX = "-random-swap"


def feeds(method: str, setting: str) -> bool:
    """Whether ``section.field`` changes what ``method`` computes (module docstring)."""
    section, _, name = setting.partition(".")
    spec = get_method(method)
    if section in ("saliency", "cluster"):
        return spec.needs_pairs
    if section == "pairs":
        return spec.needs_pairs or ("cutpaste" in spec.kinds and name in ("area", "aspect"))
    if section == "train" and name == "swaps":
        return "swap" in spec.kinds
    return section in ("train", "evaluate")


def control_method(method: str) -> str | None:
    """The random-bank method with the negative kinds of ``method``, a saliency-guided method
    (random-swap for cutswap); None for any other method, random-swap included (it would control itself)."""
    spec = get_method(method)
    if spec.bank != "saliency":
        return None
    return next((m for m in RANDOM_BANK_METHODS if get_method(m).kinds == spec.kinds), None)


def has_control(method: str, overrides: dict[str, Any], control: bool | None) -> bool:
    """Whether a variant gets a control row: when asked (``control: true``), or by default (None) when it
    changes where a saliency-bank method's swaps come from and the method has a random counterpart."""
    if control_method(method) is None:
        return False
    if control is not None:
        return control
    return get_method(method).bank == "saliency" and any(
        k.split(".")[0] in ("saliency", "cluster", "pairs") for k in overrides
    )


@dataclass(frozen=True)
class Row:
    """One row of a run: a registered method, under the run's settings or a variant's.

    Attributes:
        name: the row's name in every table (the method's own name, a variant's, or a control's).
        method: the registered method it runs (``cutswap.method.registry``).
        settings: the settings its stores are computed under (the run's, with the variant's overrides
            and ``variants`` emptied).
        overrides: the variant's dotted settings (empty for a method's own row).
        control_of: for a control row, the variant it controls.
    """

    name: str
    method: str
    settings: Settings
    overrides: dict[str, Any] = field(default_factory=dict)
    control_of: str | None = None

    @property
    def is_variant(self) -> bool:
        """A variant's own row (not a method's, not a control's)."""
        return bool(self.overrides) and self.control_of is None


def variant_specs(settings: Settings) -> dict[str, tuple[str, dict[str, Any], str | None]]:
    """Each variant as plain data for the report (``cutswap.report.ablations``): its method, its overrides
    and its control row's name (None without one)."""
    rows = run_rows(settings)
    controls = {r.control_of: r.name for r in rows if r.control_of}
    return {r.name: (r.method, r.overrides, controls.get(r.name)) for r in rows if r.is_variant}


def variant_settings(settings: Settings, method: str, overrides: dict[str, Any]) -> Settings:
    """The run's settings with a variant's overrides applied, its method as the only one, no variants.

    Raises:
        pydantic.ValidationError: an override's value is invalid (the caller names the variant).
    """
    data = settings.model_dump(mode="json", exclude={"variants"})
    for key, value in overrides.items():
        set_dotted(data, key, value)
    data["train"]["methods"] = [method]
    return type(settings).model_validate(data)


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, making the sections on the way.

    Raises:
        SettingsError: a part of the path holds a value, not a section.
    """
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SettingsError(f"override {dotted!r}: {part!r} is not a section")
    node[leaf] = value


def run_rows(settings: Settings) -> list[Row]:
    """Every row of a run: each method of ``train.methods`` under the run's settings, then each variant
    and, where it has one, its control (module docstring)."""
    base = settings.model_copy(update={"variants": {}})
    rows = [Row(m, m, base) for m in settings.train.methods]
    for name, variant in settings.variants.items():
        overrides = dict(variant.set)
        own = variant_settings(settings, variant.method, overrides)
        rows.append(Row(name, variant.method, own, overrides))
        if has_control(variant.method, overrides, variant.control):
            control = control_method(variant.method)
            ctrl = variant_settings(settings, control, overrides)
            rows.append(Row(name + CONTROL_SUFFIX, control, ctrl, overrides, control_of=name))
    return rows


def precomputed_chains(settings: Settings) -> int:
    """The saliency, cluster and pairs stores one category of the run needs: the run's own chain, plus
    those of rows that read a pair bank under other settings (each distinct store once)."""
    stages = ("saliency", "cluster", "pairs")
    chains = {tuple(getattr(settings, s).model_dump_json() for s in stages)}
    for row in run_rows(settings):
        if get_method(row.method).needs_pairs:
            chains.add(tuple(getattr(row.settings, s).model_dump_json() for s in stages))
    return len({chain[: i + 1] for chain in chains for i in range(len(stages))})


def check_variants(settings: Settings, problems: Callable[[Exception], str]) -> None:
    """Refuse a variant that cannot be run as written; each message names the variant and the fix.
    ``problems``: a pydantic validation error on one line (the settings module's wording).

    Raises:
        ValueError: an unknown method, a method that trains nothing or is not among ``train.methods``,
            a name that collides with a method or another row, an unknown setting, one of another stage
            than those that feed the method, an execution knob or run-wide setting, an invalid value, a
            value equal to the run's, a control the method has none of, or two rows alike.
    """
    names = set(METHODS)
    for name, variant in settings.variants.items():
        where = f"variants.{name}"
        _check_name(where, name, names)
        _check_method(where, variant.method, settings.train.methods)
        if not variant.set:
            raise ValueError(
                f"{where}: set is empty; give the settings the variant changes, e.g. "
                "set: {cluster.method: kmeans}"
            )
        for key in variant.set:
            _check_setting(where, variant.method, key, type(settings).model_fields)
        _check_values(where, settings, variant.method, dict(variant.set), problems)
        if variant.control and control_method(variant.method) is None:
            raise ValueError(
                f"{where}: {variant.method} has no random-places counterpart to control it with; "
                "remove control"
            )
        names.add(name)
        if has_control(variant.method, dict(variant.set), variant.control):
            names.add(name + CONTROL_SUFFIX)
    _check_distinct(settings)


def _check_distinct(settings: Settings) -> None:
    """No two rows run one method under the same stage settings (they would be one row under two names)."""
    seen: dict[str, str] = {}
    for row in run_rows(settings):
        sections = {s: getattr(row.settings, s).model_dump(mode="json") for s in STAGE_SECTIONS}
        sections["train"].pop("methods")
        same = f"{row.method} {sections}"
        if same in seen:
            variant = row.control_of or row.name
            raise ValueError(
                f"variants.{variant}: row {row.name} runs {row.method} with the same settings as row "
                f"{seen[same]}; change or remove the variant"
            )
        seen[same] = row.name


def _check_values(
    where: str,
    settings: Settings,
    method: str,
    overrides: dict[str, Any],
    problems: Callable[[Exception], str],
) -> None:
    """Each override is valid where it lands and differs from the run's own value."""
    from pydantic import ValidationError

    try:
        own = variant_settings(settings, method, overrides)
    except ValidationError as exc:
        raise ValueError(f"{where}: {problems(exc)}") from None
    for key in overrides:
        if _value(own, key) == _value(settings, key):
            raise ValueError(
                f"{where}: {key} is {_value(settings, key)!r} in this run already, so the variant would "
                "repeat its method's row; give another value or leave the setting out"
            )


def _check_name(where: str, name: str, taken: set[str]) -> None:
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"{where}: a variant's name is a row name: letters, digits, - and _ only")
    if name in taken or name + CONTROL_SUFFIX in taken:
        clash = "a method" if name in REGISTRY else "another row"
        raise ValueError(f"{where}: the name is taken by {clash}; rename the variant")


def _check_method(where: str, method: str, methods: list[str]) -> None:
    if method not in REGISTRY:
        close = difflib.get_close_matches(method, METHODS, n=1)
        hint = f"did you mean {close[0]}?" if close else f"methods are {', '.join(METHODS)}"
        raise ValueError(f"{where}: unknown method {method!r}; {hint}")
    if not get_method(method).trains:
        raise ValueError(
            f"{where}: {method} trains nothing, so it has no variants; vary the evaluation for the whole "
            "run instead (--set evaluate...)"
        )
    if method not in methods:
        raise ValueError(
            f"{where}: {method} is not in train.methods, whose row the variant is compared with; add it"
        )


def _check_setting(where: str, method: str, key: str, sections: dict[str, Any]) -> None:
    section, _, name = key.partition(".")
    if section not in STAGE_SECTIONS or not name or "." in name:
        raise ValueError(
            f"{where}: {key!r} is not a stage setting; a variant sets section.name in "
            f"{', '.join(STAGE_SECTIONS)}"
        )
    fields = sections[section].annotation.model_fields
    top = name.split(".")[0]
    if top not in fields:
        close = difflib.get_close_matches(top, list(fields), n=1)
        hint = f"did you mean {section}.{close[0]}?" if close else f"{section} has {', '.join(fields)}"
        raise ValueError(f"{where}: unknown setting {key}; {hint}")
    if top in NOT_PER_VARIANT[section]:
        raise ValueError(
            f"{where}: {key} is set for the whole run (it changes how the run executes, or which rows it "
            "has, not what a method computes); remove it from the variant"
        )
    if not feeds(method, key):
        raise ValueError(
            f"{where}: {key} does not feed {method} (its stages never read it); remove it, or make the "
            "variant of a method that reads it"
        )


def _value(settings: Settings, key: str) -> Any:
    """A dotted setting's validated value (as JSON writes it, so a tuple equals a list)."""
    node: Any = settings.model_dump(mode="json")
    for part in key.split("."):
        node = node[part]
    return node
