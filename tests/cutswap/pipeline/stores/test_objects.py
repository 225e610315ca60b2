"""The object protocol against a real S3 server process: no partial store is ever served, commits survive
conflicting answers, and a root that ignores create-only writes is refused."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cutswap import roots
from cutswap.errors import StoreError
from cutswap.pipeline.stores import StoreRef, build_store, open_store, publishing, write_array

#: The obstore calls a commit makes (Zarr's writes through ``ObjectStore`` included).
_CALLS = ("list", "list_with_delimiter", "get", "head", "put", "delete")


def _three_shards(group) -> None:
    write_array(group, "x", np.arange(300, dtype=np.int32).reshape(300, 1) + 1, per_shard=128)


def _count_requests(monkeypatch, before) -> list[str]:
    """Call ``before(n)`` ahead of the n-th obstore request from now on; returns the requests' names."""
    import obstore

    made: list[str] = []
    for name in _CALLS:
        for variant in (name, f"{name}_async"):
            real = getattr(obstore, variant, None)
            if real is None:
                continue

            def wrapped(*args, _real=real, _name=variant, **kwargs):
                made.append(_name)
                before(len(made))
                return _real(*args, **kwargs)

            monkeypatch.setattr(obstore, variant, wrapped)
    return made


def test_a_chunk_deleted_at_any_point_of_a_commit_is_never_served(bucket, monkeypatch):
    """Fault injection: a shard object is deleted just before the n-th storage request after the writer's
    body (a collection by another host, a lagging listing, a paused process), for every n a commit makes.
    Whatever the point, the store is either not committed or refused by every reader; never read as fill
    values."""
    import obstore

    from cutswap.pipeline.stores import objects, publish

    real_delete = obstore.delete

    def commit(name: str, at: int | None) -> tuple[StoreRef, int, bool]:
        """Publish one store, deleting a shard before request ``at``; the requests made, and whether it
        committed."""
        ref = StoreRef("cluster", name, "0123", roots.normalize(bucket))
        made: list[str] = []

        def before(n: int) -> None:
            if n == at:
                real_delete(roots.object_store(location), "x/c/1/0")

        try:
            with publishing(ref, {}) as group:
                _three_shards(group)
                location = roots.location_of(group)
                made = _count_requests(monkeypatch, before)
        except StoreError as exc:
            assert "vanished" in str(exc) or "missing" in str(exc), exc
        finally:
            monkeypatch.undo()
        return ref, len(made), objects.latest_commit(ref.path) is not None

    _, requests, committed = commit("clean", None)
    assert committed and requests >= 5
    outcomes = []
    for at in range(1, requests + 1):
        ref, _, committed = commit(f"fault-{at}", at)
        outcomes.append(committed)
        if committed:
            publish._VERIFIED.clear()  # a new process
            with pytest.raises(StoreError, match="x/c/1/0 is missing"):
                open_store(ref)
    assert not all(outcomes)  # some faults are refused at the commit itself


def test_a_chunk_deleted_after_a_process_verified_the_store_is_an_error_when_read(any_root):
    """A process that verified a store (and cached that) reads a chunk deleted since as an error naming
    the store, not as fill values; a rerun then recomputes the store."""
    ref, _ = build_store(any_root, "cluster", "cat", {}, {}, _three_shards)
    group = open_store(ref)
    np.testing.assert_array_equal(group["x"][:5, 0], [1, 2, 3, 4, 5])
    location = roots.location_of(group)
    roots.delete(roots.join(location, "x/c/1/0"))
    again = open_store(ref)  # verified before: not listed again
    with pytest.raises(StoreError, match=rf"store {ref.path}: x/c/1/0 is missing"):
        again["x"][:]
    np.testing.assert_array_equal(again["x"][:128, 0], np.arange(1, 129))  # other shards still read


def test_a_store_whose_marker_lacks_an_object_its_digests_name_is_refused(bucket):
    """A marker written from a listing that had already lost an object agrees with what is left; the
    digests in ``zarr.json`` do not, and the check goes by them too."""
    import json

    import obstore

    from cutswap.pipeline.stores import objects, publish

    ref, _ = build_store(bucket, "cluster", "cat", {}, {}, _three_shards)
    marker = objects.latest_commit(ref.path)
    location = objects.attempt_url(ref.path, marker)
    obstore.delete(roots.object_store(location), "x/c/2/0")
    del marker["objects"]["x/c/2/0"]  # what the old commit recorded
    name = "commit-000000.json"
    obstore.put(roots.object_store(ref.path), name, json.dumps(marker).encode())
    publish._VERIFIED.clear()
    with pytest.raises(StoreError, match="x/c/2/0 is missing"):
        open_store(ref)


def test_a_conflicting_commit_answer_is_retried_until_the_marker_is_known(bucket, monkeypatch, caplog):
    """S3 answers 409 ConditionalRequestConflict to a conditional write racing another: the writer reads
    the marker back and retries; when another writer's marker lands meanwhile, theirs is kept."""
    import obstore

    from cutswap.pipeline.stores import objects

    monkeypatch.setattr(objects, "BACKOFF", (0.01, 0.01, 0.01))
    real_put = obstore.put
    conflicts = []

    def conflicting(store, path, data, **kwargs):
        if path.startswith("commit-") and len(conflicts) < 2:
            conflicts.append(path)
            raise RuntimeError("409 Conflict: ConditionalRequestConflict")
        return real_put(store, path, data, **kwargs)

    monkeypatch.setattr(obstore, "put", conflicting)
    ref = StoreRef("cluster", "cat", "0123", roots.normalize(bucket))
    with caplog.at_level(logging.INFO), publishing(ref, {"who": "me"}) as group:
        _three_shards(group)
    assert len(conflicts) == 2 and "retrying" in caplog.text
    assert open_store(ref).attrs["who"] == "me"

    # Another writer's marker lands while ours conflicts: ours is dropped, theirs is read.
    other = StoreRef("cluster", "dog", "0123", roots.normalize(bucket))
    with publishing(other, {"who": "them"}) as group:
        _three_shards(group)
    theirs = roots.read_bytes(roots.join(other.path, "commit-000000.json"))
    roots.delete(roots.join(other.path, "commit-000000.json"))
    conflicts.clear()

    def racing(store, path, data, **kwargs):
        if path.startswith("commit-") and not conflicts:
            conflicts.append(path)
            real_put(store, path, theirs, mode="create")  # theirs arrives first
            raise RuntimeError("409 Conflict: ConditionalRequestConflict")
        return real_put(store, path, data, **kwargs)

    monkeypatch.setattr(obstore, "put", racing)
    with publishing(other, {"who": "me"}, replace=True) as group:
        _three_shards(group)
    monkeypatch.setattr(obstore, "put", real_put)
    assert open_store(other).attrs["who"] == "them"
    assert len([p for p in _prefixes(other.path) if p.startswith("attempt-")]) == 1  # ours deleted


def _prefixes(folder: str) -> list[str]:
    import obstore

    found = obstore.list_with_delimiter(roots.object_store(folder))
    return [p.rstrip("/").rsplit("/", 1)[-1] for p in found["common_prefixes"]]


def test_the_probe_refuses_a_root_that_accepts_a_second_create(s3_server, tmp_path):
    """The probe creates its object twice: the server process refuses the second create, and so does a
    ``file://`` root; the same server behind a proxy that drops ``If-None-Match`` (as some gateways do)
    accepts it, and the root is refused in one line."""
    from tests.support.s3 import HeaderDroppingProxy

    bucket = s3_server.bucket()
    roots.check_reachable(bucket + "/cutswap")
    roots.check_reachable(f"file://{tmp_path}/root")
    with HeaderDroppingProxy(s3_server.port, "if-none-match") as proxy:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
            roots.object_store.cache_clear()
            with pytest.raises(StoreError) as info:
                roots.check_reachable(bucket + "/cutswap")
        roots.object_store.cache_clear()
    message = str(info.value)
    assert "\n" not in message and "accepted a second create-only write" in message
    assert proxy.dropped >= 2
    assert not [p for p in Path(tmp_path / "root").iterdir()]  # the probe was deleted
