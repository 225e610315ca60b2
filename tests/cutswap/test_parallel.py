"""Shard-parallel precompute on a real local Dask cluster: the stores do not depend on the worker count.

(In-process work differs from worker processes in the last float16 bit of a few saliency values, because
torch uses another number of threads there and so sums in another order.)
"""

from __future__ import annotations

import numpy as np
import pytest

from cutswap import parallel
from cutswap.data.mvtec import scan_mvtec
from cutswap.data.textures import build_textures
from cutswap.parallel import dask_client, run_sharded, shard_ranges
from cutswap.settings import Settings
from cutswap.stages.cluster import cluster_category
from cutswap.stages.ingest import ingest_category
from cutswap.stages.pairs import pairs_category
from cutswap.stages.saliency import saliency_category
from cutswap.stores import open_store


def test_shard_ranges_cover_everything_once():
    assert shard_ranges(300, 128) == [(0, 128), (128, 256), (256, 300)]
    assert shard_ranges(0) == []


def _square(start: int, stop: int) -> list[int]:
    return [i * i for i in range(start, stop)]


def test_run_sharded_in_process_keeps_order():
    assert sum(run_sharded(_square, 10, None, shard=3), []) == [i * i for i in range(10)]


@pytest.mark.slow
def test_precompute_stores_identical_with_one_and_two_workers(tmp_path, monkeypatch):
    root = build_textures(
        tmp_path / "data", seed=2, image_size=64, n_train=10, n_test_good=2, n_test_defect=1
    )
    table = scan_mvtec(root, ["brick"])
    stores = {}
    for workers in (1, 2):
        settings = Settings.model_validate(
            {
                "storage_root": tmp_path / f"storage-{workers}",
                "dataset": {"name": "mvtec", "root": root, "image_size": 32},
                "saliency": {"backbone": "efficientnet_lite0", "batch_size": 3},
                "pairs": {"draws": 5},
                "train": {"device": "cpu"},
            }
        )
        with dask_client(workers=workers) as dask:
            ing, _ = ingest_category(settings, root, "brick", table)
            # shards of 4 images: 10 training images make 3 ranges, so 2 workers really split the work
            monkeypatch.setattr(parallel, "SHARD", 4)
            sal, _ = saliency_category(settings, ing, dask=dask)
            clu, _ = cluster_category(settings, sal, dask=dask)
            pai, _ = pairs_category(settings, clu, dask=dask)
            assert open_store(sal)["maps"].shards[0] == 4
            if dask is not None:
                assert dask._client is not None, "the cluster was never used"
        stores[workers] = (sal, clu, pai)
    for a, b in zip(stores[1], stores[2], strict=True):
        assert a.key == b.key
        ga, gb = open_store(a), open_store(b)
        for name in ga.array_keys():
            np.testing.assert_array_equal(ga[name][:], gb[name][:], err_msg=f"{a.stage}/{name}")
