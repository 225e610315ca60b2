"""Keyed stage outputs under any root: reused when complete and intact, computed once otherwise.

A store is addressed by (stage, name, key) under a root (``cutswap.roots``)::

    <root>/<stage>/<name>-<key>

A local root publishes by rename and file locks (``cutswap.pipeline.stores.posix``); a URL root by
attempt prefixes and create-only commit markers (``cutswap.pipeline.stores.objects``). Both give readers
only finished stores, let any number of writers of one key race safely (one store wins, all equal), and
verify a store's files against what was recorded at publication before reusing or opening it.

Beside a store's arrays live its extra files (a trained model's ``checkpoint.pt``): ``put_file`` and
``get_file`` write and read them through the same root, so workers that share no disk share them too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zarr

import cutswap.pipeline.stores.collect as collect
import cutswap.pipeline.stores.objects as objects
import cutswap.pipeline.stores.posix as posix
from cutswap import atomic, roots
from cutswap.errors import StoreError
from cutswap.pipeline.stores.checksums import damage_of
from cutswap.pipeline.stores.keys import (
    CODE_VERSIONS,
    StoreRef,
    jsonable,
    library_versions,
    stage_key,
    writer,
)

log = logging.getLogger(__name__)

#: Committed object-store locations this process has verified (by marker), so a store opened many times
#: (a detector per batch, a report per figure) is listed once.
_VERIFIED: set[tuple[str, str]] = set()


def committed(ref: StoreRef, check: bool = True) -> tuple[str, str | None] | None:
    """Where a complete store's files are and what is wrong with them (None: intact, or ``check`` False);
    None if absent.

    Either layout is read under either root, so a tree copied between a folder and a bucket (``aws s3
    sync``, ``gsutil rsync``, ``cp -r``) is reused as it is: a folder holding ``zarr.json`` (the rename
    protocol), or a prefix holding commit markers (the object protocol). Under the object protocol a
    reference with a digest finds the generation that digest names, not merely the newest.
    """
    if roots.is_local(ref.root):
        return _committed_folder(Path(ref.path), check)
    _, listing = objects.list_store(ref.path)
    marker = objects.commit_of(ref.path, ref.digest or None, listing)
    if marker is None and ref.digest and objects.latest_commit(ref.path, listing) is not None:
        # A forced recompute elsewhere committed other content, and this run's generation was collected.
        return ref.path, f"the generation this run read (digest {ref.digest}) was superseded and collected"
    if marker is None:
        return _copied_folder(ref, check)
    location = objects.attempt_url(ref.path, marker)
    seen = (location, marker["committed"])
    if seen in _VERIFIED or not check:
        return location, None
    problem = objects.verify(ref.path, marker)
    if problem is None:
        _VERIFIED.add(seen)
    return location, problem


def _committed_folder(path: Path, check: bool) -> tuple[str, str | None] | None:
    """``committed`` under a local root: a published folder, or a bucket's tree copied here as it was."""
    if posix.is_complete(path):
        return str(path), posix.verify(path) if check else None
    markers = sorted(path.glob("commit-*.json")) if path.is_dir() else []
    if not markers:
        return None
    attempt = Path(objects.attempt_url(str(path), json.loads(markers[-1].read_text())))
    if not posix.is_complete(attempt):
        return None
    return str(attempt), posix.verify(attempt) if check else None


def _copied_folder(ref: StoreRef, check: bool) -> tuple[str, str | None] | None:
    """A store published under a local root and copied to a bucket as it was: checked by its digests."""
    attrs = roots.group_attrs(ref.path) or {}
    if not attrs.get("complete"):
        return None
    seen = (ref.path, attrs.get("digest", ""))
    if seen in _VERIFIED or not check:
        return ref.path, None
    problem = damage_of(objects.file_digests(ref.path), attrs.get("digests"))
    if problem is None:
        _VERIFIED.add(seen)
    return ref.path, problem


def is_complete(ref: StoreRef | Path | str) -> bool:
    """True when the store has a finished (committed) version; a local folder may be given as a path."""
    if not isinstance(ref, StoreRef):
        return posix.is_complete(Path(ref))
    return committed(ref) is not None


def open_store(ref: StoreRef) -> zarr.Group:
    """Open a complete store read-only, after checking its files against what was recorded at publication.

    Reads go through ``objects.StrictStore``: a chunk that vanishes after this check is an error naming
    the store when it is read, never Zarr's fill values.

    Raises:
        StoreError: the store is missing, was never completed (a crashed writer, a deleted file), or its
            files differ from those recorded when it was published.
    """
    found = committed(ref)
    if found is None:
        raise StoreError(
            f"store {ref.path} is missing or incomplete; rerun its stage (or run with force=[<stage>])"
        )
    location, problem = found
    if problem:
        raise StoreError(f"store {ref.path} is corrupt: {problem}; recompute it (--force {ref.stage})")
    return objects.open_strict(location, ref.path)


def put_file(group: zarr.Group, name: str, data: bytes) -> None:
    """Write an extra file beside a store's arrays while it is being published (a checkpoint); through
    the group's own store under a URL root, so that it is hashed as it is written."""
    location = roots.location_of(group)
    if roots.is_local(location):
        roots.write_bytes(roots.join(location, name), data)
        return
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    sync(group.store.set(name, default_buffer_prototype().buffer.from_bytes(data)))


def get_file(ref: StoreRef, name: str) -> bytes:
    """An extra file of a complete store (after ``open_store``'s checks)."""
    location = roots.location_of(open_store(ref))
    data = roots.read_bytes(roots.join(location, name))
    if data is None:
        raise StoreError(f"store {ref.path} has no {name}; recompute it (--force {ref.stage})")
    return data


def record_digests(group: zarr.Group, digests: dict[str, str]) -> None:
    """Record the sha256 of objects that other processes wrote into a group being published (the shards
    of the precompute stages, written by Dask workers), so that its commit reads none of them back.

    ``digests``: relative path under the group -> sha256, as each writer hashed what it wrote. Under a
    local root nothing is recorded: publication hashes the files on its own disk.
    """
    store = group.store
    if isinstance(store, objects.HashingStore):
        store.hashes.update(digests)


@contextlib.contextmanager
def publishing(ref: StoreRef, attrs: dict[str, Any], replace: bool = False) -> Iterator[zarr.Group]:
    """Yield a new group for ``ref``'s store; publish it only if the body succeeds (see the backends)."""
    attrs = jsonable(attrs)
    if roots.is_local(ref.root):
        with posix.publishing(Path(ref.path), attrs, replace) as group:
            yield group
    else:
        try:
            collect.collect_garbage(ref.path)
        except StoreError as exc:  # a role that may not delete, say: garbage stays, the write goes on
            log.warning("store %s: leftovers not collected: %s", ref.path, exc)
        with objects.publishing(ref.path, attrs, replace) as group:
            yield group


@contextlib.contextmanager
def _one_writer(ref: StoreRef, waiting: Callable[[str], None]) -> Iterator[None]:
    """One writer per key at a time where the root has locks (a local folder); elsewhere writers race
    and the commit keeps one of their equal stores."""
    if not roots.is_local(ref.root):
        yield
        return
    path = Path(ref.path)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(atomic.locked(path, "writing", waiting))
        except OSError as exc:
            raise StoreError(f"cannot write under {path.parent}: {posix.explain(exc, path.parent)}") from exc
        yield


def build_store(
    storage_root: str | Path,
    stage: str,
    name: str,
    settings: dict[str, Any],
    inputs: dict[str, StoreRef],
    write: Any,
    mode: str = "run",
    extra_attrs: dict[str, Any] | None = None,
) -> tuple[StoreRef, bool]:
    """Return the keyed store of a stage, computing it with ``write(group)`` only when needed.

    Args:
        storage_root: A local folder or a URL (``cutswap.roots``).
        mode: ``run`` computes a missing store and reuses a complete one; ``force`` recomputes it anyway;
            ``reuse`` only accepts a complete store (a stage the user did not ask to run).

    A store being written by another process under a local root is waited for, then reused, even under
    ``force``: it was computed after this call asked for it. A store whose files do not match what was
    recorded at publication is logged by name and recomputed.

    Returns:
        The reference and whether it was computed now (False: a complete store was reused).

    Raises:
        StoreError: ``mode="reuse"`` and there is no complete store for these settings and inputs.
    """
    if mode not in ("run", "force", "reuse"):
        raise ValueError(f"mode must be run, force or reuse, got {mode!r}")
    # An input is its key and its content: a recomputed input with other bytes gives new downstream keys.
    key = stage_key(stage, settings, {k: f"{v.key}:{v.digest}" for k, v in inputs.items()})
    ref = StoreRef(stage, name, key, roots.normalize(storage_root))
    found = committed(ref)
    if found is not None and mode != "force":
        if found[1] is None:
            return _with_digest(ref), False
        log.warning("%s %s: store %s is corrupt (%s); recomputing it", stage, name, ref.path, found[1])
        mode = "force"
    if mode == "reuse":
        raise StoreError(
            f"stage {stage} has no complete output for {name} with these settings (expected {ref.path}); "
            f"include {stage!r} in the stages to run"
        )
    attrs = {
        "stage": stage,
        "name": name,
        "key": key,
        "code_version": CODE_VERSIONS[stage],
        "settings": settings,
        "inputs": {k: v.to_dict() for k, v in inputs.items()},
        "provenance": {
            "versions": library_versions(),
            "started": datetime.now(UTC).isoformat(),
            "writer": writer(),
        },
        **(extra_attrs or {}),
    }
    waited: list[str] = []

    def waiting(holder: str) -> None:
        waited.append(holder)
        log.info("%s %s: waiting for another writer of %s (pid, host: %s)", stage, name, ref.path, holder)

    with _one_writer(ref, waiting):
        found = committed(ref)
        if found is not None and found[1] is None and (mode != "force" or waited):
            return _with_digest(ref), False  # published meanwhile, by another run
        start = time.perf_counter()
        with publishing(ref, attrs, replace=mode == "force") as group:
            write(group)
            prov = dict(group.attrs["provenance"])
            prov["seconds"] = round(time.perf_counter() - start, 3)
            group.attrs["provenance"] = prov
    return _with_digest(ref), True


def _with_digest(ref: StoreRef) -> StoreRef:
    """The reference with the content digest its committed store recorded (read, not verified again:
    the store was just verified or written)."""
    attrs = roots.group_attrs(committed(ref, check=False)[0]) or {}
    return StoreRef(ref.stage, ref.name, ref.key, ref.root, attrs.get("digest", ""))
