# The front door: `make help` lists every target.
.DEFAULT_GOAL := help
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
# The version is defined once, in pyproject.toml; the image tag and manifests follow it.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- Local development --------------------------------------------------------

.PHONY: install
install: $(VENV)/.installed ## Create .venv with the pinned dependencies and the package

# --require-hashes: a file whose sha256 is not in the lock fails the install, naming the package
# (docs/supply-chain.md). pip and the build backend are among the pins: the locked pip (its
# entry in the dev lock, hashes and all) replaces the venv's older, much slower bundled one
# first, and the package (this tree, no hash) is built by the locked hatchling
# (--no-build-isolation) and installed alone (--no-deps).
$(VENV)/.installed: pyproject.toml requirements/dev.lock
	python3 -m venv $(VENV)
	sed -n '/^pip==/,/^    #/p' requirements/dev.lock > $(VENV)/pip.lock
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(VENV)/pip.lock
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

.PHONY: run
run: install ## Set up and run the service on 127.0.0.1 (empty salt unless USER_SALT is set)
	@# Loopback only, and no drain: a developer's Ctrl-C stops at once (set DRAIN_SECONDS to try it).
	HOST=127.0.0.1 DRAIN_SECONDS=$${DRAIN_SECONDS:-0} $(PY) -m user_hasher

.PHONY: test
test: install ## The fast loop: set up, ruff, and the tests that mirror src/ (tests/unit; seconds)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests/unit

.PHONY: check
check: install lint manifest-check ## The full check CI runs: every suite (processes, tooling, k8s, container, cluster)
	$(PY) -m pytest

.PHONY: lint
lint: install ## ruff lint and format check, hadolint, shellcheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/shellcheck .ci/run $$(find . -name '*.sh' -not -path './.venv/*' -not -path './.venv-checkov/*' -not -path './.git/*')

.PHONY: format
format: install ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: lock
lock: install ## Re-pin requirements/runtime.lock and dev.lock, with sha256 hashes, from pyproject.toml
	$(VENV)/bin/uv pip compile pyproject.toml --python-version 3.11 --python-platform linux -q --generate-hashes \
		--custom-compile-command "make lock" -o requirements/runtime.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 --python-platform linux -q --generate-hashes \
		--custom-compile-command "make lock" -o requirements/dev.lock
	$(VENV)/bin/uv pip compile requirements/build.in --python-version 3.11 --python-platform linux -q --generate-hashes \
		--custom-compile-command "make lock" -o requirements/build.lock

.PHONY: bench
bench: install ## Measure speed, memory and pod sizing side by side (wrk; ~6 min; BASELINE=git-ref)
	$(PY) -m bench $(if $(BASELINE),--baseline $(BASELINE))

.PHONY: mutation
mutation: install ## Mutation-test src/ against the fast tests; fails under a 95% score (~2-3 min)
	$(PY) -m mutation

# --- Container image ------------------------------------------------------------

IMAGE_NAME := user-hasher
# The release tag: the package version, never `latest`. user_hasher.yaml names it.
IMAGE := $(IMAGE_NAME):$(VERSION)
# `make image` records the ID of the image it built here. The build's own reference,
# $(IMAGE_NAME):$(VERSION)-<first 12 hex digits of that ID>, is unique and immutable:
# the deploy targets roll the Deployment to it, so `kubectl rollout undo` brings back
# the previous build, and builds of other trees on the same engine cannot replace it.
IMAGE_ID_FILE := build/image.id
# Any docker client. It talks to whatever engine DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH
# name, so `eval $$(minikube docker-env) && make image` builds straight into minikube's engine.
DOCKER ?= docker
# Built by `make base-image` where Docker Hub is unreachable (CI here). It trusts that machine's
# local CA certificates: a stand-in for CI, never the base of a shipped image.
LOCAL_BASE_IMAGE := user-hasher-base:bookworm
# Empty means the Dockerfile's pinned python:3.11-slim-bookworm. Unset, it is the local base when
# the engine in use has one (CI), so the same `make image` works on both kinds of machine.
BASE_IMAGE ?= $(shell $(DOCKER) image inspect $(LOCAL_BASE_IMAGE) >/dev/null 2>&1 && echo $(LOCAL_BASE_IMAGE))
# OCI labels: the commit (marked -dirty when the tree has changes) and where the source lives,
# without any credentials a remote URL may carry.
VCS_REF ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git status --porcelain 2>/dev/null | grep -q . && echo -dirty)
SOURCE_URL ?= $(or $(shell git config --get remote.origin.url 2>/dev/null | sed -E 's#//[^/@]*@#//#'),unknown)

.PHONY: image
image: ## Build the image: tags user-hasher:VERSION and the build's own VERSION-<image id>
	@base='$(BASE_IMAGE)'; echo "image: building $(IMAGE) on $${base:-the Dockerfile default base}"
	@mkdir -p $(dir $(IMAGE_ID_FILE))
	DOCKER_BUILDKIT=0 $(DOCKER) build --network=host \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
		--build-arg VERSION=$(VERSION) \
		--build-arg VCS_REF=$(VCS_REF) \
		--build-arg SOURCE_URL=$(SOURCE_URL) \
		--iidfile $(IMAGE_ID_FILE) \
		--tag $(IMAGE) .
	@ref=$$($(MAKE) --no-print-directory -s image-ref) && $(DOCKER) tag "$$(cat $(IMAGE_ID_FILE))" "$$ref" \
		&& echo "image: built $$ref"

.PHONY: image-ref
image-ref: ## Print the unique reference of the image `make image` built last
	@id=$$(cat $(IMAGE_ID_FILE) 2>/dev/null) || { echo "no $(IMAGE_ID_FILE): run make image" >&2; exit 1; }; \
		id=$${id#sha256:}; echo "$(IMAGE_NAME):$(VERSION)-$${id:0:12}"

# One CycloneDX JSON file per build, named after the build's unique reference.
SBOM_DIR := build/sbom

.PHONY: sbom
sbom: install ## CycloneDX SBOM of the image `make image` built last, read from its venv, into build/sbom/
	@ref=$$($(MAKE) --no-print-directory -s image-ref) && DOCKER=$(DOCKER) $(PY) scripts/docker/image_sbom.py \
		--image "$$(cat $(IMAGE_ID_FILE))" --ref "$$ref" --output-dir $(SBOM_DIR)

.PHONY: base-image
base-image: ## Build the local Debian base (once; reused) for machines without Docker Hub
	DOCKER=$(DOCKER) scripts/docker/build-base-image.sh $(LOCAL_BASE_IMAGE)

# --- Kubernetes -----------------------------------------------------------------

# Written for a laptop with minikube and kubectl. The names are those in k8s/;
# tests/k8s checks they agree.
MANIFEST := user_hasher.yaml
K8S_NAMESPACE := user-hasher
K8S_APP := user-hasher
MINIKUBE_PROFILE ?= minikube
# Every kubectl call names minikube's context, so these targets never touch whatever
# cluster the current context happens to point at.
KUBECTL := kubectl --context $(MINIKUBE_PROFILE)
# The only minikube-specific steps (start it, build the image inside it); all the rest is
# plain kubectl. The cluster tests put a stand-in for exactly these steps here.
MINIKUBE_STEPS ?= scripts/k8s/minikube_steps.sh
# A rollout is one step per replica (a pod start plus minReadySeconds); 300 s covers
# several steps and a slow first image load, and a stuck rollout fails sooner anyway,
# when it passes the Deployment's progressDeadlineSeconds.
ROLLOUT_TIMEOUT := 300s
# What scripts/k8s/deploy.sh acts on.
DEPLOY_ENV := KUBE_CONTEXT=$(MINIKUBE_PROFILE) NAMESPACE=$(K8S_NAMESPACE) DEPLOYMENT=$(K8S_APP) \
	MANIFEST=$(MANIFEST) ROLLOUT_TIMEOUT=$(ROLLOUT_TIMEOUT)
CHECKOV_VENV := .venv-checkov

.PHONY: manifest
manifest: install ## Render user_hasher.yaml from k8s/ (commit both)
	$(PY) -m scripts.k8s.render_manifest

.PHONY: manifest-check
manifest-check: install ## Fail if user_hasher.yaml differs from what `make manifest` renders
	$(PY) -m scripts.k8s.render_manifest --check
	$(PY) scripts/k8s/render_prometheus_rules.py --check

.PHONY: rules
rules: install ## Render k8s/monitoring/prometheusrule.yaml from the SLO spec k8s/monitoring/rules/spec.yaml
	$(PY) scripts/k8s/render_prometheus_rules.py

.PHONY: minikube-deploy
minikube-deploy: manifest-check ## Start minikube if needed, build the image in it, apply user_hasher.yaml with it, wait
	MINIKUBE_PROFILE=$(MINIKUBE_PROFILE) $(MINIKUBE_STEPS) start
	ref="$$(MINIKUBE_PROFILE=$(MINIKUBE_PROFILE) $(MINIKUBE_STEPS) build-image)" \
		&& $(DEPLOY_ENV) scripts/k8s/deploy.sh apply "$$ref"

.PHONY: rollout
rollout: ## Rebuild the image in minikube and roll the Deployment to it (or restart it), wait; IMAGE_REF=ref: to that build
	ref="$(or $(IMAGE_REF),$$(MINIKUBE_PROFILE=$(MINIKUBE_PROFILE) $(MINIKUBE_STEPS) build-image))" \
		&& $(DEPLOY_ENV) scripts/k8s/deploy.sh roll "$$ref"

.PHONY: smoke
smoke: ## Port-forward the minikube Service to localhost and run scripts/smoke.sh against it
	scripts/k8s/port_forward_smoke.sh $(MINIKUBE_PROFILE) $(K8S_NAMESPACE) $(K8S_APP)

.PHONY: test-cluster
test-cluster: install ## Run only the live-cluster tests (tests/cluster; `make test` runs them too)
	$(PY) -m pytest -m cluster

.PHONY: rehearse
rehearse: install ## Prove zero downtime on a local cluster of its own: scenarios under load (~5 min; root)
	$(PY) -m rehearsal

# The in-cluster check's load: requests per second, and seconds (10 s steady, the rollout,
# and at least 10 s after it; raise it where a rollout takes longer).
CHECK_RATE ?= 200
CHECK_SECONDS ?= 75

.PHONY: rollout-check
rollout-check: install ## Load the Service by DNS name from a Job in the cluster during `kubectl rollout restart`; 0 failed or exit 1
	$(PY) -m rehearsal.rollout_check --context $(MINIKUBE_PROFILE) --namespace $(K8S_NAMESPACE) \
		--deployment $(K8S_APP) --rate $(CHECK_RATE) --seconds $(CHECK_SECONDS)

.PHONY: undeploy
undeploy: ## Delete everything user_hasher.yaml created in minikube (the namespace too)
	$(KUBECTL) delete -f $(MANIFEST) --ignore-not-found --wait --timeout=$(ROLLOUT_TIMEOUT)

# checkov's dependency tree is large, so it gets its own venv; tests/k8s/test_checkov.py
# runs `make checkov-venv` (a no-op once installed).
.PHONY: checkov-venv
checkov-venv: $(CHECKOV_VENV)/.installed ## Create .venv-checkov with the pinned checkov

$(CHECKOV_VENV)/.installed: requirements/checkov.lock
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --require-hashes -r requirements/checkov.lock
	touch $@

.PHONY: checkov-lock
checkov-lock: install ## Re-pin requirements/checkov.lock, with sha256 hashes, from requirements/checkov.in
	$(VENV)/bin/uv pip compile requirements/checkov.in --python-version 3.11 --python-platform linux -q --generate-hashes \
		--custom-compile-command "make checkov-lock" -o requirements/checkov.lock

.PHONY: clean
clean: ## Remove the venv and caches
	rm -rf $(VENV) .venv-checkov .pytest_cache .ruff_cache .hypothesis
