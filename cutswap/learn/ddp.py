"""Data-parallel training over several processes (DDP), launched with torchrun as a subprocess.

The train stage calls :func:`launch` when ``train.nproc > 1``. It writes a job into the run's work
directory and starts::

    python -m torch.distributed.run --standalone --nproc_per_node=N -m cutswap.learn.ddp <work>/job.json

Each rank runs :func:`main`: it joins the process group (nccl on CUDA, one device per rank by
``LOCAL_RANK``; gloo on the CPU), trains with :func:`cutswap.learn.loop.train_classifier` (which wraps the
model in DDP and gives every rank an equal slice of every class of the step's batch), and rank 0 writes
the model checkpoint into the store directory and a result file. Results come back through files, not
return values; the subprocess isolates CUDA state from the calling process (a Prefect task, possibly a
Dask worker, where ``torch.multiprocessing.spawn`` is not allowed).

Work directory layout (shared with the single-process path, see ``cutswap.pipeline.stages.train``)::

    job.json      {"method", "seed", "model": ModelSpec, "recipe": Recipe, "execution": Execution (resolved
                   by the caller; each rank takes its own GPU of it), "swaps", "area", "aspect",
                   "identity", "images": "images.npy", "bank": "bank.npy" | null,
                   "checkpoint": "resume.pt" (or the URL of an object), "out": <store>/checkpoint.pt,
                   "result": "result.json"}
    images.npy    uint8 (N, H, W, 3) normal training images
    bank.npy      int32 (N, L, D, 6) pair bank, for the swap methods
    resume.pt     the resumable checkpoint, written by rank 0 every ``checkpoint_every`` steps; under a URL
                  storage root it is an object of the work prefix instead, read by every rank at the start
                  and replaced by rank 0 at each checkpoint with one PUT (``cutswap.learn.checkpoint.save``),
                  so a SIGKILL of the whole job, or of the host, keeps the last checkpoint
    result.json   {"log": [...], "seconds", "images_per_s", "resumed_from", "parts", "oom_retries", "amp",
                   "channels_last", "num_classes", "world_size", "trunk": {name, pretrained, sha256}}

Rank 0 prints one line per log entry, ``PROGRESS_PREFIX`` followed by the entry as JSON; :func:`launch`
turns those into ``progress`` calls and hands every other line (torchrun's own, warnings, tracebacks) to
``log_line``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

import cutswap
from cutswap.atomic import write_text
from cutswap.errors import CutswapError
from cutswap.learn.execution import Execution
from cutswap.learn.loop import ModelSpec, Recipe

PROGRESS_PREFIX = "@cutswap-progress "
_CAUSE = re.compile(r"^(\[rank\d+\]:\s*)?[\w.]*(Error|Exception|Interrupt)\b[^:]*: ")


class DistributedTrainingError(CutswapError):
    """A DDP training run exited with an error; the message carries its last output lines."""


def command(nproc: int, job: Path) -> list[str]:
    """The torchrun command line of a job."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "cutswap.learn.ddp",
        str(job),
    ]


def launch(
    job: dict[str, Any],
    nproc: int,
    work: Path,
    out: Path,
    progress: Callable[[dict[str, float]], None] | None = None,
    log_line: Callable[[str], None] | None = None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Run one training job over ``nproc`` processes and wait for it.

    Args:
        job: ``cutswap.learn.loop.train_classifier``'s arguments (``images``, ``method``, ``model``,
            ``recipe``, ``execution``, ``seed``, ``bank``, ``swaps``, ``area``, ``aspect``, ``identity``).
        nproc: processes, one GPU each on CUDA.
        work: the run's work directory (job files, resumable checkpoint).
        out: where rank 0 writes the model checkpoint (``cutswap.learn.checkpoint.model_payload``), normally
            in the store directory.
        progress: called with each log entry, in order.
        log_line: called with every other output line of the ranks and of torchrun.
        checkpoint: the URL of the resumable state (an object the ranks read and rank 0 replaces at
            every checkpoint); None keeps it in ``work`` as ``resume.pt``.

    Returns:
        The result file's content (log entries and run statistics).

    Raises:
        DistributedTrainingError: the job exited non-zero or wrote no result.
    """
    _check_devices(job["execution"], nproc)
    result_path = _write_job(job, work, out, checkpoint or "resume.pt")
    output = _Output(progress, log_line)
    with subprocess.Popen(
        command(nproc, work / "job.json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=_rank_environment(nproc),
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            output.line(raw.rstrip("\n"))
        code = proc.wait()
    if code != 0 or not result_path.is_file():
        raise output.failure(job, nproc, checkpoint or str(work / "resume.pt"), code)
    return json.loads(result_path.read_text())


def _check_devices(execution: Execution, nproc: int) -> None:
    """On CUDA every rank needs its own device: fail before writing the job rather than in the ranks."""
    import torch

    if execution.device.type == "cuda" and torch.cuda.device_count() < nproc:
        raise DistributedTrainingError(
            f"train.nproc={nproc} needs one CUDA device per process, found "
            f"{torch.cuda.device_count()}; lower train.nproc"
        )


def _write_job(job: dict[str, Any], work: Path, out: Path, checkpoint: str) -> Path:
    """Writes the job's arrays and ``job.json`` into ``work`` (module docstring) and removes a previous
    result file, so that only this run's result can be read back. Returns the result file's path."""
    execution: Execution = job["execution"]
    bank = job["bank"]
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "images.npy", np.ascontiguousarray(job["images"]))
    if bank is not None:
        np.save(work / "bank.npy", np.asarray(bank))
    result_path = work / "result.json"
    result_path.unlink(missing_ok=True)
    spec = {
        "method": job["method"],
        "seed": job["seed"],
        "model": asdict(job["model"]),
        "recipe": asdict(job["recipe"]),
        "execution": execution.to_dict(),
        "swaps": job["swaps"],
        "area": list(job["area"]),
        "aspect": list(job["aspect"]),
        "identity": job["identity"],
        "images": "images.npy",
        "bank": "bank.npy" if bank is not None else None,
        "checkpoint": checkpoint,
        "out": str(Path(out).resolve()),
        "result": "result.json",
    }
    write_text(work / "job.json", json.dumps(spec, indent=1))
    return result_path


def _rank_environment(nproc: int) -> dict[str, str]:
    """The ranks' environment: unbuffered output (progress arrives as it happens), this very package on
    the path wherever the caller runs from, and the CPU threads shared out between the ranks."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    source_root = str(Path(cutswap.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


class _Output:
    """Routes the ranks' output lines as they come and keeps what a failure message needs.

    Progress lines go to ``progress`` only; every other line to ``log_line``, into the last 40 lines, and,
    when it names an exception, into ``causes``: torchrun's summary that follows a failure hides the
    ranks' own exception lines, so they are kept apart to head the error.
    """

    def __init__(
        self,
        progress: Callable[[dict[str, float]], None] | None,
        log_line: Callable[[str], None] | None,
    ) -> None:
        self.progress = progress
        self.log_line = log_line
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self.causes: list[str] = []

    def line(self, line: str) -> None:
        """One output line, without its newline."""
        if line.startswith(PROGRESS_PREFIX):
            if self.progress is not None:
                self.progress(json.loads(line[len(PROGRESS_PREFIX) :]))
            return
        self.tail.append(line)
        if _CAUSE.match(line) and "ChildFailedError" not in line:
            self.causes.append(line.strip())
        if self.log_line is not None:
            self.log_line(line)

    def failure(self, job: dict[str, Any], nproc: int, resume: str, code: int) -> DistributedTrainingError:
        """The error of a run that exited non-zero or wrote no result: its first cause and last lines."""
        last = "\n".join(self.tail) or "(no output)"
        why = f": {self.causes[0]}" if self.causes else ""
        return DistributedTrainingError(
            f"DDP training of {job['method']} seed {job['seed']} over {nproc} processes failed (exit {code})"
            f"{why}; rerunning resumes from the last checkpoint, {resume}. Last output:\n{last}"
        )


def main(argv: list[str] | None = None) -> int:
    """One rank of a job written by :func:`launch` (run by torchrun, which sets RANK, LOCAL_RANK, ...)."""
    import torch
    import torch.distributed as dist

    from cutswap import roots
    from cutswap.learn.checkpoint import model_payload, save
    from cutswap.learn.loop import train_classifier

    parser = argparse.ArgumentParser(prog="python -m cutswap.learn.ddp", description=__doc__.split("\n")[0])
    parser.add_argument("job", type=Path, help="job.json written by cutswap.learn.ddp.launch")
    args = parser.parse_args(argv)
    work = args.job.parent
    job = json.loads(args.job.read_text())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    execution = Execution.from_dict(job["execution"]).for_rank(local_rank)
    if execution.device.type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if execution.device.type == "cuda" else "gloo")
    try:
        rank = dist.get_rank()
        images = np.load(work / job["images"])
        bank = np.load(work / job["bank"]) if job["bank"] else None

        def progress(entry: dict[str, float]) -> None:
            print(PROGRESS_PREFIX + json.dumps(entry), flush=True)

        model = ModelSpec(**{**job["model"], "head_dims": tuple(job["model"]["head_dims"])})
        result = train_classifier(
            images,
            job["method"],
            model,
            Recipe(**job["recipe"]),
            execution,
            int(job["seed"]),
            bank,
            swaps=job["swaps"],
            area=tuple(job["area"]),
            aspect=tuple(job["aspect"]),
            progress=progress if rank == 0 else None,
            checkpoint=job["checkpoint"] if roots.scheme(job["checkpoint"]) else work / job["checkpoint"],
            identity=job["identity"],
        )
        if rank == 0:
            payload = model_payload(result.model, list(model.head_dims), result.num_classes, job["method"])
            save(payload, Path(job["out"]))
            write_text(work / job["result"], json.dumps(result.summary()))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
