from __future__ import annotations

import numpy as np
import pytest

from cutswap.errors import StoreError
from cutswap.stores import build_store, is_complete, open_store, stage_key, write_array


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
