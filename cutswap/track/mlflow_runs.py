"""A benchmark run as MLflow runs: one parent run per ``cutswap run``, one nested run per evaluation.

::

    parent run  <run name>          params: every setting, dotted (train.steps, ...); tag cutswap.run
                                    artifacts: report/ (the report folder: tables, figures, pages)
      nested    <category>/<row>/seed<seed>
                                    params: the evaluation's results.csv settings (method, steps, lr, ...)
                                    metrics per step: loss, acc_negative, acc_normal, lr, images_per_s
                                    metrics: image_AUROC, ... (the evaluation's)
                                    tags: category, row, seed

The tracking URI is ``http(s)://HOST:PORT`` (an ``mlflow server``), or ``file:///FOLDER`` (MLflow's file
store, which MLflow 3 keeps only behind ``MLFLOW_ALLOW_FILE_STORE``, set here for that case alone).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from cutswap.track.records import TrackedEvaluation

#: MLflow refuses longer parameter values; a longer one (a JSON of pair-bank rates) is cut to this, ending
#: in :data:`CUT`.
MAX_PARAM = 6000
CUT = " [cut]"


#: MLflow's environment settings for a run's logging (a user's own settings of them win).
QUIET = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def _quiet() -> None:
    """No URL printed per run, no progress bar; and a server that stops answering fails in about a minute
    (2 retries of 20 s) rather than after MLflow's default 7 retries with backoff."""
    for name, value in QUIET.items():
        os.environ.setdefault(name, value)


def _params(values: Mapping[str, str]) -> dict[str, str]:
    return {k: v if len(v) <= MAX_PARAM else v[: MAX_PARAM - len(CUT)] + CUT for k, v in values.items()}


def _log_curves(client, run_id: str, record: TrackedEvaluation) -> None:
    """The training log as per-step metrics, in batches."""
    from mlflow.entities import Metric

    if not record.log.size:
        return
    now = int(time.time() * 1000)
    step_at = record.log_columns.index("step") if "step" in record.log_columns else None
    metrics = [
        Metric(column, float(value), now, int(line[step_at]) if step_at is not None else i)
        for i, line in enumerate(record.log)
        for column, value in zip(record.log_columns, line, strict=True)
        if column != "step"
    ]
    client.log_batch(run_id, metrics=metrics)  # the client splits it into requests MLflow accepts


def log_benchmark(
    uri: str,
    experiment: str,
    run_name: str,
    settings: Mapping[str, str],
    records: Sequence[TrackedEvaluation],
    report_folder: Path | None,
) -> str:
    """Log a run (module docstring) and return the parent run's id.

    Raises:
        ModuleNotFoundError: without MLflow (``pip install -e '.[tracking]'``); the run's checks refuse
            ``tracking.mlflow_uri`` before it starts in that case.
    """
    _quiet()
    if uri.startswith("file:"):
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    client = MlflowClient(tracking_uri=uri)
    with mlflow.start_run(run_name=run_name) as parent:
        mlflow.set_tag("cutswap.run", run_name)
        mlflow.log_params(_params(settings))
        for record in records:
            with mlflow.start_run(run_name=record.name, nested=True) as child:
                mlflow.set_tags({"category": record.category, "row": record.row, "seed": str(record.seed)})
                mlflow.log_params(_params(record.params))
                _log_curves(client, child.info.run_id, record)
                if record.metrics:
                    mlflow.log_metrics(record.metrics)
        if report_folder is not None and Path(report_folder).is_dir():
            mlflow.log_artifacts(str(report_folder), artifact_path="report")
    return parent.info.run_id
