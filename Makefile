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
check: install lint manifest-check rules-check ## The full check CI runs: every suite (processes, tooling, k8s, container, cluster)
	$(PY) -m pytest --durations=25

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
lock: install ## Re-pin requirements/runtime.lock, build.lock and dev.lock, with sha256 hashes
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
mutation: install ## Mutation-test src/ against the fast tests; fails under a 95% score (~3-5 min)
	$(PY) -m mutation

# --- Container image ------------------------------------------------------------

# The build itself is scripts/docker/build-image.sh (build_and_run.sh and the minikube steps
# run it too, with no make): it tags the release tag user-hasher:VERSION and the build's own
# unique reference user-hasher:VERSION-<image id>, which the deploy targets roll to.
# DOCKER, BASE_IMAGE, VCS_REF and SOURCE_URL given to make reach it (its header says how
# each defaults).
BUILD_IMAGE := scripts/docker/build-image.sh
# Where the build script records the ID of the image it built (for other targets to read).
IMAGE_ID_FILE := build/image.id
# Any docker client (the build script's default too).
DOCKER ?= docker
export DOCKER
# Built by `make base-image` where Docker Hub is unreachable (CI here). It trusts that machine's
# local CA certificates: a stand-in for CI, never the base of a shipped image.
LOCAL_BASE_IMAGE := user-hasher-base:bookworm
export LOCAL_BASE_IMAGE

.PHONY: image
image: ## Build the image: tags user-hasher:VERSION and the build's own VERSION-<image id>
	$(BUILD_IMAGE) >/dev/null

.PHONY: image-ref
image-ref: ## Print the unique reference of the image `make image` built last
	@$(BUILD_IMAGE) --ref

# One CycloneDX JSON file per build, named after the build's unique reference.
SBOM_DIR := build/sbom

.PHONY: sbom
sbom: install ## CycloneDX SBOM of the image `make image` built last, read from its venv, into build/sbom/
	@ref=$$($(MAKE) --no-print-directory -s image-ref) && DOCKER=$(DOCKER) $(PY) scripts/docker/image_sbom.py \
		--image "$$(cat $(IMAGE_ID_FILE))" --ref "$$ref" --output-dir $(SBOM_DIR)

.PHONY: base-image
base-image: ## Build the local Debian base (once; reused) for machines without Docker Hub
	scripts/docker/build-base-image.sh $(LOCAL_BASE_IMAGE)

# --- Kubernetes -----------------------------------------------------------------

# Written for a laptop with minikube and kubectl. The deploy targets (minikube-deploy,
# rollout, smoke, undeploy) need only docker, minikube, kubectl, bash and coreutils: no
# Python. The names are those in k8s/; tests/k8s checks they agree.
MANIFEST := user_hasher.yaml
# The fragments user_hasher.yaml joins: the dev flavour, i.e. the base (k8s/base/) and the
# test Secret (k8s/dev/), in file-name order; `kubectl apply -k k8s/dev` gives the same
# objects in the same order. k8s/production/ and k8s/monitoring/ are not among them (the
# latter needs the Prometheus Operator's CRDs, which a plain cluster lacks).
FRAGMENT_DIRS := k8s/base k8s/dev
FRAGMENTS := $(foreach name,$(sort $(notdir $(wildcard $(FRAGMENT_DIRS:%=%/[0-9]*.yaml)))),\
	$(wildcard $(FRAGMENT_DIRS:%=%/$(name))))
K8S_NAMESPACE := user-hasher
K8S_APP := user-hasher
MINIKUBE_PROFILE ?= minikube
# The minikube command. The cluster tests put a stand-in here (tests/support/minikube_stand_in.py).
MINIKUBE ?= minikube
# Every kubectl call names minikube's context, so these targets never touch whatever
# cluster the current context happens to point at.
KUBECTL := kubectl --context $(MINIKUBE_PROFILE)
# The only minikube-specific steps (start it, load the image into it); all the rest is
# plain kubectl (scripts/k8s/deploy.sh).
MINIKUBE_STEPS := MINIKUBE_PROFILE=$(MINIKUBE_PROFILE) MINIKUBE="$(MINIKUBE)" scripts/k8s/minikube_steps.sh
# A rollout is one step per replica (a pod start plus minReadySeconds); 300 s covers
# several steps and a slow first image load, and a stuck rollout fails sooner anyway,
# when it passes the Deployment's progressDeadlineSeconds.
ROLLOUT_TIMEOUT := 300s
# What scripts/k8s/deploy.sh acts on.
DEPLOY_ENV := KUBE_CONTEXT=$(MINIKUBE_PROFILE) NAMESPACE=$(K8S_NAMESPACE) DEPLOYMENT=$(K8S_APP) \
	MANIFEST=$(MANIFEST) ROLLOUT_TIMEOUT=$(ROLLOUT_TIMEOUT)
CHECKOV_VENV := .venv-checkov

# user_hasher.yaml as the fragments make it, on stdout.
JOIN_FRAGMENTS := { echo '\# GENERATED by `make manifest`: the dev flavour: k8s/base/ and k8s/dev/ fragments joined; edit those, not this file.'; \
	for fragment in $(FRAGMENTS); do printf -- '---\n\# Source: %s\n' "$$fragment"; cat "$$fragment"; done; }

.PHONY: manifest
manifest: ## Write user_hasher.yaml: the k8s/ fragments joined (commit both)
	@$(JOIN_FRAGMENTS) >$(MANIFEST).tmp && mv $(MANIFEST).tmp $(MANIFEST)
	@echo "wrote $(MANIFEST) from $(words $(FRAGMENTS)) fragments of k8s/base/ and k8s/dev/"

.PHONY: manifest-check
manifest-check: ## Fail if user_hasher.yaml differs from what `make manifest` writes (tests; not the deploy path)
	@$(JOIN_FRAGMENTS) | diff -u $(MANIFEST) - \
		|| { echo "$(MANIFEST) is out of date: run make manifest and commit it" >&2; exit 1; }

.PHONY: rules
rules: install ## Render k8s/monitoring/prometheusrule.yaml from the SLO spec k8s/monitoring/rules/spec.yaml
	$(PY) scripts/k8s/render_prometheus_rules.py

.PHONY: rules-check
rules-check: install ## Fail if k8s/monitoring/prometheusrule.yaml differs from what `make rules` renders
	$(PY) scripts/k8s/render_prometheus_rules.py --check

.PHONY: minikube-deploy
minikube-deploy: ## Start minikube if needed, build the image and load it into minikube, apply user_hasher.yaml with it, wait
	$(MINIKUBE_STEPS) start
	ref="$$($(MINIKUBE_STEPS) build-image)" && $(DEPLOY_ENV) scripts/k8s/deploy.sh apply "$$ref"

.PHONY: rollout
rollout: ## Rebuild the image into minikube and roll the Deployment to it (or restart it), wait; IMAGE_REF=ref: to that build
	ref="$(or $(IMAGE_REF),$$($(MINIKUBE_STEPS) build-image))" \
		&& $(DEPLOY_ENV) scripts/k8s/deploy.sh roll "$$ref"

.PHONY: smoke
smoke: ## Port-forward the Service's http port and a pod's metrics port to localhost; run scripts/smoke.sh against them
	scripts/k8s/port_forward_smoke.sh $(MINIKUBE_PROFILE) $(K8S_NAMESPACE) $(K8S_APP)

.PHONY: test-cluster
test-cluster: install ## Run only the live-cluster tests (tests/cluster; `make check` runs them too)
	$(PY) -m pytest -m cluster

.PHONY: rehearse
rehearse: install ## Prove zero downtime on a local cluster of its own: scenarios under load (~5 min; root)
	$(PY) -m rehearsal

.PHONY: rehearse-nodes
rehearse-nodes: install ## The same on three nodes in three zones: drains, an upgrade, control plane and kube-proxy stopped, a node's death (~9 min; root)
	$(PY) -m rehearsal --nodes

# The in-cluster check's load: requests per second, and seconds (10 s steady, the rollout,
# and at least 10 s after it; raise it where a rollout takes longer).
CHECK_RATE ?= 200
CHECK_SECONDS ?= 75

# NODE=name: drain that node instead of restarting the rollout (it DISRUPTS a real node:
# every pod on it is evicted, then it is uncordoned).
NODE ?=

.PHONY: rollout-check
rollout-check: install ## Verification (needs the dev venv): load the Service from a Job in the cluster during `kubectl rollout restart` (NODE=x: a drain of node x); 0 failed or exit 1
	$(PY) -m rehearsal.rollout_check --context $(MINIKUBE_PROFILE) --namespace $(K8S_NAMESPACE) \
		--deployment $(K8S_APP) --rate $(CHECK_RATE) --seconds $(CHECK_SECONDS) $(if $(NODE),--node $(NODE))

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
