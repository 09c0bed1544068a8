# coopsync: `make run` serves on SQLite, `make test` runs the whole suite (SQLite and PostgreSQL).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COOPSYNC_HOST ?= 127.0.0.1
COOPSYNC_PORT ?= 8000
export COOPSYNC_DATABASE_URL ?= sqlite+aiosqlite:///./var/coopsync.db
PYTEST_ARGS ?=

.PHONY: run test setup migrate worker bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

migrate: setup
	mkdir -p var
	$(BIN)/alembic upgrade head

run: migrate
	exec $(BIN)/uvicorn app.main:app_factory --factory --host $(COOPSYNC_HOST) --port $(COOPSYNC_PORT) --no-access-log

worker: migrate
	exec $(BIN)/coopsync worker

test: migrate
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: migrate
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/resync.py
	$(BIN)/python bench/flash_sale.py

clean:
	rm -rf $(VENV) var .pytest_cache
