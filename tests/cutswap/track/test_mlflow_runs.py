"""A run logged to MLflow's local file store, read back through MLflow's client (server: flow test)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cutswap.track.mlflow_runs import CUT, MAX_PARAM, log_benchmark
from cutswap.track.records import evaluations

pytest.importorskip("mlflow", reason="the tracking extra: pip install -e '.[tracking]'")


def test_a_parent_run_with_a_nested_run_per_evaluation_its_curves_metrics_and_the_report(tmp_path):
    from mlflow.tracking import MlflowClient

    results = pd.DataFrame(
        [
            {"category": "bottle", "method": "cutswap", "seed": s, "image_AUROC": 0.9 + s / 100,
             "lr": 0.03, "pair_step_rates": "x" * (MAX_PARAM + 10)}
            for s in (0, 1)
        ]
    )  # fmt: skip
    log = np.array([[0, 1.0, 0.03], [10, 0.4, 0.01]])
    records = evaluations(results, {("bottle", "cutswap", 1): (["step", "loss", "lr"], log)})
    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    (report / "summary.md").write_text("# r\n")
    (report / "figures" / "a.png").write_bytes(b"png")
    uri = (tmp_path / "mlruns").as_uri()
    run_id = log_benchmark(uri, "cutswap-test", "r", {"train.steps": "10"}, records, report)
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(run_id)
    assert parent.data.params == {"train.steps": "10"} and parent.data.tags["cutswap.run"] == "r"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )
    by_name = {c.info.run_name: c for c in children}
    assert set(by_name) == {"bottle/cutswap/seed0", "bottle/cutswap/seed1"}
    trained = by_name["bottle/cutswap/seed1"]
    assert trained.data.metrics["image_AUROC"] == pytest.approx(0.91)
    cut = trained.data.params["pair_step_rates"]
    assert len(cut) == MAX_PARAM and cut.endswith(CUT)  # marked, not silently shortened
    history = client.get_metric_history(trained.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (10, 0.4)]
    assert client.get_metric_history(by_name["bottle/cutswap/seed0"].info.run_id, "loss") == []
    assert [a.path for a in client.list_artifacts(run_id, "report")] == [
        "report/figures",
        "report/summary.md",
    ]
