"""The run's MLflow logging fed from its report: a server that stops answering after the report fails in
one line that says the report stands and what to do."""

from __future__ import annotations

import pandas as pd
import pytest

from cutswap.errors import CutswapError
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.tracking import flat_settings, log_mlflow
from tests.support.s3 import free_port

pytest.importorskip("mlflow", reason="the tracking extra: pip install -e '.[tracking]'")


def test_settings_are_flattened_to_dotted_params():
    params = flat_settings(Settings())
    assert params["train.steps"] == str(Settings().train.steps) and params["run"] == "default"
    assert params["variants"] == "{}" and params["saliency.levels"].startswith('["level1"')


def test_a_server_gone_after_the_report_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    pd.DataFrame([{"category": "c", "method": "cutswap", "seed": 0, "image_AUROC": 0.9}]).to_csv(
        tmp_path / "results.csv", index=False
    )
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = Settings(tracking={"mlflow_uri": uri}, reports_root=str(tmp_path))
    with pytest.raises(CutswapError, match=r"logging failed after the report was written .*rerun the same"):
        log_mlflow(settings, tmp_path, {})
