# Pictor: `make run` starts the embedded stack, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1

.PHONY: install migrate models run worker web test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of exactly this torch is on the build hosts; any other version pulls CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# The browser tests drive Debian's chromium (never a downloaded one); installing it needs root.
	command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py createcachetable

models: migrate
	$(PY) manage.py build_demo_models

run: models
	@KEY=$$($(PY) manage.py apikey create --org demo --plan premium --name "make run") || exit 1; \
	$(PY) manage.py qcluster & WORKER=$$!; \
	trap 'kill $$WORKER 2>/dev/null' EXIT INT TERM; \
	echo ""; \
	echo "Pictor is starting on http://$(HOST):$(PORT)/"; \
	echo "Demo API key: $$KEY"; \
	echo "Pages: http://$(HOST):$(PORT)/accounts/signup/   API docs: http://$(HOST):$(PORT)/api/docs/"; \
	echo "Try:"; \
	echo "  curl -s -X POST http://$(HOST):$(PORT)/api/v3/text2img -H 'Content-Type: application/json' -d '{\"key\":\"$$KEY\",\"prompt\":\"a lighthouse at dusk\",\"width\":128,\"height\":128}'"; \
	echo ""; \
	$(PY) manage.py runserver $(HOST):$(PORT) --noreload

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run

test: lint
	$(PY) -m pytest

bench: models
	$(PY) bench/overhead.py
	$(PY) bench/engine.py
	$(PY) bench/formats.py

clean:
	rm -rf var/ .pytest_cache
