"""``open_dataset``: where a built-in dataset may be built."""

from pathlib import Path

import pytest

from cutswap.data.datasets import open_dataset
from cutswap.errors import SettingsError

SMALL = {"image_size": 64, "n_train": 2, "n_test_good": 1, "n_test_defect": 1}


def test_a_mistyped_root_for_a_built_in_dataset_is_refused_and_left_uncreated(tmp_path: Path):
    typo = tmp_path / "elsewhere" / "textrues"
    with pytest.raises(SettingsError, match=r"dataset.root .*textrues does not exist; .*mkdir -p"):
        open_dataset("textures", typo, tmp_path / "storage" / "datasets", textures=SMALL)
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("where", ["under-storage", "existing"])
def test_a_built_in_dataset_is_built_under_storage_or_where_the_user_made_a_folder(
    tmp_path: Path, where: str
):
    builds = tmp_path / "storage" / "datasets"
    root = tmp_path / "storage" / "mine" if where == "under-storage" else tmp_path / "made"
    if where == "existing":
        root.mkdir()
    found, table = open_dataset("textures", root, builds, ["brick"], textures=SMALL)
    assert found == root.resolve() and set(table["category"]) == {"brick"}
