# ticketing: `make test` installs everything it needs and runs the whole suite; `make dev` runs the suite locally.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv
UV_VERSION := 0.13.9
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
MEMBERS := common $(sort $(wildcard services/*)) $(sort $(wildcard tools/*))
PYPROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(MEMBERS))
# Checked strictly by mypy, in one run so that each sees the others' types (the web client too: it is new).
TYPED := common/ticketing_common tools/dev/ticketing_dev tools/testing/ticketing_testing services/client/ticketing_client

.PHONY: help install test lint typecheck lock catalog dev dev-reset clean k8s-check k8s-lock test-containers containers browser screenshots

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	@echo "bootstrapping uv $(UV_VERSION) into .tools/ (project-local; the system Python is left alone)"
	@if $(PYTHON) -m venv .tools >/dev/null 2>&1 && .tools/bin/python -m pip --version >/dev/null 2>&1; then \
		.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; \
	else \
		rm -rf .tools; \
		$(PYTHON) -m pip install --quiet --disable-pip-version-check --break-system-packages \
			--target .tools/pkg "uv==$(UV_VERSION)" && mkdir -p .tools/bin && ln -sf ../pkg/bin/uv .tools/bin/uv; \
	fi

$(BIN)/python: | $(UV)
	$(UV) venv --quiet --python $(PYTHON) $(VENV)

$(VENV)/.synced: requirements.lock $(PYPROJECTS) | $(BIN)/python
	$(UV) pip sync --quiet --python $(BIN)/python requirements.lock
	@touch $@

install: $(VENV)/.synced ## Install the locked workspace into .venv

lock: | $(UV) ## Re-pin every dependency (after editing a pyproject.toml)
	@printf -- '-e ./%s\n' $(MEMBERS) > requirements.in
	$(UV) pip compile --quiet requirements.in --group pyproject.toml:dev --generate-hashes \
		--python-version 3.11 --universal --no-header -o requirements.lock
	@# uv writes the members the dev group names (tools/*) as absolute file:// URLs; the lock must work in any checkout.
	@sed -i 's|^-e file://$(CURDIR)/|-e ./|' requirements.lock

lint: install ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

catalog: install ## Regenerate the event catalog (docs/asyncapi.yaml, docs/events/) from the event models
	$(BIN)/ticketing catalog

typecheck: install ## mypy (strict on common and the tools)
	$(BIN)/mypy $(TYPED)

# The Kubernetes checks' tools (checkov, kubernetes-validate, hadolint) live in their own venv, from their own lock.
K8S_TOOLS := .tools/k8s

$(K8S_TOOLS)/bin/python: | $(UV)
	$(UV) venv --quiet --python $(PYTHON) $(K8S_TOOLS)

$(K8S_TOOLS)/.synced: .ci/k8s-tools.lock | $(K8S_TOOLS)/bin/python
	$(UV) pip sync --quiet --python $(K8S_TOOLS)/bin/python .ci/k8s-tools.lock
	@touch $@

k8s-lock: | $(UV) ## Re-pin the Kubernetes check tools (.ci/k8s-tools.in)
	$(UV) pip compile --quiet .ci/k8s-tools.in --generate-hashes --python-version 3.11 --universal --no-header \
		-o .ci/k8s-tools.lock

k8s-check: install $(K8S_TOOLS)/.synced ## Render, schema-validate and security-lint the manifests and Dockerfiles
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/$(K8S_TOOLS)/bin:$$PATH" bash infra/k8s/check.sh

# The browser tests drive Debian's chromium through Playwright; Playwright never downloads a browser here.
CHROMIUM ?= /usr/bin/chromium

browser: ## Install Debian's chromium for the browser tests when it is missing (apt-get; root or sudo)
	@if [ ! -x "$(CHROMIUM)" ]; then \
		echo "installing Debian's chromium for the browser tests (about 40 s)"; \
		if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; \
	fi
	@"$(CHROMIUM)" --version 2>/dev/null | head -n 1

screenshots: install browser ## Retake the README's screenshots of the web client (docs/screenshots/*.png)
	SCREENSHOTS=docs/screenshots CHROMIUM=$(CHROMIUM) $(BIN)/pytest tests/test_browser.py -q

# pytest spreads the test files over PYTEST_WORKERS processes (pytest-xdist; more than the cores, since most tests
# wait on servers); each worker starts its own Postgres and nats-server, and a file stays on one worker with its
# module's stack. The slow system tests come first (testpaths) so that no worker is left with one at the end.
# PYTEST_WORKERS=0 runs everything in one process; PYTEST_ARGS go to both runs, last (a later -n wins).
PYTEST_WORKERS ?= 3
PYTEST_PARALLEL = -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Then the tests marked `alone` (chaos) run by themselves, as they always did: it is the most load-sensitive test, and
# with two other workers on the same two cores its killed services come back late (see the README's Tests).
# Both runs always run; either one failing fails the target; one selecting nothing (status 5, PYTEST_ARGS) does not,
# unless both do.
test: install browser k8s-check ## Lint, type-check and run every package's tests against real Postgres and NATS
	$(BIN)/ruff check .
	$(BIN)/mypy $(TYPED)
	@first=0; second=0; \
	echo "$(BIN)/pytest $(PYTEST_PARALLEL) -m 'not alone' $(PYTEST_ARGS)"; \
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not alone" $(PYTEST_ARGS) || first=$$?; \
	echo "$(BIN)/pytest -m alone $(PYTEST_ARGS)"; \
	$(BIN)/pytest -m alone $(PYTEST_ARGS) || second=$$?; \
	if [ $$first -ne 0 ] && [ $$first -ne 5 ]; then exit $$first; fi; \
	if [ $$second -ne 0 ] && [ $$second -ne 5 ]; then exit $$second; fi; \
	if [ $$first -eq 5 ] && [ $$second -eq 5 ]; then exit 5; fi

# The images on a real container engine (root, Debian/Ubuntu: it installs docker.io and debootstrap when missing and
# runs a private dockerd under .containers/, stopped on exit). See infra/containers/run.sh.
OVERLAY ?= dev

test-containers: install ## Build the six images and run the dev overlay's wiring and the user journey on Docker
	bash infra/containers/run.sh test

containers: install ## Run the images as the manifests wire them (OVERLAY=dev|prod) on http://127.0.0.1:8080
	bash infra/containers/run.sh up $(OVERLAY)

dev: install ## Run the whole suite locally behind one gateway (http://127.0.0.1:8080); Ctrl-C stops it
	@$(BIN)/ticketing dev up

.PHONY: bench
bench: install ## Run the benchmarks against raw baselines (all, or BENCH=write); JSON in bench/results/
	$(BIN)/python -m bench $(BENCH)

.PHONY: soak
soak: install ## Soak the whole stack through its gateway: SOAK_SECONDS (600) at half its write capacity; JSON in bench/results/
	$(BIN)/python -m bench.soak

dev-reset: ## Wipe the local dev state (databases, streams, logs); refuses while `make dev` runs
	@if [ -x $(BIN)/ticketing ]; then $(BIN)/ticketing dev reset; else rm -rf .state; fi

clean: ## Remove the virtual environment and tools
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache .containers
