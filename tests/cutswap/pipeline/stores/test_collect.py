"""Collection's races, against the S3 server process: what a collector sees between its listing and its
reads must never make a live store garbage."""

from __future__ import annotations

import numpy as np

from cutswap import roots
from cutswap.pipeline.stores import StoreRef, publishing, write_array


def test_an_attempt_whose_heartbeat_vanished_after_the_listing_is_kept(bucket, monkeypatch):
    """A writer deletes its heartbeat right after its commit: a collector that listed the attempt before
    the commit, with its heartbeat, and then finds the heartbeat gone must not take it as silent (CI caught
    `cutswap gc` deleting a store committed that instant)."""
    from cutswap.pipeline.stores import collect, objects

    ref = StoreRef("cluster", "cat", "0123", roots.normalize(bucket))
    # An attempt left as a commit in flight leaves it: uploaded, its heartbeat still there, no marker yet.
    monkeypatch.setattr(objects, "_create_marker", lambda *a: None)
    with publishing(ref, {}) as group:
        write_array(group, "x", np.arange(3))
    monkeypatch.undo()
    listed = [p for p in objects.list_store(ref.path)[1] if p["path"].endswith(objects.ALIVE)]
    assert listed, "the attempt's heartbeat should still be there"
    real = roots.read_bytes
    monkeypatch.setattr(roots, "read_bytes", lambda url: None if url.endswith(objects.ALIVE) else real(url))
    assert collect.collect_garbage(ref.path, stale=0) == []  # heartbeat listed, then gone: kept
    monkeypatch.undo()
