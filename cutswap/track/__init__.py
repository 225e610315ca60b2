"""Experiment trackers, off by default (``tracking`` settings; ``pip install -e '.[tracking]'``): a run's
trainings and evaluations as TensorBoard event files (``tensorboard``) and MLflow runs (``mlflow``)."""
