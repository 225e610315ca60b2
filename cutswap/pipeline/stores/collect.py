"""Garbage under an object-storage root: what no reader can reach and no writer still writes.

What is garbage, per store prefix (``cutswap.pipeline.stores.objects``' layout) and per root::

    <root>/<stage>/<name>-<key>/attempt-<id>/       abandoned: never committed, its writer silent for the
                                                    stale limit its own heartbeat records
    <root>/<stage>/<name>-<key>/attempt-<id>/       superseded: an older generation, past the period that
                                                    the marker which superseded it records
    <root>/<stage>/<name>-<key>/attempt-<id>.alive  a heartbeat that no writer keeps
    <root>/<stage>/<name>-<key>/commit-<gen>.json   the marker of a generation already collected
    <root>/train/.work/<name>-<key>/                a resume state whose training was published since, or
                                                    that nobody touched for the resume period
    (S3) incomplete multipart uploads under <root>  older than the upload period (invisible, and billed)

Why by the server's time and the writers' limits: there is no lock to ask, and hosts disagree. "Now" is
the ``Last-Modified`` the storage server gives an object this collector writes and deletes (``server_now``),
compared with the times the server's listings give, so no host's clock matters; a live writer's attempt
waits as long as that writer was told to expect (``stale_seconds`` in its heartbeat), whatever the
collector's own environment says.

Every writer collects its own store's prefix before it writes (``collect_garbage``); ``cutswap gc ROOT``
collects a whole root (``root_garbage``, dry run unless asked to delete).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cutswap import atomic, roots
from cutswap.errors import StoreError, one_line
from cutswap.pipeline.stores.objects import (
    ALIVE,
    ATTEMPT,
    COMMIT,
    list_store,
    marker_names,
    read_marker,
)
from cutswap.stalls import waiting

#: A resume state nobody wrote for this long belongs to a key no run asks for any more (settings changed).
RESUME_SECONDS = 7 * 24 * 3600.0
#: An incomplete multipart upload this old is dead: AWS's own lifecycle rule uses one day.
UPLOAD_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class Garbage:
    """One thing to delete: a prefix (``tree``: every object under it) or one object."""

    url: str
    reason: str
    objects: int = 1
    bytes: int = 0
    tree: bool = False
    upload_id: str | None = None  # an incomplete multipart upload of the object at ``url``


def server_now(root: str) -> datetime:
    """The storage server's time: the ``Last-Modified`` of a probe object written under ``root``."""
    import obstore

    store = roots.object_store(root)
    name = f".cutswap-clock-{uuid.uuid4().hex}"
    try:
        with waiting(root):
            obstore.put(store, name, b"")
            now = obstore.head(store, name)["last_modified"]
    except Exception as exc:  # noqa: BLE001 (obstore raises its own classes for every backend error)
        raise StoreError(f"cannot read the storage's time at {root}: {one_line(exc)}") from exc
    finally:
        with contextlib.suppress(Exception):
            obstore.delete(store, name)
    return now


def _age(now: datetime, then: datetime | None) -> float:
    return float("inf") if then is None else (now - then).total_seconds()


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "never"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def store_garbage(folder: str, now: datetime, stale: float | None = None) -> list[Garbage]:
    """What may be deleted under one store prefix at server time ``now``.

    Args:
        stale: the limit for an attempt whose heartbeat records none (an older writer, or none at all);
            default ``cutswap.atomic.stale_seconds``.
    """
    stale = atomic.stale_seconds() if stale is None else stale
    prefixes, listing = list_store(folder)
    attempts = {p.rsplit("/", 1)[-1] for p in prefixes if p.rsplit("/", 1)[-1].startswith(ATTEMPT)}
    times = {m["path"]: m["last_modified"] for m in listing}
    markers = [(n, m) for n in marker_names(listing) if (m := read_marker(folder, n)) is not None]
    committed = {ATTEMPT + m["attempt"]: m for _, m in markers}
    latest = ATTEMPT + markers[-1][1]["attempt"] if markers else None
    found: list[Garbage] = []
    for name in sorted(attempts - {latest}):
        if name in committed:
            why = _superseded(committed[name], markers, times, now)
        else:
            why = _abandoned(folder, name, times.get(name + ALIVE), now, stale)
        if why:
            found.append(_tree(roots.join(folder, name), why))
    remaining = attempts - {g.url.rsplit("/", 1)[-1] for g in found}
    for name, marker in markers[:-1]:
        if ATTEMPT + marker["attempt"] not in remaining:
            found.append(Garbage(roots.join(folder, name), "marker of a collected generation"))
    return found + _orphan_heartbeats(folder, listing, attempts - {latest}, now)


def _superseded(
    marker: dict[str, Any],
    markers: list[tuple[str, dict[str, Any]]],
    times: dict[str, datetime],
    now: datetime,
) -> str | None:
    """Why a committed, superseded generation may go (None: readers may still hold it): the marker that
    superseded it is older than the period it records."""
    name, newer = next((n, m) for n, m in markers if m["generation"] > marker["generation"])
    keep = float(newer.get("keep_superseded_seconds", atomic.stale_seconds()))
    age = _age(now, times.get(name))
    if age < keep:
        return None
    return f"generation {marker['generation']}, superseded {_duration(age)} ago (kept {_duration(keep)})"


def _abandoned(folder: str, name: str, beat: datetime | None, now: datetime, stale: float) -> str | None:
    """Why a never-committed attempt may go (None: its writer may be at work, or has just finished)."""
    limit = stale
    if beat is not None:
        limit = _heartbeat_limit(roots.join(folder, name + ALIVE))
        if limit is None:  # listed, then gone: its writer has just committed or discarded it
            return None
    if _age(now, beat) < limit:
        return None
    # The newest object too: a writer's workers may write on while its own heartbeat is late.
    newest = max((m[2] for m in _listed(roots.join(folder, name)).values()), default=None)
    if _age(now, newest) < limit:
        return None
    return f"never committed; its writer silent for {_duration(min(_age(now, beat), _age(now, newest)))}"


def _heartbeat_limit(url: str) -> float | None:
    """The stale limit a heartbeat's writer recorded (``atomic.stale_seconds``' default for a writer that
    recorded none); None when the heartbeat is gone.

    Why None matters: a writer deletes its heartbeat right after its commit, so a heartbeat that was
    listed a moment ago and cannot be read now belongs to an attempt that may have just been committed,
    after the listing that found no marker for it. Such an attempt is left for the next collection, which
    sees the marker; taking it as silent would delete a live store.
    """
    data = roots.read_bytes(url)
    if data is None:
        return None
    try:
        return float(json.loads(data).get("stale_seconds", atomic.stale_seconds()))
    except (ValueError, TypeError, AttributeError):
        return atomic.stale_seconds()


def _orphan_heartbeats(
    folder: str, listing: list[dict[str, Any]], attempts: set[str], now: datetime
) -> list[Garbage]:
    """Heartbeats that no writer keeps: one whose writer died before its first object, or whose commit's
    answer was lost, silent for their own limit. The heartbeats of ``attempts`` (those not the latest
    generation's) go with their attempt, or stay with it."""
    found = []
    for meta in listing:
        path = meta["path"]
        if not path.endswith(ALIVE) or path[: -len(ALIVE)] in attempts:
            continue
        url = roots.join(folder, path)
        limit = _heartbeat_limit(url)
        if limit is not None and _age(now, meta["last_modified"]) >= limit:
            found.append(Garbage(url, "heartbeat no writer keeps", 1, meta["size"]))
    return found


def _listed(url: str) -> dict[str, tuple[int, str, datetime]]:
    """Every object under a prefix: path -> (size, etag, last modified)."""
    import obstore

    with waiting(url):
        metas = obstore.list(roots.object_store(url)).collect()
    return {m["path"]: (m["size"], m["e_tag"], m["last_modified"]) for m in metas}


def _tree(url: str, reason: str) -> Garbage:
    objects = _listed(url)
    return Garbage(url, reason, len(objects), sum(o[0] for o in objects.values()), tree=True)


def collect_garbage(folder: str, now: datetime | None = None, stale: float | None = None) -> list[str]:
    """Delete the garbage of one store prefix; return the attempts deleted.

    ``now``: the server's time, when the caller read it already (``server_now``).
    """
    prefixes, _ = list_store(folder)
    if not any(p.rsplit("/", 1)[-1].startswith(ATTEMPT) for p in prefixes):
        return []  # nothing to collect: no request for the server's time
    if now is None:
        now = server_now(folder.rsplit("/", 2)[0])
    found = store_garbage(folder, now, stale)
    delete(found)
    return [g.url.rsplit("/", 1)[-1] for g in found if g.tree]


def root_garbage(
    root: str,
    now: datetime | None = None,
    resume_seconds: float = RESUME_SECONDS,
    upload_seconds: float = UPLOAD_SECONDS,
) -> Iterator[Garbage]:
    """Every piece of garbage under a URL root, store by store, then resume states and uploads."""
    root = roots.normalize(root)
    if roots.is_local(root):
        raise StoreError(
            f"{root} is a local folder: its writers remove what killed writers left as they go; "
            f"cutswap gc collects object storage (give file://{root} for a folder written through the "
            "object protocol)"
        )
    now = server_now(root) if now is None else now
    for stage in _children(root):
        if stage.endswith("/.work"):
            continue
        for store in _children(stage):
            yield from store_garbage(store, now)
    yield from _resume_garbage(root, now, resume_seconds)
    yield from _upload_garbage(root, now, upload_seconds)


def _children(prefix: str) -> list[str]:
    """The URLs of the prefixes directly under ``prefix``."""
    return sorted(roots.join(prefix, p.rsplit("/", 1)[-1]) for p in list_store(prefix)[0])


def _resume_garbage(root: str, now: datetime, resume_seconds: float) -> Iterator[Garbage]:
    """Resume states of trainings published since (their deletion failed) or untouched for
    ``resume_seconds`` (a key no run asks for any more)."""
    for work in _children(roots.join(root, "train", ".work")):
        name = work.rsplit("/", 1)[-1]
        published = any(m["path"].startswith(COMMIT) for m in list_store(roots.join(root, "train", name))[1])
        objects = _listed(work)
        age = _age(now, max((o[2] for o in objects.values()), default=None))
        if published or age >= resume_seconds:
            why = "its training was published" if published else f"untouched for {_duration(age)}"
            yield Garbage(
                work, f"resume state: {why}", len(objects), sum(o[0] for o in objects.values()), True
            )


def can_list_uploads(root: str) -> bool:
    """Whether incomplete multipart uploads under ``root`` are looked at: S3 roots, with boto3 at hand."""
    if roots.scheme(root) != "s3":
        return True
    try:
        import boto3  # noqa: F401
    except ImportError:
        return False
    return True


def _upload_garbage(root: str, now: datetime, upload_seconds: float) -> Iterator[Garbage]:
    """S3's incomplete multipart uploads under the root, started ``upload_seconds`` ago or more.

    obstore has no call to list them, so this uses boto3 (``pip install boto3``; the test extra has it),
    with the same environment (``AWS_*``). Without boto3 they are not looked at, and that is said.
    """
    if roots.scheme(root) != "s3" or not can_list_uploads(root):
        return
    import boto3

    bucket, _, prefix = root[len("s3://") :].partition("/")
    client = boto3.client("s3", endpoint_url=roots.s3_endpoint() or None)
    pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for upload in page.get("Uploads", []):
            age = _age(now, upload["Initiated"])
            if age < upload_seconds:
                continue
            parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            size = sum(p["Size"] for p in parts.get("Parts", []))
            yield Garbage(
                f"s3://{bucket}/{upload['Key']}",
                f"incomplete multipart upload, started {_duration(age)} ago",
                len(parts.get("Parts", [])),
                size,
                upload_id=upload["UploadId"],
            )


def delete(items: list[Garbage]) -> None:
    """Delete what ``store_garbage`` or ``root_garbage`` found: an attempt with its heartbeat, an upload
    by aborting it (best effort: what is left is found again next time)."""
    for item in items:
        with contextlib.suppress(Exception):
            if item.upload_id is not None:
                _abort(item)
            elif item.tree:
                roots.delete_tree(item.url)
                if item.url.rsplit("/", 1)[-1].startswith(ATTEMPT):
                    roots.delete(item.url + ALIVE)
            else:
                roots.delete(item.url)


def _abort(item: Garbage) -> None:
    import boto3

    bucket, _, key = item.url[len("s3://") :].partition("/")
    client = boto3.client("s3", endpoint_url=roots.s3_endpoint() or None)
    client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=item.upload_id)
