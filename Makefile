# Pictor: `make run` starts the embedded stack, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1

# Wheels of the CPU torch build the lock names (torch==2.13.0+cpu); `make lock` resolves against them.
TORCH_WHEELS ?= /opt/wheels
LOCK := requirements.lock

.PHONY: install lock lock-check lock-upgrade migrate models run dev test lint typecheck bench clean

# The lock is the install: every package at its exact version, nothing resolved from the registry
# today. --no-deps makes a package missing from the lock fail `pip check` instead of floating in.
$(VENV)/.installed: $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-deps -r $(LOCK)
	$(PY) -m pip check
	# The browser tests drive Debian's chromium (never a downloaded one); installing it needs root.
	command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	touch $@

install: $(VENV)/.installed

UV_COMPILE = echo "torch==2.13.0" | $(VENV)/bin/uv pip compile pyproject.toml --extra dev \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--find-links $(TORCH_WHEELS) --constraint /dev/stdin --quiet

# Refresh the lock after editing pyproject.toml: keeps every pin that still fits, adds what is new.
lock: install
	$(UV_COMPILE) $(LOCK_FLAGS) -o $(LOCK)

# Fails when pyproject.toml changed without `make lock`: resolves into a scratch copy of the lock
# (so every pin that fits is kept) and compares the pins, not uv's comments.
lock-check: install
	cp $(LOCK) $(VENV)/lock-check.txt
	$(UV_COMPILE) -o $(VENV)/lock-check.txt
	diff -I '^ *#' $(LOCK) $(VENV)/lock-check.txt || \
		(echo "$(LOCK) does not match pyproject.toml: run make lock" >&2; exit 1)

# Move every pin to the newest release the ranges allow; run `make test` before committing it.
lock-upgrade: install
	$(MAKE) lock LOCK_FLAGS=--upgrade

migrate: install
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py createcachetable

models: migrate
	$(PY) manage.py build_demo_models

# `make run` serves with gunicorn (threads), the web server for real traffic. `make dev` uses
# Django's runserver, which reloads on code changes but serves one developer, not many clients.
# Both start one `manage.py worker`, stopped (its running job finished) when the server stops.
run: SERVER = PICTOR_BIND=$(HOST):$(PORT) $(PY) -m gunicorn -c python:sdplatform.gunicorn sdplatform.wsgi
dev: SERVER = $(PY) manage.py runserver $(HOST):$(PORT)
run dev: models
	@KEY=$$($(PY) manage.py apikey create --org demo --plan premium --name "make $@") || exit 1; \
	$(PY) manage.py worker & WORKER=$$!; \
	trap 'kill $$WORKER 2>/dev/null; wait $$WORKER' EXIT INT TERM; \
	echo ""; \
	echo "Pictor is starting on http://$(HOST):$(PORT)/"; \
	echo "Demo API key: $$KEY"; \
	echo "Pages: http://$(HOST):$(PORT)/accounts/signup/   API docs: http://$(HOST):$(PORT)/api/docs/"; \
	echo "Try:"; \
	echo "  curl -s -X POST http://$(HOST):$(PORT)/api/v3/text2img -H 'Content-Type: application/json' -d '{\"key\":\"$$KEY\",\"prompt\":\"a lighthouse at dusk\",\"width\":128,\"height\":128}'"; \
	echo ""; \
	$(SERVER)

lint: typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run

# Types (mypy with Django's and DRF's stubs) and the import contracts in pyproject.toml, the
# layers docs/architecture.md describes; part of `lint`, so of `make test`.
typecheck: install
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

# Run one after another, the tests keep about one of two cores busy (many wait on processes they
# started): two pytest-xdist workers, each giving torch its share of the cores (tests/conftest.py),
# take about 0.6 of the time. `make test TEST_WORKERS=0` runs them in this one process.
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -n $(TEST_WORKERS)

bench: models
	$(PY) bench/overhead.py
	$(PY) bench/engine.py
	$(PY) bench/formats.py
	$(PY) bench/parsing.py

clean:
	rm -rf var/ .pytest_cache
