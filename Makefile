# coopsync: `make run` serves on SQLite, `make test` runs the whole suite (SQLite and PostgreSQL).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COOPSYNC_HOST ?= 127.0.0.1
COOPSYNC_PORT ?= 8000
export COOPSYNC_DATABASE_URL ?= sqlite+aiosqlite:///./var/coopsync.db
# Store credentials and webhook secrets are encrypted with COOPSYNC_SECRET_KEY. When it is unset, `make run`
# and `make worker` create var/secret.key (mode 0600) once, and they and `make migrate` use the key in it.
SECRET_KEY_FILE := var/secret.key
WITH_SECRET_KEY = if [ -z "$${COOPSYNC_SECRET_KEY:-}" ] && [ -s $(SECRET_KEY_FILE) ]; then \
	COOPSYNC_SECRET_KEY="$$(cat $(SECRET_KEY_FILE))"; export COOPSYNC_SECRET_KEY; fi;
PYTEST_ARGS ?=

.PHONY: run test setup secret-key migrate worker bench lint clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

secret-key: setup
	@if [ -z "$${COOPSYNC_SECRET_KEY:-}" ] && [ ! -s $(SECRET_KEY_FILE) ]; then \
	  mkdir -p var && (umask 077 && $(BIN)/coopsync secrets generate-key > $(SECRET_KEY_FILE).new) \
	  && mv $(SECRET_KEY_FILE).new $(SECRET_KEY_FILE) \
	  && echo "created $(SECRET_KEY_FILE): the COOPSYNC_SECRET_KEY of ./var (keep it; the stored credentials cannot be read without it)"; \
	fi

migrate: setup
	mkdir -p var
	$(WITH_SECRET_KEY) $(BIN)/alembic upgrade head

run: secret-key migrate
	$(WITH_SECRET_KEY) exec $(BIN)/uvicorn app.main:app_factory --factory --host $(COOPSYNC_HOST) --port $(COOPSYNC_PORT) --no-access-log

worker: secret-key migrate
	$(WITH_SECRET_KEY) exec $(BIN)/coopsync worker

# The console's browser tests drive Debian's chromium through chromium-driver: installed here when missing
# and this is root with apt (a Chinese font too, for readable screenshots); otherwise they skip (fail under CI=true).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver for the console's browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei >/dev/null; \
	  else echo "chromium/chromedriver missing and not installable here: the browser tests will skip (and fail under CI=true)"; fi; \
	fi

test: migrate browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: migrate
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/resync.py
	$(BIN)/python bench/flash_sale.py
	$(BIN)/python bench/flash_sale_fakes.py

clean:
	rm -rf $(VENV) var .pytest_cache
