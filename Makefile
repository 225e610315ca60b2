# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv if missing and install
# the project into it with plain pip. TORCH pins the builds this project is tested with; override it on
# other platforms, e.g. `make demo TORCH="torch torchvision"`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.14.1 torchvision==0.29.1
export DO_NOT_TRACK := 1

.PHONY: install demo ablation test lint clean-storage server server-stop mlflow-server

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/cutswap run --preset configs/demo.yaml

# The paper's ablations on the embedded MNIST (configs/ablation.yaml): within an hour on 2 CPU cores.
ablation: install
	$(VENV)/bin/cutswap run --preset configs/ablation.yaml

# The trackers' client side (the tracking extra) and a real MLflow server's own environment, for the tests.
MLFLOW_SERVER_VENV ?= .venv-mlflow-server

$(VENV)/.tracking: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,tracking]'
	touch $@

$(MLFLOW_SERVER_VENV)/bin/mlflow:
	$(PYTHON) -m venv $(MLFLOW_SERVER_VENV)
	$(MLFLOW_SERVER_VENV)/bin/pip install -q "mlflow==3.17.2"

mlflow-server: $(MLFLOW_SERVER_VENV)/bin/mlflow

test: install $(VENV)/.tracking $(MLFLOW_SERVER_VENV)/bin/mlflow
	scripts/ensure-chromium.sh
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean-storage:
	rm -rf storage/ingest storage/saliency storage/cluster storage/pairs storage/train storage/evaluate

server: install
	scripts/prefect-local.sh start

server-stop:
	scripts/prefect-local.sh stop
