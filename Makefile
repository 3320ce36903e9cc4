# The front door: `make help` lists every target.
.DEFAULT_GOAL := help
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
# The version is defined once, in pyproject.toml; the image tag and manifests follow it.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
PORT ?= 8000

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- Local development --------------------------------------------------------

.PHONY: install
install: $(VENV)/.installed ## Create .venv with the pinned dependencies and the package

$(VENV)/.installed: pyproject.toml requirements/dev.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

.PHONY: run
run: install ## Set up and run the service on 127.0.0.1:8000 (empty salt unless USER_SALT is set)
	HOST=127.0.0.1 PORT=$(PORT) $(PY) -m user_hasher

.PHONY: test
test: install lint manifest-check ## Set up and run every check and test (what CI runs)
	$(PY) -m pytest

.PHONY: lint
lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: format
format: install ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: lock
lock: install ## Re-pin requirements/*.lock from pyproject.toml
	$(VENV)/bin/uv pip compile pyproject.toml --python-version 3.11 --python-platform linux -q \
		--custom-compile-command "make lock" -o requirements/runtime.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 --python-platform linux -q \
		--custom-compile-command "make lock" -o requirements/dev.lock

.PHONY: bench
bench: install ## Run the benchmarks in bench/ (prints numbers, asserts nothing)
	@for script in bench/*.py; do echo "== $$script"; $(PY) "$$script"; done

# --- Container image (issue 4) ------------------------------------------------

# --- Kubernetes (issue 5) -----------------------------------------------------

.PHONY: manifest-check
manifest-check: ## (placeholder until the Kubernetes section lands)
	@true

.PHONY: clean
clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
