"""What a run needs from the machine, checked before Prefect, Dask or torch start.

The settings model (``cutswap.pipeline.settings``) checks values against each other; this checks them
against the world: the roots can be written, the Dask scheduler named in ``parallel.address`` answers,
SLURM (``parallel.slurm``) answers and has the partition and walltime asked for, and the ImageNet weights
of every trunk the run needs are at hand. Each of these otherwise fails minutes into the run, inside a
worker, as a traceback.

Light on purpose (no torch import): ``cutswap run`` calls it on every start and must answer in about a
second.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from cutswap import roots
from cutswap.errors import CutswapError, SettingsError
from cutswap.method.registry import UNTRAINED_METHODS
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.variants import run_rows

#: torchvision's file name for the ResNet-18 ``IMAGENET1K_V1`` weights (``cutswap.method.backbones``).
RESNET18_FILENAME = "resnet18-f37072fd.pth"


def check_environment(settings: Settings) -> None:
    """Raise ``SettingsError`` naming the setting and the fix for the first thing the run cannot have."""
    for name in ("storage_root", "reports_root"):
        root = getattr(settings, name)
        if roots.is_local(root):
            _check_writable(name, Path(root))
        else:
            _check_bucket(name, root)
    if settings.parallel.address is not None:
        _check_scheduler(settings.parallel.address)
    if (slurm := settings.parallel.slurm) is not None:
        from cutswap.pipeline.parallel.slurm import check_slurm, resolve_scheduler_host

        check_slurm(
            slurm.partition, slurm.account, slurm.walltime, slurm.cpus, slurm.memory, slurm.gpus, slurm.extra
        )
        resolve_scheduler_host(slurm.scheduler_host)
    for setting, weights, allow_download in _resnet18_needs(settings):
        _check_resnet18(setting, weights, allow_download)
    _check_tracking(settings)


#: How long a tracking server has to answer at the start.
TRACKER_TIMEOUT = 5.0


def _check_tracking(settings: Settings) -> None:
    """The trackers the run logs to are installed and answer (``cutswap.track``): a run must not log its
    trainings into nothing, nor fail after them."""
    tracking = settings.tracking
    install = "install the tracking extra: pip install -e '.[tracking]'"
    if tracking.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise SettingsError(f"tracking.tensorboard needs TensorBoard, which is not installed: {install}")
    uri = tracking.mlflow_uri
    if uri is None:
        return
    if importlib.util.find_spec("mlflow") is None:
        raise SettingsError(f"tracking.mlflow_uri needs MLflow, which is not installed: {install}")
    if uri.startswith("file:"):
        _check_writable("tracking.mlflow_uri", Path(urllib.parse.urlparse(uri).path))
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=TRACKER_TIMEOUT) as answer:  # noqa: S310 (http(s) only)
            ok = answer.status == 200
    except (OSError, ValueError) as exc:
        ok, reason = False, str(getattr(exc, "reason", exc))
    else:
        reason = "" if ok else f"HTTP {answer.status}"
    if not ok:
        raise SettingsError(
            f"tracking.mlflow_uri {uri}: no MLflow server answers at {health} ({reason}); start one "
            "(mlflow server --host 127.0.0.1 --port 5000) or leave tracking.mlflow_uri unset"
        )


def _check_writable(name: str, root: Path) -> None:
    """Create ``root`` if missing and write a file in it: a run writes there from its first stage."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise SettingsError(
            f"{name} {root}: cannot write there ({exc.strerror or exc}); choose a writable folder, "
            f"e.g. --set {name}={Path.home() / 'cutswap' / name.split('_')[0]}"
        ) from exc


def _check_bucket(name: str, root: str) -> None:
    """Write and delete a probe object: the endpoint answers, the bucket exists, the credentials work."""
    try:
        roots.check_reachable(root)
    except CutswapError as exc:
        raise SettingsError(
            f"{name} {exc}; check the bucket and this process's credentials and endpoint (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, or the GOOGLE_/AZURE_ equivalents)"
        ) from None


def _check_scheduler(address: str) -> None:
    """Open and close a TCP connection to the scheduler: the address answers, or the run does not start."""
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
    except OSError as exc:
        raise SettingsError(
            f"parallel.address {address}: no scheduler answers ({exc.strerror or exc}); start one "
            "(`dask scheduler --host HOST`) or unset parallel.address to run a local pool of workers"
        ) from exc


def _resnet18_needs(settings: Settings) -> list[tuple[str, Path | None, bool]]:
    """(setting, weights file, download allowed) for each use of ResNet-18's ImageNet weights, by the run's
    own rows or by any variant's (its settings named as ``variants.NAME: setting``)."""
    needs = _row_resnet18_needs(settings)
    for row in run_rows(settings):
        if row.overrides:
            where = f"variants.{row.control_of or row.name}: "
            needs += [
                (where + s, w, d) for s, w, d in _row_resnet18_needs(row.settings) if (s, w, d) not in needs
            ]
    return needs


def _row_resnet18_needs(settings: Settings) -> list[tuple[str, Path | None, bool]]:
    train, needs = settings.train, []
    if settings.saliency.backbone == "resnet18":
        needs.append(("saliency.backbone", settings.saliency.weights, settings.saliency.allow_download))
    trained = [m for m in train.methods if m not in UNTRAINED_METHODS]
    if trained and train.pretrained and train.trunk == "resnet18":
        needs.append(("train.trunk", train.weights, train.allow_download))
    if set(train.methods) & set(UNTRAINED_METHODS) and (train.baseline_trunk or train.trunk) == "resnet18":
        # train.weights is the classifiers' trunk's file; a different baseline trunk reads the cache.
        weights = train.weights if train.baseline_trunk in (None, train.trunk) else None
        needs.append(("train.baseline_trunk", weights, train.allow_download))
    return needs


def _hub_checkpoints() -> Path:
    """torch's hub cache folder (``torch.hub.get_dir() / "checkpoints"``), found the way torch finds it."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def _check_resnet18(setting: str, weights: Path | None, allow_download: bool) -> None:
    if weights is not None:
        if not Path(weights).expanduser().is_file():
            raise SettingsError(
                f"{setting} needs ResNet-18 weights, and the weights file {weights} does not exist"
            )
        return
    if allow_download or (_hub_checkpoints() / RESNET18_FILENAME).is_file():
        return
    fix = (
        "set train.baseline_trunk=efficientnet_lite0 (its weights ship in a package)"
        if setting.endswith("train.baseline_trunk")
        else f"set {setting}=efficientnet_lite0"
        if setting.endswith("saliency.backbone")
        else "set train.pretrained=false or train.trunk=efficientnet_lite0"
    )
    raise SettingsError(
        f"{setting} needs ResNet-18's ImageNet weights, which are not at hand: {RESNET18_FILENAME} is not in "
        f"{_hub_checkpoints()} and download is not allowed. Put the file there, pass its path as weights=, "
        f"allow the download, or {fix}"
    )
