from __future__ import annotations

import functools
import multiprocessing
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from cutswap import roots
from cutswap.errors import StoreError
from cutswap.pipeline.stores import (
    StoreRef,
    build_store,
    is_complete,
    open_store,
    publishing,
    stage_key,
    write_array,
)


def test_key_depends_on_settings_inputs_and_stage():
    base = stage_key("cluster", {"k": 3}, {"saliency": "abc"})
    assert base == stage_key("cluster", {"k": 3}, {"saliency": "abc"})
    assert base != stage_key("cluster", {"k": 4}, {"saliency": "abc"})
    assert base != stage_key("cluster", {"k": 3}, {"saliency": "abd"})
    assert base != stage_key("pairs", {"k": 3}, {"saliency": "abc"})


def test_build_store_publishes_then_reuses(any_root):
    calls = []

    def write(group):
        calls.append(1)
        write_array(group, "x", np.arange(300, dtype=np.int32).reshape(300, 1), per_shard=128)

    ref, computed = build_store(any_root, "cluster", "cat", {"k": 3}, {}, write)
    assert computed and is_complete(ref)
    np.testing.assert_array_equal(open_store(ref)["x"][:, 0], np.arange(300))
    ref2, computed2 = build_store(any_root, "cluster", "cat", {"k": 3}, {}, write)
    assert ref2 == ref and not computed2 and len(calls) == 1
    _, forced = build_store(any_root, "cluster", "cat", {"k": 3}, {}, write, mode="force")
    assert forced and len(calls) == 2
    assert open_store(ref).attrs["provenance"]["seconds"] >= 0


def test_a_store_names_its_writer_and_slurm_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    ref, _ = build_store(
        tmp_path, "cluster", "cat", {"k": 3}, {}, lambda g: write_array(g, "x", np.zeros((2, 1)))
    )
    writer = open_store(ref).attrs["provenance"]["writer"]
    assert writer == {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": "4242"}


def _slow_write(calls: str, group) -> None:
    with open(calls, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(2.0)
    write_array(group, "x", np.arange(10))


def _build(root: str, calls: str) -> bool:
    return build_store(Path(root), "cluster", "cat", {"k": 3}, {}, functools.partial(_slow_write, calls))[1]


def test_two_processes_needing_one_store_compute_it_once(tmp_path):
    """The second writer of a key waits for the first and reuses its store (two runs of one preset)."""
    calls = tmp_path / "calls.txt"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        first = pool.apply_async(_build, (str(tmp_path), str(calls)))
        while not calls.is_file():  # the first is computing (it holds the key)
            time.sleep(0.1)
        second = pool.apply_async(_build, (str(tmp_path), str(calls)))
        computed = sorted([first.get(120), second.get(120)])
    assert computed == [False, True]
    assert len(calls.read_text().split()) == 1
    entries = _entries(tmp_path / "cluster")
    assert len(entries) == 1 and entries[0].startswith("cat-")  # one store; no temporary, no lock file


def _listed(root: str, under: str = "") -> list[str]:
    """Every file or object under a root (relative paths), whatever its kind."""
    if roots.is_local(root):
        base = Path(root) / under
        return (
            sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
            if base.exists()
            else []
        )
    import obstore

    return sorted(m["path"] for m in obstore.list(roots.object_store(roots.join(root, under))).collect())


def test_failed_write_leaves_nothing_visible(any_root):
    def write(group):
        write_array(group, "x", np.zeros((4, 2)))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_store(any_root, "cluster", "cat", {}, {}, write)
    assert _listed(any_root, "cluster") == []


def test_reuse_mode_requires_a_complete_store(any_root):
    with pytest.raises(StoreError, match="include 'cluster' in the stages"):
        build_store(any_root, "cluster", "cat", {}, {}, lambda g: None, mode="reuse")


def test_incomplete_store_is_refused(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "cluster" / "half-0"), mode="w").attrs["complete"] = False
    with pytest.raises(StoreError, match="missing or incomplete"):
        open_store(StoreRef("cluster", "half", "0", str(tmp_path)))


def test_a_store_tree_copied_to_another_root_is_reused_whole(any_root, tmp_path, s3_server):
    """Attrs record inputs by key, not path: a tree copied elsewhere (a disk, a bucket) resolves as is."""
    first, _ = build_store(any_root, "ingest", "brick", {}, {}, _images)
    second, _ = build_store(any_root, "saliency", "brick", {}, {"ingest": first}, _images)
    other = str(tmp_path / "copy") if not roots.is_local(any_root) else s3_server.bucket() + "/moved"
    for path in _listed(any_root):
        roots.write_bytes(roots.join(other, path), roots.read_bytes(roots.join(any_root, path)))
    calls = []
    again, computed = build_store(other, "ingest", "brick", {}, {}, lambda g: calls.append(1))
    assert not computed and again.key == first.key and again.digest == first.digest and not calls
    down, computed = build_store(other, "saliency", "brick", {}, {"ingest": again}, lambda g: calls.append(1))
    assert not computed and down.key == second.key and not calls
    recorded = StoreRef.recorded(open_store(down).attrs["inputs"]["ingest"], down.root)
    assert recorded == again and "root" not in open_store(down).attrs["inputs"]["ingest"]


def test_unwritable_root_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write under"):
        build_store(blocker, "cluster", "cat", {}, {}, lambda g: None)


# --- publishing: races, replacement, leftovers ----------------------------------------------------------


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_concurrent_writers_of_one_key_end_with_one_store(any_root):
    """Two writers of the same key, interleaved: the first to publish wins, the second's copy is dropped."""
    ref = StoreRef("cluster", "cat", "0123", roots.normalize(any_root))
    with publishing(ref, {"who": "outer"}) as outer:
        write_array(outer, "x", np.arange(10))
        with publishing(ref, {"who": "inner"}) as inner:
            write_array(inner, "x", np.arange(10))
        assert is_complete(ref)
    assert open_store(ref).attrs["who"] == "inner"
    np.testing.assert_array_equal(open_store(ref)["x"][:], np.arange(10))
    if roots.is_local(any_root):
        assert _entries(Path(ref.path).parent) == ["cat-0123"]  # no temporary directory, no lock file
    else:
        assert {p.split("/")[0] for p in _listed(ref.path)} == {"commit-000000.json", _attempt(ref)}


def _attempt(ref) -> str:
    from cutswap.pipeline.stores import objects

    return "attempt-" + objects.latest_commit(ref.path)["attempt"]


def test_forced_replacement_leaves_no_old_copy(any_root, monkeypatch):
    monkeypatch.setenv("CUTSWAP_GC_STALE_SECONDS", "0")
    monkeypatch.setenv("CUTSWAP_KEEP_SUPERSEDED_HOURS", "0")
    ref = StoreRef("cluster", "cat", "0123", roots.normalize(any_root))
    for who in ("first", "second", "third"):
        with publishing(ref, {"who": who}, replace=True) as group:
            write_array(group, "x", np.arange(3))
    assert open_store(ref).attrs["who"] == "third"
    if roots.is_local(any_root):
        assert _entries(Path(ref.path).parent) == ["cat-0123"]
    else:  # generations 0, 1, 2 committed; 0 and its marker collected by the writer of 2
        listed = {p.split("/")[0] for p in _listed(ref.path)}
        assert {p for p in listed if p.startswith("commit-")} == {"commit-000001.json", "commit-000002.json"}
        assert len({p for p in listed if p.startswith("attempt-")}) == 2


def test_incomplete_directory_at_the_final_name_is_replaced(tmp_path):
    ref = StoreRef("cluster", "cat", "0123", str(tmp_path))
    (Path(ref.path) / "x").mkdir(parents=True)  # e.g. a store whose zarr.json was deleted by hand
    with publishing(ref, {}) as group:
        write_array(group, "x", np.arange(3))
    assert is_complete(ref)
    assert _entries(Path(ref.path).parent) == ["cat-0123"]


def test_sixteen_concurrent_commits_of_one_key_one_wins(bucket):
    """16 writers of one key commit at the same instant (a barrier holds each until all have uploaded):
    the server's conditional PUT lets exactly one marker in, and every reader sees that one store."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(16)

    def writer(who: int):
        def write(group):
            write_array(group, "x", np.arange(10))
            group.attrs["who"] = who
            barrier.wait(60)

        return build_store(bucket, "cluster", "cat", {}, {}, write)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(writer, range(16)))
    refs = {ref for ref, _ in results}
    assert len(refs) == 1  # same key, same digest: the stores are equal, whoever won
    ref = refs.pop()
    listed = _listed(ref.path)
    assert [p for p in listed if p.startswith("commit-")] == ["commit-000000.json"]
    assert {p.split("/")[0] for p in listed if p.startswith("attempt-")} == {
        _attempt(ref)
    }  # losers cleaned up
    winner = open_store(ref).attrs["who"]
    assert all(
        open_store(StoreRef(*[ref.stage, ref.name, ref.key, ref.root])).attrs["who"] == winner
        for _ in range(4)
    )


# --- storage errors --------------------------------------------------------------------------------------


def _failing_put(monkeypatch, error):
    import zarr.storage._local as local

    original = local._put

    def put(path, value, exclusive=False):
        if path.name != "zarr.json":  # let the group be created, fail on the first chunk
            raise error(path)
        return original(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", put)


def test_disk_full_is_a_store_error_naming_the_path(tmp_path, monkeypatch):
    import errno

    _failing_put(monkeypatch, lambda path: OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(StoreError) as info:
        build_store(tmp_path, "cluster", "cat", {}, {}, lambda g: write_array(g, "x", np.ones((4, 2))))
    message = str(info.value)
    assert f"writing {tmp_path / 'cluster' / 'cat-'}" in message and "No space left on device" in message
    assert "disk or quota is full" in message
    assert _entries(tmp_path / "cluster") == []


def test_permission_denied_is_a_store_error_naming_the_file(tmp_path, monkeypatch):
    import errno

    _failing_put(monkeypatch, lambda path: PermissionError(errno.EACCES, "Permission denied", str(path)))
    with pytest.raises(StoreError) as info:
        build_store(tmp_path, "cluster", "cat", {}, {}, lambda g: write_array(g, "x", np.ones((4, 2))))
    message = str(info.value)
    assert "Permission denied (" in message and "/x/c/0/0" in message and "make " in message
    assert _entries(tmp_path / "cluster") == []


def test_other_errors_of_the_body_pass_through_unchanged(tmp_path):
    def write(group):
        (tmp_path / "input-that-is-missing.bin").read_bytes()

    with pytest.raises(FileNotFoundError):
        build_store(tmp_path / "storage", "cluster", "cat", {}, {}, write)
    assert _entries(tmp_path / "storage" / "cluster") == []


def test_a_real_write_failure_from_the_os(tmp_path):
    """A file-size limit (``ulimit -f``) makes the kernel refuse a write deep inside Zarr,
    like a full disk."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import resource, signal, sys
        import numpy as np
        from cutswap.errors import StoreError
        from cutswap.pipeline.stores import build_store, write_array
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))
        noise = np.random.default_rng(0).random((64, 64))
        try:
            build_store(sys.argv[1], "cluster", "cat", {}, {}, lambda g: write_array(g, "x", noise))
        except StoreError as exc:
            print(exc)
            sys.exit(2)
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert f"writing {tmp_path / 'cluster' / 'cat-'}" in done.stdout and "File too large" in done.stdout
    assert _entries(tmp_path / "cluster") == []


@pytest.mark.skipif(
    not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0, reason="root"
)
def test_read_only_stage_folder(tmp_path):
    stage = tmp_path / "cluster"
    stage.mkdir()
    stage.chmod(0o500)
    try:
        with pytest.raises(StoreError, match=f"cannot write under {stage}: Permission denied"):
            build_store(tmp_path, "cluster", "cat", {}, {}, lambda g: None)
    finally:
        stage.chmod(0o700)


def _flip(path: Path, offset: int, count: int = 200) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, min(offset + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _chunk_files(ref) -> list[Path]:
    return sorted(p for p in (Path(ref.path) / "images" / "c").rglob("*") if p.is_file())


def _images(group, values: np.ndarray | None = None):
    values = np.arange(64 * 8 * 8 * 3) if values is None else values
    write_array(group, "images", (values % 251).astype(np.uint8).reshape(64, 8, 8, 3), per_shard=32)


def test_a_corrupted_chunk_is_named_and_the_store_recomputed(tmp_path, caplog):
    # The case: 200 bytes flipped inside an image chunk decoded without error and were reused.
    ref, _ = build_store(tmp_path, "ingest", "brick", {}, {}, _images)
    shard = _chunk_files(ref)[-1]
    _flip(shard, shard.stat().st_size // 3)
    with pytest.raises(
        StoreError, match=rf"store {ref.path} is corrupt: images/c/\S+ does not match its checksum"
    ):
        open_store(ref)
    again, computed = build_store(tmp_path, "ingest", "brick", {}, {}, _images)
    assert computed and again == ref
    assert "is corrupt (images/c/" in caplog.text and "recomputing it" in caplog.text
    np.testing.assert_array_equal(open_store(again)["images"][:].ravel(), np.arange(64 * 8 * 8 * 3) % 251)


@pytest.mark.parametrize(("damage", "problem"), [("delete", "is missing"), ("add", "was added after")])
def test_a_missing_or_added_file_is_damage_too(tmp_path, damage, problem):
    ref, _ = build_store(tmp_path, "ingest", "brick", {}, {}, _images)
    if damage == "delete":
        _chunk_files(ref)[0].unlink()
    else:
        (Path(ref.path) / "stray.bin").write_bytes(b"x")
    with pytest.raises(StoreError, match=problem):
        open_store(ref)


def test_downstream_keys_follow_their_inputs_content(tmp_path):
    def downstream(upstream):
        return build_store(tmp_path, "saliency", "brick", {}, {"ingest": upstream}, _images)[0].key

    first, _ = build_store(tmp_path, "ingest", "brick", {}, {}, _images)
    key = downstream(first)
    same, computed = build_store(tmp_path, "ingest", "brick", {}, {}, _images, mode="force")
    assert computed and same.digest == first.digest and downstream(same) == key  # identical bytes: reused
    other, _ = build_store(
        tmp_path, "ingest", "brick", {}, {}, functools.partial(_images, values=np.ones(12288)), mode="force"
    )
    assert other.key == first.key and other.digest != first.digest
    assert downstream(other) != key  # other bytes under the same upstream key: new downstream keys


def test_a_store_without_checksums_is_recomputed(tmp_path):
    import json

    ref, _ = build_store(tmp_path, "ingest", "brick", {}, {}, _images)
    meta = Path(ref.path) / "zarr.json"
    doc = json.loads(meta.read_text())
    del doc["attributes"]["digests"]
    meta.write_text(json.dumps(doc))
    assert build_store(tmp_path, "ingest", "brick", {}, {}, _images)[1]


# --- object storage: damage, crashes between upload and commit, garbage ---------------------------------


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("replace", "does not match its checksum"),  # same size, other ETag: the content decides
        ("resize", "was replaced after its commit"),
        ("delete", "is missing"),
        ("add", "was added after its commit"),
    ],
)
def test_damage_to_a_committed_object_store_is_named_and_recomputed(bucket, damage, problem, caplog):
    import obstore

    ref, _ = build_store(bucket, "ingest", "brick", {}, {}, _images)
    attempt = roots.object_store(roots.join(ref.path, _attempt(ref)))
    chunk = next(p for p in _listed(roots.join(ref.path, _attempt(ref))) if p.startswith("images/c/"))
    if damage == "replace":
        data = bytearray(bytes(obstore.get(attempt, chunk).bytes()))
        data[len(data) // 3] ^= 0xFF
        obstore.put(attempt, chunk, bytes(data))
    elif damage == "resize":
        obstore.put(attempt, chunk, bytes(obstore.get(attempt, chunk).bytes()) + b"\0")
    elif damage == "delete":
        obstore.delete(attempt, chunk)
    else:
        obstore.put(attempt, "stray.bin", b"x")
    from cutswap.pipeline.stores import publish

    publish._VERIFIED.clear()  # another process, as a later run would be
    with pytest.raises(StoreError, match=rf"store {ref.path} is corrupt: .*{problem}"):
        open_store(ref)
    again, computed = build_store(bucket, "ingest", "brick", {}, {}, _images)
    assert computed and again == ref and "recomputing it" in caplog.text
    np.testing.assert_array_equal(open_store(again)["images"][:].ravel(), np.arange(64 * 8 * 8 * 3) % 251)


_KILLED_BEFORE_COMMIT = """
import os, signal, sys
import numpy as np
from cutswap.pipeline.stores import build_store, objects, write_array
objects._commit = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # uploaded, never committed
build_store(sys.argv[1], "cluster", "cat", {}, {}, lambda g: write_array(g, "x", np.arange(10)))
"""


def test_a_writer_killed_between_upload_and_commit_leaves_nothing_readable(bucket):
    """The orphan is invisible at once, and collected once silent for the limit its own heartbeat
    recorded (8 s here), not the collector's (0 s)."""
    import signal
    import subprocess
    import sys

    from cutswap.pipeline.stores import collect

    env = {**os.environ, "CUTSWAP_GC_STALE_SECONDS": "8"}
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_BEFORE_COMMIT, bucket], capture_output=True, text=True, env=env
    )
    died = time.monotonic()
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ref = StoreRef("cluster", "cat", stage_key("cluster", {}, {}), roots.normalize(bucket))
    orphan = {p.split("/")[0] for p in _listed(ref.path)}
    assert any(p.startswith("attempt-") and "/" not in p for p in orphan)  # uploaded ...
    assert not is_complete(ref)  # ... and invisible
    with pytest.raises(StoreError, match="missing or incomplete"):
        open_store(ref)
    again, computed = build_store(
        bucket, "cluster", "cat", {}, {}, lambda g: write_array(g, "x", np.arange(10))
    )
    assert computed and again.key == ref.key
    np.testing.assert_array_equal(open_store(again)["x"][:], np.arange(10))

    def attempts() -> set[str]:
        listed = {q.split("/")[0] for q in _listed(ref.path)}
        return {p for p in listed if p.startswith("attempt-") and not p.endswith(".alive")}

    assert len(attempts()) == 2  # the rerun left the young orphan alone
    assert collect.collect_garbage(ref.path, stale=0) == []  # its heartbeat asked for 8 s
    time.sleep(max(0.0, died + 9 - time.monotonic()))
    removed = collect.collect_garbage(ref.path, stale=0)
    assert len(removed) == 1 and removed[0] != _attempt(again)
    assert {p.split("/")[0] for p in _listed(ref.path)} == {"commit-000000.json", _attempt(again)}


def test_a_committed_tree_copied_to_a_file_url_root_is_reused_by_its_content(bucket, tmp_path):
    """ETags are no content identity across servers (a file:// root's derive from inodes, a multipart
    upload's from parts): a committed tree copied object by object is checked by its sha256 digests and
    reused whole; a flipped byte in the copy is still named."""
    import obstore

    from cutswap.pipeline.stores import objects, publish

    ref, _ = build_store(bucket, "ingest", "brick", {}, {}, _images)
    other = roots.normalize(f"file://{tmp_path}/copy")
    for path in _listed(ref.root):
        roots.write_bytes(roots.join(other, path), roots.read_bytes(roots.join(ref.root, path)))
    moved = StoreRef(ref.stage, ref.name, ref.key, other)
    marker = objects.latest_commit(moved.path)
    copied = objects._objects(objects.attempt_url(moved.path, marker))
    assert copied.keys() == marker["objects"].keys() and copied != marker["objects"]  # other ETags
    publish._VERIFIED.clear()
    calls = []
    again, computed = build_store(other, "ingest", "brick", {}, {}, lambda g: calls.append(1))
    assert not computed and not calls and again.digest == ref.digest
    attempt = roots.object_store(objects.attempt_url(moved.path, marker))
    chunk = next(p for p in copied if p.startswith("images/c/"))
    data = bytearray(bytes(obstore.get(attempt, chunk).bytes()))
    data[0] ^= 0xFF
    obstore.put(attempt, chunk, bytes(data))
    publish._VERIFIED.clear()
    with pytest.raises(StoreError, match=f"{chunk} does not match its checksum"):
        open_store(moved)


def test_a_reference_reads_its_generation_until_the_period_after_its_supersession(bucket, monkeypatch):
    """A forced recompute commits generation 1; a reference to generation 0 (by its digest) still opens
    generation 0, until the period recorded in generation 1's marker has passed and a collector ran."""
    from cutswap.pipeline.stores import collect, objects, publish

    monkeypatch.setenv("CUTSWAP_KEEP_SUPERSEDED_HOURS", str(3 / 3600))  # 3 s
    refs = []
    for value in (0, 1):
        ref, _ = build_store(
            bucket, "cluster", "cat", {}, {}, lambda g, v=value: write_array(g, "x", np.full(3, v)), "force"
        )
        refs.append(ref)
    first, second = refs
    assert first.digest != second.digest and first.key == second.key
    assert objects.latest_commit(first.path)["keep_superseded_seconds"] == pytest.approx(3)
    publish._VERIFIED.clear()
    np.testing.assert_array_equal(open_store(first)["x"][:], [0, 0, 0])  # its own generation ...
    np.testing.assert_array_equal(open_store(second)["x"][:], [1, 1, 1])  # ... not the newest
    assert collect.collect_garbage(first.path, stale=0) == []  # superseded less than 3 s ago
    time.sleep(3.5)
    removed = collect.collect_garbage(first.path, stale=0)
    assert (
        len(removed) == 1
        and f"attempt-{objects.commit_of(first.path, second.digest)['attempt']}" not in removed
    )
    assert [p for p in _listed(first.path) if p.startswith("commit-")] == ["commit-000001.json"]
    publish._VERIFIED.clear()
    with pytest.raises(StoreError, match=f"digest {first.digest}\\) was superseded and collected"):
        open_store(first)
    np.testing.assert_array_equal(open_store(second)["x"][:], [1, 1, 1])


def test_a_writer_that_may_have_lost_its_attempt_does_not_commit(bucket, monkeypatch):
    """A writer whose heartbeat fell silent past the limit (a paused process) refuses to commit; so does
    one whose attempt lacks an object it wrote (collected by another host meanwhile)."""
    from cutswap import atomic

    ref = StoreRef("cluster", "cat", "0123", roots.normalize(bucket))
    monkeypatch.setattr(atomic.Heartbeat, "longest_silence", lambda self: atomic.silence_limit() + 1)
    with pytest.raises(StoreError, match=r"heartbeat was silent for \d+ s"), publishing(ref, {}) as group:
        write_array(group, "x", np.arange(3))
    monkeypatch.undo()
    vanished = pytest.raises(StoreError, match="x/zarr.json vanished from its attempt")
    with vanished, publishing(ref, {}) as group:
        write_array(group, "x", np.arange(3))
        roots.delete(roots.join(roots.location_of(group), "x/zarr.json"))
    assert not is_complete(ref) and _listed(ref.path) == []  # nothing committed, attempts discarded


def test_a_commit_whose_answer_was_lost_is_read_back(bucket, monkeypatch):
    """The marker's PUT succeeded but its answer never came (a timeout): the marker names our attempt, so
    the store is committed. When the marker is absent and cannot be read either, the attempt is left for
    collection, not deleted (it may be in use)."""
    import obstore

    from cutswap.pipeline.stores import collect, objects

    real_put = obstore.put

    def put_then_fail(store, path, data, **kwargs):
        if path.startswith("commit-"):
            real_put(store, path, data, **kwargs)
            raise ConnectionError("answer lost")
        return real_put(store, path, data, **kwargs)

    ref = StoreRef("cluster", "cat", "0123", roots.normalize(bucket))
    monkeypatch.setattr(objects, "BACKOFF", (0.01, 0.01))
    monkeypatch.setenv("CUTSWAP_GC_STALE_SECONDS", "0")  # what the writer's heartbeat records
    monkeypatch.setattr(obstore, "put", put_then_fail)
    with publishing(ref, {}) as group:
        write_array(group, "x", np.arange(3))
    np.testing.assert_array_equal(open_store(ref)["x"][:], np.arange(3))

    def fail(store, path, data, **kwargs):
        if path.startswith("commit-"):
            raise ConnectionError("no answer")
        return real_put(store, path, data, **kwargs)

    other = StoreRef("cluster", "dog", "0123", roots.normalize(bucket))
    monkeypatch.setattr(obstore, "put", fail)
    with pytest.raises(StoreError, match="cannot commit .*no answer"), publishing(other, {}) as group:
        write_array(group, "x", np.arange(3))
    assert not is_complete(other)
    assert [p for p in _listed(other.path) if p.startswith("attempt-") and "/" in p]  # left, not deleted
    monkeypatch.setattr(obstore, "put", real_put)
    assert len(collect.collect_garbage(other.path)) == 1


def test_an_unreachable_endpoint_is_one_line_within_seconds(monkeypatch):
    from tests.support.s3 import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        roots.check_reachable("s3://nowhere/cutswap")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "\n" not in message and "s3://nowhere/cutswap" in message and "cannot write there" in message


def test_digests_hashed_as_written_equal_the_bytes_the_server_holds(bucket):
    """What the writer hashed on the way out (its own writes, a checkpoint) is what a read-back hashes."""
    from cutswap.pipeline.stores import objects, put_file

    def write(group):
        _images(group)
        put_file(group, "checkpoint.pt", b"\x00weights" * 1000)

    ref, _ = build_store(bucket, "train", "brick", {}, {}, write)
    attrs = open_store(ref).attrs
    assert "checkpoint.pt" in attrs["digests"]
    assert objects.file_digests(roots.join(ref.path, _attempt(ref))) == attrs["digests"]
