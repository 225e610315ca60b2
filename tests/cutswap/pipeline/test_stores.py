from __future__ import annotations

import functools
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

from cutswap.errors import StoreError
from cutswap.pipeline.stores import (
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


def test_build_store_publishes_then_reuses(tmp_path):
    calls = []

    def write(group):
        calls.append(1)
        write_array(group, "x", np.arange(300, dtype=np.int32).reshape(300, 1), per_shard=128)

    ref, computed = build_store(tmp_path, "cluster", "cat", {"k": 3}, {}, write)
    assert computed and is_complete(ref.path)
    np.testing.assert_array_equal(open_store(ref)["x"][:, 0], np.arange(300))
    ref2, computed2 = build_store(tmp_path, "cluster", "cat", {"k": 3}, {}, write)
    assert ref2 == ref and not computed2 and len(calls) == 1
    _, forced = build_store(tmp_path, "cluster", "cat", {"k": 3}, {}, write, mode="force")
    assert forced and len(calls) == 2
    assert open_store(ref).attrs["provenance"]["seconds"] >= 0


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


def test_failed_write_leaves_nothing_visible(tmp_path):
    def write(group):
        write_array(group, "x", np.zeros((4, 2)))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_store(tmp_path, "cluster", "cat", {}, {}, write)
    assert list((tmp_path / "cluster").iterdir()) == []


def test_reuse_mode_requires_a_complete_store(tmp_path):
    with pytest.raises(StoreError, match="include 'cluster' in the stages"):
        build_store(tmp_path, "cluster", "cat", {}, {}, lambda g: None, mode="reuse")


def test_incomplete_store_is_refused(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "half"), mode="w").attrs["complete"] = False
    with pytest.raises(StoreError, match="missing or incomplete"):
        open_store(tmp_path / "half")


def test_unwritable_root_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write under"):
        build_store(blocker, "cluster", "cat", {}, {}, lambda g: None)


# --- publishing: races, replacement, leftovers ----------------------------------------------------------


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_concurrent_writers_of_one_key_end_with_one_store(tmp_path):
    """Two writers of the same key, interleaved: the first to publish wins, the second's copy is dropped."""
    final = tmp_path / "cluster" / "cat-0123"
    with publishing(final, {"who": "outer"}) as outer:
        write_array(outer, "x", np.arange(10))
        with publishing(final, {"who": "inner"}) as inner:
            write_array(inner, "x", np.arange(10))
        assert is_complete(final)
    assert open_store(final).attrs["who"] == "inner"
    np.testing.assert_array_equal(open_store(final)["x"][:], np.arange(10))
    assert _entries(final.parent) == ["cat-0123"]  # no temporary directory, no lock file


def test_forced_replacement_leaves_no_old_copy(tmp_path):
    final = tmp_path / "cluster" / "cat-0123"
    for who in ("first", "second"):
        with publishing(final, {"who": who}, replace=True) as group:
            write_array(group, "x", np.arange(3))
    assert open_store(final).attrs["who"] == "second"
    assert _entries(final.parent) == ["cat-0123"]


def test_incomplete_directory_at_the_final_name_is_replaced(tmp_path):
    final = tmp_path / "cluster" / "cat-0123"
    (final / "x").mkdir(parents=True)  # e.g. a store whose zarr.json was deleted by hand
    with publishing(final, {}) as group:
        write_array(group, "x", np.arange(3))
    assert is_complete(final)
    assert _entries(final.parent) == ["cat-0123"]


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
    """A file-size limit (``ulimit -f``) makes the kernel refuse a write deep inside Zarr, like a full disk."""
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
