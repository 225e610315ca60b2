"""Experiment trackers, off by default (``tracking`` settings; ``pip install -e '.[tracking]'``): a run's
trainings and evaluations as TensorBoard event files (``tensorboard_events``) and MLflow runs
(``mlflow_runs``), from plain records (``records``)."""
