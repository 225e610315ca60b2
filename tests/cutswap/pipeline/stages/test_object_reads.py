"""What the pipeline reads from object storage: the commit of a sharded store reads none of its shards back
(their writers hashed them), and a job needing some items of the ingest store reads only their chunks."""

from __future__ import annotations

import numpy as np
import pytest

from cutswap import roots
from cutswap.errors import StoreError
from cutswap.pipeline import parallel
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.cluster import cluster_category
from cutswap.pipeline.stages.pairs import pairs_category
from cutswap.pipeline.stores import build_store, objects, open_store, publish, write_array
from tests.support.counting_proxy import CountingProxy

LEVELS = ["layer1", "layer4"]


def _maps(n: int, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, len(LEVELS), size, size)).astype(np.float16)


def _attempt(ref) -> str:
    return objects.attempt_url(ref.path, objects.latest_commit(ref.path))


@pytest.fixture
def sharded(bucket, monkeypatch):
    """A saliency store and the cluster and pairs stores computed from it in three shard ranges (4 items
    per shard), each written by its own ``_shard`` call; the paths every ``obstore.get`` of this process
    asked for meanwhile."""
    import obstore

    monkeypatch.setattr(parallel, "SHARD", 4)
    maps = _maps(10)
    saliency, _ = build_store(
        bucket, "saliency", "noise", {"n": 10}, {}, lambda g: write_array(g, "maps", maps),
        extra_attrs={"levels": LEVELS},
    )  # fmt: skip
    asked: list[str] = []
    get = obstore.get

    def counting_get(store, path, *args, **kwargs):
        asked.append(path)
        return get(store, path, *args, **kwargs)

    monkeypatch.setattr(obstore, "get", counting_get)
    settings = Settings(storage_root=bucket)
    cluster, _ = cluster_category(settings, saliency)
    pairs, _ = pairs_category(settings, cluster)
    monkeypatch.setattr(obstore, "get", get)
    return settings, saliency, cluster, pairs, asked


def test_the_commit_of_a_sharded_store_reads_no_shard_back(sharded):
    _, _, cluster, pairs, asked = sharded
    for ref, array in ((cluster, "rank"), (pairs, "boxes")):
        listed = objects._objects(_attempt(ref))
        shards = [p for p in listed if p.startswith(f"{array}/c/")]
        assert len(shards) == 3, listed  # three ranges, so three shard objects, written by three calls
    read_back = [p for p in asked if "/c/" in p]
    assert read_back == [], f"the commits read shards back: {read_back[:5]}"


def test_the_shard_writers_digests_are_the_bytes_the_server_holds(sharded):
    """What the shard writers hashed is what a fresh read-back of every object hashes."""
    _, _, cluster, pairs, _ = sharded
    for ref in (cluster, pairs):
        attrs = open_store(ref).attrs
        assert any("/c/" in path for path in attrs["digests"])
        assert objects.file_digests(_attempt(ref)) == attrs["digests"]


def test_a_sharded_store_is_reused_and_a_corrupted_shard_is_still_caught(sharded, caplog):
    import obstore

    settings, saliency, cluster, _, _ = sharded
    publish._VERIFIED.clear()  # another process, as a later run would be
    again, computed = cluster_category(settings, saliency)
    assert again == cluster and not computed

    attempt = roots.object_store(_attempt(cluster))
    shard = "rank/c/1/0/0/0"
    data = bytearray(bytes(obstore.get(attempt, shard).bytes()))
    data[len(data) // 2] ^= 0xFF  # same size, another ETag: the recorded digests decide
    obstore.put(attempt, shard, bytes(data))
    publish._VERIFIED.clear()
    with pytest.raises(StoreError, match=rf"corrupt: .*{shard}"):
        open_store(cluster)
    _, computed = cluster_category(settings, saliency)
    assert computed and "recomputing it" in caplog.text


@pytest.fixture
def through_proxy(s3_server, monkeypatch):
    """This process's S3 requests go through a ``CountingProxy`` from here on (the stores opened before
    stay cached with the direct endpoint; the cache is emptied on both sides)."""
    with CountingProxy(s3_server.port) as proxy:
        roots.object_store.cache_clear()
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        try:
            yield proxy
        finally:
            roots.object_store.cache_clear()


def _ingest(root: str, images: np.ndarray, train: np.ndarray):
    """An ingest store whose rows ``train`` are the train split and every other row a test image."""

    def write(group):
        write_array(group, "images", images)
        write_array(group, "masks", np.zeros(images.shape[:3], bool))
        group.attrs["samples"] = [
            {
                "split": "train" if i in set(train.tolist()) else "test",
                "label": 0,
                "defect_type": "good",
                "image_path": f"{i}.png",
                "mask_path": None,
            }
            for i in range(len(images))
        ]

    return build_store(root, "ingest", "noise", {"n": len(images)}, {}, write)[0]


class _Images(Exception):
    def __init__(self, images: np.ndarray) -> None:
        self.images = images


def test_a_training_reads_only_its_splits_chunks_of_the_ingest_images(bucket, through_proxy, monkeypatch):
    """Noise does not compress, so each image's chunk holds about its own size: a job that read one chunk
    more than its train split's would read more than the split's images plus one. The one image of slack
    is the metadata the job reads besides (the stores' listings and ``zarr.json``, their digests
    included: about 32 kB here), so the images are large enough for it to fit."""
    from cutswap.pipeline.settings import TrainSettings
    from cutswap.pipeline.stages import train as train_stage

    images = np.random.default_rng(1).integers(0, 256, (24, 160, 160, 3), dtype=np.uint8)
    split = np.array([2, 9, 10, 21])
    ingest = _ingest(bucket, images, split)

    def stop(images, **_):  # what the job would train on, then no training
        raise _Images(images)

    monkeypatch.setattr(train_stage, "train_classifier", stop)
    settings = Settings(storage_root=bucket, train=TrainSettings(steps=1, batch_size=2, device="cpu"))
    through_proxy.reset()
    with pytest.raises(_Images) as got:
        train_stage.train_run(settings, ingest, "cutpaste", 0)
    np.testing.assert_array_equal(got.value.images, images[split])
    item = images[0].nbytes
    assert len(split) * item <= through_proxy.read < (len(split) + 1) * item, (through_proxy.read, item)


def test_read_rows_reads_only_the_chunks_of_its_rows(bucket, through_proxy):
    from cutswap.pipeline.readers import read_rows

    images = np.random.default_rng(2).integers(0, 256, (24, 64, 64, 3), dtype=np.uint8)
    ingest = _ingest(bucket, images, np.arange(24))
    array = open_store(ingest)["images"]
    for rows in (np.array([17, 3, 5]), np.arange(24), np.array([], dtype=np.int64)):
        through_proxy.reset()
        np.testing.assert_array_equal(read_rows(array, rows), images[rows])
        item = images[0].nbytes
        assert len(rows) * item <= through_proxy.read < (len(rows) + 1) * item, (rows, through_proxy.read)
