# Traceo FinOps — one entry point for install, the local stack, the demo and the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BIN ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(CURDIR)/$(VENV)/bin/python
export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export PYTHONPATH := $(CURDIR)/include:$(CURDIR)
STAMP := $(VENV)/.installed

.PHONY: help install prometheus chromium postgres-redis devstack-up devstack-down devstack-status stack-up stack-down stack-status airflow-db demo test test-unit lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.txt requirements-dev.txt requirements-lock.txt
	@test -x "$(PY)" || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c requirements-lock.txt
	@# the library lives in include/: make it importable from this venv wherever it runs
	@echo "$(CURDIR)/include" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/traceo_finops_include.pth"
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the pinned requirements

prometheus:  ## install Debian's prometheus package when missing
	@bash devstack/ensure-prometheus.sh

chromium:  ## install Debian's chromium when missing (the FinOps page's browser test)
	@bash devstack/ensure-chromium.sh

postgres-redis:  ## install Debian's postgresql and redis-server when missing (the production-like stack)
	@bash devstack/ensure-postgres-redis.sh

devstack-up: install prometheus  ## start Prometheus, moto S3 and the Slack sink on 127.0.0.1
	$(PY) -m devstack up

devstack-down:  ## stop the local stack
	@test -x "$(PY)" && $(PY) -m devstack down || true

devstack-status:  ## say which devstack services run, and where
	$(PY) -m devstack status

stack-up: install postgres-redis  ## Airflow as production runs it: PostgreSQL, Redis, scheduler, 2 Celery workers (.stack/)
	@# the devstack's connections and demo config when it runs (make devstack-up), as compose takes them from .env
	@set -a; if [ -f .devstack/env.sh ]; then source .devstack/env.sh; fi; set +a; $(PY) -m devstack.airflow_stack up

stack-down:  ## stop the production-like stack
	@test -x "$(PY)" && $(PY) -m devstack.airflow_stack down || true

stack-status:  ## say which parts of the production-like stack run
	$(PY) -m devstack.airflow_stack status

airflow-db: install  ## initialise the project-local SQLite Airflow home (.airflow/)
	@mkdir -p $(AIRFLOW_HOME)
	$(VENV)/bin/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (tail -30 $(AIRFLOW_HOME)/db-migrate.log; exit 1)

demo: devstack-up airflow-db  ## install, start the stack, run every DAG once, summarise the reports
	@# the cost report reads what the others committed: it runs last
	@set -a; source .devstack/env.sh; set +a; \
	for dag in $$(ls dags/finops_*.py | xargs -n1 basename | sed 's/\.py$$//' | grep -v '^finops_cost_report$$') \
	           $$(test -f dags/finops_cost_report.py && echo finops_cost_report); do \
	  echo "== airflow dags test $$dag"; \
	  $(VENV)/bin/airflow dags test $$dag > $(AIRFLOW_HOME)/demo-$$dag.log 2>&1 \
	    || { tail -40 $(AIRFLOW_HOME)/demo-$$dag.log; exit 1; }; \
	  grep -E "state=|Marking run" $(AIRFLOW_HOME)/demo-$$dag.log | tail -1; \
	done
	@set -a; source .devstack/env.sh; set +a; $(PY) -m traceo_finops summary

lint: install  ## ruff on everything, mypy --strict on the library (include/traceo_finops)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: install prometheus chromium postgres-redis lint  ## the whole suite: unit, integration (starts the devstack) and DAG tests
	$(PY) -m pytest

test-unit: install  ## the unit tests only (no services)
	$(PY) -m pytest -m unit

bench: devstack-up  ## benchmarks (long); results go to docs/benchmarks.md by hand
	@ls bench/*.py >/dev/null 2>&1 && for b in bench/bench_*.py; do $(PY) $$b || exit 1; done || echo "no benchmarks yet"

clean: devstack-down stack-down  ## stop the stacks, remove .airflow, .devstack, .stack and reports
	rm -rf .airflow .devstack .stack reports
