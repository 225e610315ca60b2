"""Typed benchmark settings, loaded from a YAML preset plus dotted overrides.

A preset (``configs/*.yaml``) mirrors :class:`Settings`::

    run: demo                      # report folder name under reports_root
    storage_root: storage
    reports_root: reports
    dataset: {name: textures, root: null, categories: null, image_size: 128}
    saliency: {backbone: auto, weights: null, levels: [level1, level2, level3, level4], batch_size: 16}
    cluster: {method: fcm, k: 3, m: 2.0, bins: 1024}
    pairs: {draws: 64, area: [0.02, 0.15], aspect: [0.3, 3.3], max_tries: 20, seed: 0}
    train: {methods: [cutswap, cutpaste, random-swap], seeds: [0], steps: 200, ...}
    evaluate: {batch_size: 64}

Each stage hashes only its own section (plus the sections it depends on through its inputs' keys), so
changing ``train.steps`` recomputes training and what follows, never saliency.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cutswap.errors import SettingsError

METHODS = ("cutswap", "cutpaste", "random-swap")
LEVELS = ("level1", "level2", "level3", "level4")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSettings(_Section):
    """Which images, at which working size.

    ``name`` picks the layout reader; ``textures`` is the embedded dataset the project builds itself.
    """

    name: Literal["textures", "mvtec"] = "textures"
    root: Path | None = None
    categories: list[str] | None = None
    image_size: int = Field(256, ge=32, le=1024)
    textures_seed: int = 0


class SaliencySettings(_Section):
    """Frozen ImageNet backbone and the LayerCAM levels taken from it."""

    backbone: Literal["auto", "resnet18", "efficientnet_lite0"] = "auto"
    weights: Path | None = None
    allow_download: bool = False
    levels: list[str] = Field(default_factory=lambda: list(LEVELS))
    target_class: int | None = None
    shallow_tanh: bool = False
    batch_size: int = Field(16, ge=1)

    @field_validator("levels")
    @classmethod
    def _known_levels(cls, levels: list[str]) -> list[str]:
        unknown = sorted(set(levels) - set(LEVELS))
        if unknown or not levels:
            raise ValueError(f"levels must be a non-empty subset of {list(LEVELS)}, got {levels}")
        return levels


class ClusterSettings(_Section):
    """Clustering of each map's pixel values; the top cluster anchors the patch pairs."""

    method: Literal["fcm", "kmeans"] = "fcm"
    k: int = Field(3, ge=2, le=16)
    m: float = Field(2.0, gt=1.0)
    bins: int | None = Field(1024, ge=16)
    max_iter: int = Field(100, ge=1)
    tol: float = Field(1e-5, gt=0)


class PairSettings(_Section):
    """Bank of patch-pair draws per map; training samples from it."""

    draws: int = Field(64, ge=1)
    area: tuple[float, float] = (0.02, 0.15)
    aspect: tuple[float, float] = (0.3, 3.3)
    max_tries: int = Field(20, ge=1)
    seed: int = 0

    @field_validator("area", "aspect")
    @classmethod
    def _ordered(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if not 0 < bounds[0] <= bounds[1]:
            raise ValueError(f"must be (low, high) with 0 < low <= high, got {bounds}")
        return bounds

    @field_validator("area")
    @classmethod
    def _two_patches_fit(cls, area: tuple[float, float]) -> tuple[float, float]:
        if area[1] > 0.25:
            raise ValueError(
                f"area fractions above 0.25 cannot always fit two non-overlapping patches, got {area}"
            )
        return area


class TrainSettings(_Section):
    """Classifier training (METHOD.md defaults, CutPaste's optimiser)."""

    methods: list[Literal["cutswap", "cutpaste", "random-swap"]] = Field(
        default_factory=lambda: list(METHODS)
    )
    seeds: list[int] = Field(default_factory=lambda: [0])
    steps: int = Field(256, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 3e-5
    pretrained: bool = False
    head_dims: list[int] = Field(default_factory=lambda: [512, 128])
    device: str = "auto"
    log_every: int = Field(10, ge=1)


class EvaluateSettings(_Section):
    """Scoring of test images with a Gaussian density fitted on normal training embeddings."""

    batch_size: int = Field(64, ge=1)


class Settings(_Section):
    """Everything a benchmark run depends on."""

    run: str = "default"
    storage_root: Path = Path("storage")
    reports_root: Path = Path("reports")
    dataset: DatasetSettings = DatasetSettings()
    saliency: SaliencySettings = SaliencySettings()
    cluster: ClusterSettings = ClusterSettings()
    pairs: PairSettings = PairSettings()
    train: TrainSettings = TrainSettings()
    evaluate: EvaluateSettings = EvaluateSettings()

    @field_validator("run")
    @classmethod
    def _safe_run_name(cls, run: str) -> str:
        if not run or not all(c.isalnum() or c in "-_." for c in run) or run.startswith("."):
            raise ValueError(f"run must be a plain folder name (letters, digits, - _ .), got {run!r}")
        return run


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SettingsError(f"override {dotted!r}: {part!r} is not a section")
    node[leaf] = value


def load_settings(preset: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read a YAML preset and apply dotted overrides (``{"train.steps": 50}``).

    Override values given as strings are parsed as YAML, so ``train.seeds=[0,1]`` from a command line
    becomes a list.

    Raises:
        SettingsError: the preset is missing or unparsable, or a setting is unknown or invalid; the
            message names the file and the setting.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if preset is not None:
        path = Path(preset)
        if not path.is_file():
            raise SettingsError(
                f"preset {path} does not exist; pass a file from configs/ or a path to a YAML file"
            )
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"preset {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"preset {path} must hold a mapping of sections, got {type(data).__name__}")
        source = str(path)
    for key, value in (overrides or {}).items():
        if isinstance(value, str):
            with contextlib.suppress(yaml.YAMLError):
                value = yaml.safe_load(value)
        _set_dotted(data, key, value)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise SettingsError(f"invalid settings from {source}: {problems}") from exc
