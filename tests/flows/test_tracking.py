"""``cutswap run`` with the trackers on: a real ``mlflow server`` process on 127.0.0.1 (its own
environment, ``tests.support.mlflow``) read back through MLflow's client, and TensorBoard's event files read
back with TensorBoard's reader; a rerun that reuses every training logs every row again."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import zarr

from cutswap.data.builtin.textures import build_textures
from tests.support.mlflow import MlflowServer, server_executable

pytestmark = pytest.mark.slow
pytest.importorskip("mlflow", reason="the tracking extra: pip install -e '.[tracking]'")
pytest.importorskip("tensorboard", reason="the tracking extra: pip install -e '.[tracking]'")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    executable = server_executable()
    if executable is None:
        pytest.skip("no MLflow server environment: make mlflow-server (make test builds it)")
    server = MlflowServer(executable, tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


def _log(storage: Path, row: pd.Series) -> tuple[list[str], list[list[float]]]:
    name = f"{row['category']}-{row['method']}-s{row['seed']}-{row['train_key']}"
    store = zarr.open_group(str(storage / "train" / name), mode="r")
    return list(store.attrs["log_columns"]), store["log"][:].tolist()


def test_a_run_logs_every_evaluation_to_mlflow_and_writes_tensorboard_events(
    tmp_path, tiny_preset, mlflow_server
):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    from flows.benchmark import cutswap

    data = build_textures(tmp_path / "data", seed=1, image_size=64, n_train=6, n_test_good=3, n_test_defect=1)
    dataset = {"name": "mvtec", "root": str(data), "categories": ["brick"], "image_size": 48}
    preset = tiny_preset(tmp_path, "tracked", dataset, parallel={"workers": 0})
    overrides = {"tracking.mlflow_uri": mlflow_server.uri, "tracking.tensorboard": True,
                 "tracking.mlflow_experiment": "cutswap-test"}  # fmt: skip
    folder = Path(cutswap(str(preset), overrides=overrides))
    results = pd.read_csv(folder / "results.csv")

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    experiment = client.get_experiment_by_name("cutswap-test")
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`cutswap.run` = 'tracked'")
    assert len(parents) == 1 and parents[0].data.params["train.steps"] == str(results["steps"].iloc[0])
    parent = parents[0].info.run_id
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    names = {c.info.run_name: c for c in children}
    assert set(names) == {f"{r.category}/{r.method}/seed{r.seed}" for r in results.itertuples()}
    row = results[results["method"] == "cutswap"].iloc[0]
    child = names[f"brick/cutswap/seed{row['seed']}"]
    assert child.data.metrics["image_AUROC"] == pytest.approx(row["image_AUROC"])
    assert child.data.params["method"] == "cutswap"
    columns, log = _log(Path(tmp_path / "storage"), row)
    history = sorted((m.step, m.value) for m in client.get_metric_history(child.info.run_id, "loss"))
    loss = columns.index("loss")
    assert history == [(int(line[0]), pytest.approx(line[loss])) for line in log]
    artifacts = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/results.csv", "report/summary.md", "report/index.html"} <= artifacts

    events = EventAccumulator(str(folder / "tensorboard" / "brick" / "cutswap" / f"seed{row['seed']}"),
                              size_guidance={SCALARS: 0})  # fmt: skip
    events.Reload()
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("train/loss")] == [
        (int(line[0]), line[loss]) for line in log
    ]

    # A rerun reuses every training: MLflow still gets a run with every row, from the stores.
    cutswap(str(preset), overrides=overrides)
    again = client.search_runs([experiment.experiment_id], filter_string="tags.`cutswap.run` = 'tracked'")
    assert len(again) == 2
    newest = max(again, key=lambda r: r.info.start_time).info.run_id
    assert len(
        client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{newest}'")
    ) == len(results)
