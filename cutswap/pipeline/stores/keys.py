"""Store keys and references: what a stage output is addressed by.

A key is a hash of the stage name, its code version, its own settings and its inputs' keys (16 hex
digits), so a changed setting yields a new directory and leaves the old one intact::

    <storage_root>/<stage>/<name>-<key>/

A store is addressed by (stage, name, key) and found from the reader's root: attrs record their inputs
without a root or a path, so a store tree copied to another root (another disk, a bucket) is reused whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cutswap.errors import StoreError

#: Bumped whenever a stage's output would change for the same settings and inputs.
CODE_VERSIONS = {
    "ingest": "1",
    "saliency": "2",  # 2: saliency.input_size (default 224) resizes images before the backbone
    "cluster": "2",  # 2: the rank array (cluster ranks by centroid) beside top
    "pairs": "2",  # 2: the ladder (smaller patch, next cluster) before random locations; step array
    "train": "1",
    # 3: normal training images held out for the threshold; densities stored
    # 4: the threshold chosen on normal validation images when there are any; its test check; no precision
    #    without anomalies
    "evaluate": "4",
    # 3: comparisons.csv and the Comparisons section (cutswap.report.compare)
    # 4: the figures of cutswap.report.figures
    # 5: t intervals with the test set's noise (cutswap.score.resample), the detectable difference, the
    #    machine
    # 6: operating points checked against their calibration bound and marked; no measured figures in prose
    # 7: a ROC figure without curves says why instead of an empty legend
    # 8: the mean row marks operating points that do not hold; the check level is a results column
    # 9: variants' rows (base_method, pairs_key, saliency_cam, cluster_anchor) and the ablation block;
    #    comparisons.csv's block and question columns
    # 10: verdicts with their scope (these categories; categories like these), skewness-corrected t
    #     intervals and their flag, confirmatory and Holm-adjusted exploratory rows, practical equivalence,
    #     P(a > b), unpaired comparisons; the score profile figure; the report settings in its key
    # 11: the page answers first (figures/answers.png beside one line per question), the questions x metrics
    #     grid, the runs index's answers and comparison pages; TensorBoard's event files with
    #     tracking.tensorboard
    # 12: what an inconclusive answer would have detected on its line; compact answers; compare pages A+B
    # 13: one wording of a row's role and adjusted p in every table and on the page
    "report": "13",
}


def jsonable(value: Any) -> Any:
    """``value`` as JSON writes it back: dict keys as sorted strings, tuples as lists, paths as strings, so
    that what a key hashes and what a store's attrs record read back equal to what was written."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def stage_key(stage: str, settings: dict[str, Any], inputs: dict[str, str]) -> str:
    """Hash of everything that determines a stage's output; 16 hex digits."""
    payload = {
        "stage": stage,
        "code_version": CODE_VERSIONS[stage],
        "settings": jsonable(settings),
        "inputs": dict(sorted(inputs.items())),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StoreRef:
    """A published store: small and JSON-friendly, passed between tasks (and hosts) instead of arrays.

    ``digest`` is the hash of the store's content (``cutswap.pipeline.stores.checksums``). Downstream keys
    include it, so a recomputed upstream store whose bytes differ cannot sit under old downstream keys.
    ``root`` is the storage root it was found under (an absolute folder or a URL,
    ``cutswap.roots``); it travels with the reference but is never recorded in attrs.
    """

    stage: str
    name: str
    key: str
    root: str
    digest: str = ""

    @property
    def path(self) -> str:
        """Where the store lives: its folder under a local root, its prefix under a URL."""
        return store_path(self.root, self.stage, self.name, self.key)

    def to_dict(self) -> dict[str, str]:
        """The reference as a store records its inputs: no root, so a copied tree still resolves."""
        out = asdict(self)
        del out["root"]
        return out

    @classmethod
    def recorded(cls, entry: dict[str, Any], root: str) -> StoreRef:
        """An input as a store's attrs record it, located under ``root`` (the reader's root).

        Stores written before roots were URLs also recorded the input's path; it is ignored.
        """
        return cls(entry["stage"], entry["name"], entry["key"], root, entry.get("digest", ""))


def store_path(storage_root: str | Path, stage: str, name: str, key: str) -> str:
    """Where a stage output lives under a root (folder or URL); ``name`` must be a plain folder name."""
    from cutswap.roots import join

    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise StoreError(f"store name {name!r} must be a plain folder name")
    if not (_PLAIN.match(stage) and _PLAIN.match(key)):
        # A reference read back from a store's attrs must not lead out of the root.
        raise StoreError(f"store reference {stage!r}/{key!r}: stage and key must be plain names")
    return join(str(storage_root), stage, f"{name}-{key}")


#: What a stage name and a key look like (``stage_key`` gives 16 hex digits).
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")


def writer() -> dict[str, str | int]:
    """Who wrote a store: host and process, and the SLURM job it ran in (``SLURM_JOB_ID``, set in every
    process of a job, Dask workers started by ``parallel.slurm`` included), so a wrong number can be
    traced to the job's log (``<parallel.slurm.log_folder>/cutswap-<run>-<id>.out``) and node. A store
    published by the flow from shards computed on workers (the precompute stages) names the flow."""
    import socket

    out: dict[str, str | int] = {"host": socket.gethostname(), "pid": os.getpid()}
    if job := os.environ.get("SLURM_JOB_ID"):
        out["slurm_job_id"] = job
    return out


def library_versions() -> dict[str, str]:
    """Versions of what shaped the numbers, for provenance."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for dist in ("cutswap", "torch", "torchvision", "numpy", "zarr", "scikit-learn", "timm"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out
