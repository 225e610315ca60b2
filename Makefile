# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv if missing and install
# the project into it with plain pip, from the lock files (requirements/: every package pinned with its
# hashes, for CPython 3.11 on Linux x86_64; requirements/README.md says how to refresh them). Elsewhere,
# install from the ranges in pyproject.toml instead: `make demo LOCK= TORCH="torch torchvision"`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK ?= requirements/lock.txt
DEV_LOCK ?= requirements/lock-dev.txt
TORCH ?= torch==2.14.1 torchvision==0.29.1
export DO_NOT_TRACK := 1

.PHONY: install demo ablation test lint lock clean-storage server server-stop mlflow-server

# pip's hash mode refuses an unhashed local project, so the project installs in a second step, without
# dependencies (they are all in the lock).
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
ifeq ($(LOCK),)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
else
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
endif
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/cutswap run --preset configs/demo.yaml

# The paper's ablations on the embedded MNIST (configs/ablation.yaml): within an hour on 2 CPU cores.
ablation: install
	$(VENV)/bin/cutswap run --preset configs/ablation.yaml

# The trackers' client side (the tracking extra) and a real MLflow server's own environment, for the tests.
MLFLOW_SERVER_VENV ?= .venv-mlflow-server

$(VENV)/.tracking: pyproject.toml $(DEV_LOCK) $(VENV)/.installed
ifeq ($(LOCK),)
	$(PY) -m pip install -q -e '.[test,tracking]'
else
	$(PY) -m pip install -q --require-hashes -r $(DEV_LOCK)
endif
	touch $@

$(MLFLOW_SERVER_VENV)/bin/mlflow:
	$(PYTHON) -m venv $(MLFLOW_SERVER_VENV)
	$(MLFLOW_SERVER_VENV)/bin/pip install -q "mlflow==3.17.2"

mlflow-server: $(MLFLOW_SERVER_VENV)/bin/mlflow

test: install $(VENV)/.tracking $(MLFLOW_SERVER_VENV)/bin/mlflow
	scripts/ensure-chromium.sh
	scripts/ensure-slurm.sh
	$(PY) -m pytest

# Refresh the lock files from pyproject.toml's ranges (newest releases the indexes offer), with pip-tools in
# an environment of its own. Commit them with the change that needed them.
LOCK_FLAGS := --allow-unsafe --generate-hashes --no-emit-index-url --no-emit-find-links --strip-extras
lock:
	test -x .venv-lock/bin/pip-compile || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install -q "pip-tools==7.7.0")
	.venv-lock/bin/pip-compile -q $(LOCK_FLAGS) --extra=test --extra=tracking -o $(DEV_LOCK) pyproject.toml requirements/torch.in
	.venv-lock/bin/pip-compile -q $(LOCK_FLAGS) --constraint=$(DEV_LOCK) -o $(LOCK) pyproject.toml requirements/torch.in

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean-storage:
	rm -rf storage/ingest storage/saliency storage/cluster storage/pairs storage/train storage/evaluate

server: install
	scripts/prefect-local.sh start

server-stop:
	scripts/prefect-local.sh stop
