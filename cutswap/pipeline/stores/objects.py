"""Publishing stores on object storage, where there is no rename and no lock.

One store (a stage output under one key) is a prefix of its own::

    <root>/<stage>/<name>-<key>/
        attempt-<id>/            everything one writer wrote: the Zarr group and its extra files
        attempt-<id>.alive       that writer's heartbeat, rewritten every 30 s while it writes:
                                 {"host", "pid", "time", "stale_seconds"}
        commit-<generation>.json the commit marker of one generation (6 digits), created at most once:
                                 {"attempt", "generation", "digest", "objects": {path: [size, etag]},
                                  "committed", "host", "keep_superseded_seconds"}

How a store is published, and why:

1. A writer writes under a fresh attempt prefix (no writer ever shares another's objects, so two writers
   never share a Zarr shard), computes the content digests of what it wrote and records them in the
   group's attrs, ``complete: true`` last. What this process wrote through the group is hashed as it is
   written (``HashingStore``), and so are the shards the Dask workers write (they return their digests,
   ``publish.record_digests``); anything else is read back and hashed once.
2. One listing, taken last, must hold every object the digests name and nothing else; the marker records
   that very listing (``_sealed``). A writer whose own heartbeat fell silent too long (paused, cut off)
   does not commit: another host may have collected its attempt meanwhile.
3. It commits by creating the marker with a conditional PUT (``If-None-Match: *``): of any number of
   writers of one generation exactly one succeeds, on S3, GCS, Azure and a local folder alike. A failed
   PUT is read back and retried with backoff (S3 answers 409 to concurrent conditional writes); one
   whose outcome stays unknown leaves its attempt for collection. Readers only ever look through a
   marker, so an attempt that was never committed is invisible. Stages are deterministic, so a loser's
   store equals the winner's; the loser deletes its attempt and returns the winner's.
4. A forced recompute commits the next generation instead of overwriting. A reference opens the
   generation its digest names (``commit_of``), and a superseded generation stays readable for
   ``keep_superseded_seconds`` after the commit that superseded it (the newer marker records it).
5. Garbage is deleted by ``cutswap.pipeline.stores.collect``, by server time and by each writer's own
   limits: there is no lock to ask, and a slow live writer must never lose its attempt.

A marker records every object's size and ETag: a store is verified on reuse by one listing (an object
replaced, removed or added after the commit is named) and one read of its ``zarr.json``, without
downloading it again. Reads go through ``StrictStore``: an object the digests name that has gone since is
an error, never Zarr's fill values. The sha256 digests in the attrs are the store's content identity
(downstream keys use it), as on a local root.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import zarr
from zarr.storage import WrapperStore

from cutswap import atomic, roots
from cutswap.errors import StoreError, one_line
from cutswap.pipeline.stores.checksums import content_digest, damage_of
from cutswap.stalls import waiting

log = logging.getLogger(__name__)

COMMIT = "commit-"
ATTEMPT = "attempt-"
ALIVE = ".alive"


def list_store(folder: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The attempt prefixes and the objects directly under a store's prefix."""
    import obstore

    try:
        with waiting(folder):
            found = obstore.list_with_delimiter(roots.object_store(folder))
    except FileNotFoundError:
        return [], []
    except Exception as exc:  # noqa: BLE001 (obstore raises its own classes for every backend error)
        raise StoreError(f"cannot list {folder}: {one_line(exc)}") from exc
    return [p.rstrip("/") for p in found["common_prefixes"]], list(found["objects"])


def marker_names(objects: list[dict[str, Any]]) -> list[str]:
    """The commit markers in a store prefix's listing, oldest generation first."""
    return sorted(m["path"] for m in objects if m["path"].startswith(COMMIT))


def latest_commit(folder: str, objects: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The marker of a store's highest committed generation; None when nothing was committed.

    ``objects``: the store prefix's listing (``list_store``), when the caller has it already.
    """
    return commit_of(folder, None, objects)


def commit_of(
    folder: str, digest: str | None, objects: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The marker of the newest generation whose content digest is ``digest`` (any generation: None).

    Why by digest: a reference (``StoreRef.digest``) names the content its holder was built from, and a
    forced recompute elsewhere commits a newer generation meanwhile; a long run must keep reading the
    generation it started with, never mix two. None when no generation has that digest (any more).
    """
    if objects is None:
        _, objects = list_store(folder)
    for name in reversed(marker_names(objects)):
        marker = read_marker(folder, name)
        if marker is None:
            raise StoreError(
                f"{roots.join(folder, name)} was listed but cannot be read; is another process deleting "
                f"{folder}? Rerun"
            )
        if digest is None or marker.get("digest") == digest:
            return marker
    return None


def read_marker(folder: str, name: str) -> dict[str, Any] | None:
    """One commit marker; None when it does not exist."""
    data = roots.read_bytes(roots.join(folder, name))
    if data is None:
        return None
    try:
        marker = json.loads(data)
    except ValueError:
        marker = None
    if not isinstance(marker, dict) or not {"attempt", "generation", "objects"} <= marker.keys():
        raise StoreError(
            f"{roots.join(folder, name)} is not a commit marker (damaged); delete {folder} to recompute "
            "the store"
        )
    return marker


def attempt_url(folder: str, marker: dict[str, Any]) -> str:
    """Where a committed generation's objects are."""
    return roots.join(folder, ATTEMPT + marker["attempt"])


def _objects(url: str) -> dict[str, list[Any]]:
    """Every object under ``url``: relative path -> [size, etag]."""
    import obstore

    with waiting(url):
        metas = obstore.list(roots.object_store(url)).collect()
    return {m["path"]: [m["size"], m["e_tag"]] for m in sorted(metas, key=lambda m: m["path"])}


def verify(folder: str, marker: dict[str, Any]) -> str | None:
    """What differs between a committed attempt's objects and those its marker recorded; None if nothing.

    One listing decides when sizes and ETags match and every object the store's digests name is listed
    (a marker written from a listing that had lost an object would otherwise agree with itself). An ETag
    is not the content's identity everywhere: a copy of the tree (another bucket, ``aws s3 sync``
    uploading in parts, a ``file://`` root, whose ETags derive from inodes) gives the same bytes other
    ETags. So when only ETags differ, the content decides, against the sha256 digests the store's attrs
    recorded (every object is read once).
    """
    url = attempt_url(folder, marker)
    actual = _objects(url)
    retagged = False
    for path, (size, etag) in marker["objects"].items():
        if path not in actual:
            return f"{path} is missing"
        if actual[path][0] != size:
            return f"{path} was replaced after its commit"
        retagged |= actual[path][1] != etag
    if extra := sorted(set(actual) - set(marker["objects"])):
        return f"{extra[0]} was added after its commit"
    if (attrs := roots.group_attrs(url)) is None:
        return "zarr.json is missing or damaged"
    if missing := sorted(set(attrs.get("digests") or {}) - set(actual)):
        return f"{missing[0]} is missing"
    if not retagged:
        return None
    return damage_of(file_digests(url), attrs.get("digests"))


def file_digests(url: str, known: dict[str, str] | None = None) -> dict[str, str]:
    """sha256 of every object under ``url`` but the root ``zarr.json``: from ``known`` (hashed as this
    process wrote them) where there, else read back from the server."""
    import obstore

    store = roots.object_store(url)
    known = known or {}
    digests = {}
    with waiting(url):
        paths = sorted(m["path"] for m in obstore.list(store).collect())
    for path in paths:
        if path == "zarr.json":
            continue
        if path in known:
            digests[path] = known[path]
            continue
        h = hashlib.sha256()
        with waiting(url):
            for chunk in obstore.get(store, path).stream():
                h.update(chunk)
        digests[path] = h.hexdigest()
    return digests


class HashingStore(WrapperStore):
    """A Zarr store that records the sha256 of every object it writes (``hashes``), so that a commit reads
    back only what other processes wrote. A key written only if absent, or deleted, is forgotten (then
    read back, or gone)."""

    def __init__(self, store: Any, hashes: dict[str, str]) -> None:
        super().__init__(store)
        self.hashes = hashes

    async def set(self, key: str, value: Any) -> None:
        await self._store.set(key, value)
        self.hashes[key] = hashlib.sha256(value.to_bytes()).hexdigest()

    async def _set_many(self, values: Any) -> None:
        for key, value in values:
            await self.set(key, value)

    async def set_if_not_exists(self, key: str, value: Any) -> None:
        await self._store.set_if_not_exists(key, value)
        self.hashes.pop(key, None)

    async def delete(self, key: str) -> None:
        await self._store.delete(key)
        self.hashes.pop(key, None)


class StrictStore(WrapperStore):
    """A read-only Zarr store in which an object the store's digests name cannot be absent.

    Zarr reads a missing chunk (or shard) as fill values, without an error: a chunk deleted after this
    process verified the store would read as zeros. Here it is a ``StoreError`` naming the store, which
    the stage that reads it reports (and a rerun recomputes the store, whose check then fails).
    """

    def __init__(self, store: Any, name: str) -> None:
        super().__init__(store)
        self.name = name
        self.expected: set[str] = set()

    def _refuse(self, key: str) -> None:
        if key in self.expected:
            raise StoreError(
                f"store {self.name}: {key} is missing (it was there when the store was published); "
                "rerun to recompute the store"
            )

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        value = await self._store.get(key, prototype, byte_range)
        if value is None:
            self._refuse(key)
        return value

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list[Any]:
        key_ranges = list(key_ranges)
        values = await self._store.get_partial_values(prototype, key_ranges)
        for (key, _), value in zip(key_ranges, values, strict=True):
            if value is None:
                self._refuse(key)
        return values


def open_strict(location: str, name: str) -> zarr.Group:
    """Open a published store's group read-only through a ``StrictStore`` that expects every object its
    digests name (``name``: the store, for the error)."""
    strict = StrictStore(roots.zarr_store(location, read_only=True), name)
    group = zarr.open_group(store=strict, mode="r")
    strict.expected = set(group.attrs.get("digests") or {})
    return group


@contextlib.contextmanager
def publishing(folder: str, attrs: dict[str, Any], replace: bool = False) -> Iterator[Any]:
    """Yield a new group under a fresh attempt prefix; commit it only if the body succeeds.

    Args:
        folder: The store's prefix (``<root>/<stage>/<name>-<key>``).
        attrs: Attributes written before the body runs (the body may add more).
        replace: Commit the next generation over a committed one (a forced recompute). Otherwise a
            generation committed meanwhile by another writer is kept and ours is deleted.

    Raises:
        StoreError: the storage refused a write, naming the store.
    """
    attempt = uuid.uuid4().hex[:16]
    url = roots.join(folder, ATTEMPT + attempt)
    alive = roots.join(folder, ATTEMPT + attempt + ALIVE)
    hashes: dict[str, str] = {}
    heartbeat = None
    try:
        heartbeat = atomic.Heartbeat(lambda: roots.write_bytes(alive, _holder()))
        group = zarr.open_group(store=HashingStore(roots.zarr_store(url), hashes), mode="w-")
        group.attrs.update({**attrs, "complete": False})
    except Exception as exc:  # noqa: BLE001
        if heartbeat is not None:
            heartbeat.stop()
        _discard(url, alive)
        raise StoreError(f"cannot write {folder}: {one_line(exc)}") from exc
    committed: bool | None = False  # None: the commit's answer was lost, so the attempt may be in use
    try:
        yield group
        digests = file_digests(url, hashes)
        group.attrs.update({"digests": digests, "digest": content_digest(digests), "complete": True})
        listed = _sealed(folder, url, heartbeat, {*digests, *hashes})
        committed = _commit(folder, attempt, group.attrs["digest"], listed, replace)
    except _CommitUnknown:
        committed = None
        raise
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"writing {folder} failed: {one_line(exc)}") from exc
    finally:
        heartbeat.stop()
        if committed:
            with contextlib.suppress(Exception):
                roots.delete(alive)
        elif committed is False:
            _discard(url, alive)


class _CommitUnknown(StoreError):
    """The commit marker's PUT failed and its result cannot be read back: the attempt is left to
    collection (``cutswap.pipeline.stores.collect``), which keeps it if the marker turns out to name it."""


def _sealed(folder: str, url: str, heartbeat: atomic.Heartbeat, expected: set[str]) -> dict[str, list]:
    """The listing the commit records, once it holds every object ``expected`` names (the digests, and
    what this process and its workers wrote) and nothing else.

    Why one listing, taken last: the marker's object list is what every later reader checks against, so
    it must be the very listing that was found complete. A check on one listing and a marker built from
    another leaves a window (a pause, a collection by another host, a lagging listing) in which a chunk
    can vanish and the marker still agree with what is left. And a writer whose own heartbeat fell
    silent long enough (its process paused, its host cut off from the storage) may have lost objects to
    another host's collection after this listing too: it does not commit.
    """
    listed = _objects(url)
    if lost := sorted({*expected, "zarr.json"} - set(listed)):
        raise StoreError(
            f"cannot commit {folder}: {lost[0]} vanished from its attempt; nothing was committed, rerun"
        )
    if extra := sorted(set(listed) - {*expected, "zarr.json"}):
        raise StoreError(
            f"cannot commit {folder}: {extra[0]} appeared in its attempt after its digests were taken; "
            "nothing was committed, rerun"
        )
    silent = heartbeat.longest_silence()
    if silent >= atomic.silence_limit():
        raise StoreError(
            f"cannot commit {folder}: this writer's heartbeat was silent for {silent:.0f} s (a paused "
            "process, a host cut off from the storage), so its attempt may have been collected meanwhile; "
            "nothing was committed, rerun"
        )
    return listed


def _commit(folder: str, attempt: str, digest: str, listed: dict[str, list], replace: bool) -> bool:
    """Create the next generation's marker; False when another writer committed first (ours is dropped)."""
    latest = latest_commit(folder)
    if latest is not None and not replace:
        return False  # committed meanwhile by another writer of the key; its store equals ours
    generation = 0 if latest is None else latest["generation"] + 1
    marker = {
        "attempt": attempt,
        "generation": generation,
        "digest": digest,
        "objects": listed,
        "committed": datetime.now(UTC).isoformat(),
        "host": socket.gethostname(),
        "keep_superseded_seconds": keep_superseded_seconds(),
    }
    return _create_marker(folder, f"{COMMIT}{generation:06d}.json", marker)


#: Seconds to wait before each retry of a marker's PUT whose outcome is unknown (doubled at random up to
#: twice that): about 12 s in all, longer than S3's conflicting conditional writes take to settle.
BACKOFF = (0.2, 0.4, 0.8, 1.6, 3.2)


def _create_marker(folder: str, name: str, marker: dict[str, Any]) -> bool:
    """Create a marker object only if absent; True when it names our attempt, False when another's.

    A failed PUT says nothing of the marker: the write may have landed with its answer lost, another
    writer's may have, or S3 may answer ``409 ConditionalRequestConflict`` while a concurrent
    conditional write of the same key is in flight. So after each failure the marker is read back: when
    it exists, it is the answer; when it does not (yet), the PUT is retried with backoff. Only when the
    retries run out is the outcome unknown, and the attempt is left for collection.
    """
    import obstore

    data = json.dumps(marker).encode()
    failure: Exception | None = None
    for delay in (*BACKOFF, None):
        try:
            with waiting(folder):
                obstore.put(roots.object_store(folder), name, data, mode="create")
            return True
        except Exception as exc:  # noqa: BLE001 (obstore raises its own classes for every backend error)
            failure = exc
        with contextlib.suppress(Exception):  # a damaged or unreadable marker: tried again below
            theirs = read_marker(folder, name)
            if theirs is not None:
                if theirs["attempt"] != marker["attempt"]:
                    log.info("store %s: %s was committed by another writer; keeping theirs", folder, name)
                return theirs["attempt"] == marker["attempt"]
        if delay is not None:
            log.info("store %s: committing %s failed (%s); retrying", folder, name, one_line(failure))
            time.sleep(delay * (1 + random.random()))
    raise _CommitUnknown(f"cannot commit {folder}/{name}: {one_line(failure)}; rerun") from failure


def keep_superseded_seconds() -> float:
    """How long a generation stays readable after a newer one is committed over it (a forced recompute):
    ``CUTSWAP_KEEP_SUPERSEDED_HOURS`` (default 24), recorded in the newer generation's marker so that
    every collector honours the writer's period, whatever its own environment says."""
    hours = os.environ.get("CUTSWAP_KEEP_SUPERSEDED_HOURS", "24")
    try:
        value = float(hours) * 3600
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise StoreError(f"CUTSWAP_KEEP_SUPERSEDED_HOURS={hours!r}: give a number of hours >= 0 (default 24)")
    return value


def _discard(url: str, alive: str) -> None:
    """Delete an attempt and then its heartbeat (best effort: what is left is collected later)."""
    with contextlib.suppress(Exception):
        roots.delete_tree(url)
    with contextlib.suppress(Exception):
        roots.delete(alive)


def _holder() -> bytes:
    """A heartbeat's body: who writes, and the staleness limit it agreed to, so that every collector
    waits as long as this writer expects, whatever the collector's own ``CUTSWAP_GC_STALE_SECONDS``."""
    return json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": datetime.now(UTC).isoformat(),
            "stale_seconds": atomic.stale_seconds(),
        }
    ).encode()
