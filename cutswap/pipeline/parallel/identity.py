"""What a worker must share with the flow to write stores under the flow's keys, and which GPU it uses.

A store's key names the code that made it (``CODE_VERSIONS``); a worker running other code would write
numbers under a key that names code that did not run. So on connecting to any pool, every worker's
``code_fingerprint`` is compared with the flow's and the run is refused, naming the workers that differ::

    {"cutswap": "0.1.0", "code": "<sha256 of the cutswap package's .py files, 16 hex>",
     "stages": {"ingest": "1", ...}, "torch": "2.14.1", "zarr": "3.1.6"}

GPU pinning (``worker_gpu``): a worker started with ``CUDA_VISIBLE_DEVICES`` uses the first device it
names, which is the worker's own: one CLI worker per GPU started with ``CUDA_VISIBLE_DEVICES=i``, or a
``dask cuda worker``, which gives each worker every GPU of the host in a rotated order, its own first.
A worker without it that sees several GPUs (CLI workers started with ``--resources GPU=1``, one per
GPU, and a local pool's workers) claims the first GPU no other process of the host holds
(``claim_gpu``: an exclusive lock file per GPU in ``/tmp``); the kernel drops the claim when the worker
dies, so a restarted worker takes its GPU back.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@functools.cache
def code_fingerprint() -> dict[str, Any]:
    """This process's cutswap version, code hash, stage code versions, torch and zarr versions."""
    import importlib.metadata as md

    import cutswap
    from cutswap.pipeline.stores.keys import CODE_VERSIONS

    package = Path(cutswap.__file__).parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    versions = {}
    for dist in ("cutswap", "torch", "zarr"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return {**versions, "code": h.hexdigest()[:16], "stages": dict(CODE_VERSIONS)}


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, in words (``torch 2.14.1 here, 2.9.1 there``)."""
    out = []
    for field in ("cutswap", "torch", "zarr", "code"):
        if ours.get(field) != theirs.get(field):
            out.append(f"{field} {ours.get(field)} here, {theirs.get(field)} there")
    stages = ours.get("stages", {})
    for stage, version in sorted((theirs.get("stages") or {}).items()):
        if stages.get(stage) != version:
            out.append(f"stage {stage} code version {stages.get(stage)} here, {version} there")
    return out


#: Where workers of one host claim GPUs (host-wide on purpose: each worker may have its own TMPDIR).
GPU_CLAIMS = Path("/tmp/cutswap-gpu-claims")


def claim_gpu(count: int, folder: Path = GPU_CLAIMS) -> int | None:
    """The index of a GPU no other process of this host holds, held by this process until it exits.

    Returns the same index on every call of one process; None when all ``count`` are held (or the
    claims folder cannot be used), in which case the caller keeps torch's default device.
    """
    global _CLAIMED
    if _CLAIMED is not None:
        return _CLAIMED[0]
    import fcntl

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # shared by every user's workers; the umask would narrow it
            folder.chmod(0o1777)
    except OSError:
        return None
    for index in range(count):
        try:
            fd = os.open(folder / f"gpu-{index}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666)
        except OSError:  # another user's claim file, not writable for us: that GPU is theirs
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _CLAIMED = (index, fd)  # the fd stays open: the claim lasts as long as this process
        return index
    return None


_CLAIMED: tuple[int, int] | None = None


def worker_gpu() -> int | None:
    """The CUDA device index a Dask worker's jobs use; None without CUDA (see the module docstring).

    ``CUDA_VISIBLE_DEVICES`` set, or one visible device: 0. Otherwise the GPU the worker claims on its
    host; when every GPU is claimed, None (torch's default device), with a warning.
    """
    import torch

    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    if count == 1 or os.environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return 0
    index = claim_gpu(count)
    if index is None:
        log.warning(
            "all %d GPUs of this host are claimed by other workers (%s): this worker's jobs share cuda:0; "
            "start one worker per GPU, or give each its CUDA_VISIBLE_DEVICES",
            count,
            GPU_CLAIMS,
        )
    return index
