"""What a worker must share with the flow to write stores under the flow's keys, and which GPU it uses.

A store's key names the code that made it (``CODE_VERSIONS``); a worker running other code would write
numbers under a key that names code that did not run. So on connecting to any pool, every worker's
``code_fingerprint`` is compared with the flow's and the run is refused, naming the workers that differ::

    {"cutswap": "0.1.0", "code": "<sha256 of the cutswap package's .py files, 16 hex>",
     "stages": {"ingest": "1", ...}, "torch": "2.14.1", "zarr": "3.1.6"}

GPU pinning (``worker_gpu``): a worker that sees one device uses it. A worker that sees several claims the
first of them, in its own order, that no other process of the host holds (``claim_gpu``: an exclusive
lock file per GPU in ``/tmp``, named by the GPU's UUID). That one rule is right for every way workers
start: a ``dask cuda worker`` gives each worker every GPU of the host in a rotated order, its own first,
which is free; SLURM gives every worker of a ``--gres=gpu:4`` job ``CUDA_VISIBLE_DEVICES=0,1,2,3``, and
the job's workers take one each; two jobs on one node that both see ``0,1`` see their own GPUs (device
cgroups renumber them) or the same ones, and the UUIDs tell which, where indices cannot; CLI workers
started with ``--resources GPU=1`` and a local pool's workers see every GPU of the host. The kernel drops
a claim when its worker dies, so a restarted worker takes its GPU back.
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


def claim_gpu(gpus: list[str], folder: Path = GPU_CLAIMS) -> int | None:
    """The position in ``gpus`` (this process's visible devices, by UUID, in its own order) of the first
    GPU no other process of this host holds, held by this process until it exits.

    Returns the same position on every call of one process; None when all are held (or the claims
    folder cannot be used), in which case the caller keeps torch's default device.
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
    for index, uuid in enumerate(gpus):
        fd = _open_claim(folder / f"{_file_name(uuid)}.lock")
        if fd is None:  # another user's claim file, not writable for us: that GPU is theirs
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {os.environ.get('SLURM_JOB_ID', '')}\n".encode())
        _CLAIMED = (index, fd)  # the fd stays open: the claim lasts as long as this process
        return index
    return None


def _open_claim(path: Path) -> int | None:
    """The claim file, opened for writing: an existing one without ``O_CREAT`` (Linux's
    ``fs.protected_regular`` refuses ``O_CREAT`` on another user's file in a sticky folder such as this,
    even one every user may write), else created, readable and writable by every user's workers."""
    for flags in (os.O_RDWR, os.O_RDWR | os.O_CREAT | os.O_EXCL, os.O_RDWR):
        try:
            fd = os.open(path, flags, 0o666)
        except (FileNotFoundError, FileExistsError):  # created, or removed, meanwhile: try the next way
            continue
        except OSError:
            return None
        if flags & os.O_CREAT:
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666)
        return fd
    return None


def _file_name(uuid: str) -> str:
    """``GPU-8f3c...`` as a file name (UUIDs are hex and dashes; anything else is replaced)."""
    return "gpu-" + "".join(c if c.isalnum() or c == "-" else "_" for c in uuid)


def visible_gpus() -> list[str]:
    """The UUIDs of the CUDA devices this process sees, in torch's order (``cuda:0`` first)."""
    import torch

    return [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]


_CLAIMED: tuple[int, int] | None = None


def worker_gpu() -> int | None:
    """The CUDA device index a Dask worker's jobs use; None without CUDA (see the module docstring).

    One visible device: 0. Several: the first this worker claims on its host; when every one is claimed,
    None (torch's default device), with a warning.
    """
    import torch

    if not torch.cuda.is_available():
        return None
    gpus = visible_gpus()
    if len(gpus) == 1:
        return 0
    index = claim_gpu(gpus)
    if index is None:
        log.warning(
            "all %d GPUs this worker sees (CUDA_VISIBLE_DEVICES=%s) are claimed by other workers of the "
            "host (%s): this worker's jobs share cuda:0; start one worker per GPU, or ask SLURM for as many "
            "GPUs per job as workers per job (parallel.slurm.gpus)",
            len(gpus),
            os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
            GPU_CLAIMS,
        )
    return index
