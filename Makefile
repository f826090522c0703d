# Two commands for a fresh machine: `make serve` and `make test`. Each creates .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama.cpp is built for any AVX2 x86-64 CPU, not with -march=native: a native build on a CPU
# with AMX crashes at its first token (ldtilecfg faults) where the kernel grants no AMX state,
# as in sandboxes. Ignored on other architectures.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: install serve test lint typecheck unit bench fix browser cluster-tools deploy-tools sdk-js cluster cluster-down cluster-test

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	# llama-cpp-python compiles from source on first install (~5-12 min on 2 cores);
	# pip caches the wheel, so later installs on the same machine take seconds.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/tiergate serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy

# The dashboard test drives Debian's Chromium (Playwright cannot download a browser here).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "install Chromium for the dashboard test: sudo apt-get install chromium"; fi; }

# The cluster suite (tests/cluster) runs three replicas behind Debian's HAProxy, driven through
# its stats socket with socat.
cluster-tools:
	@command -v haproxy >/dev/null && command -v socat >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq haproxy socat; \
	  else echo "install HAProxy and socat for the cluster suite: sudo apt-get install haproxy socat"; fi; }

# The image's init (tini as PID 1) is started by tests/deploy/test_pid1.py as the image does.
deploy-tools:
	@command -v tini >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq tini; \
	  else echo "install tini for the PID 1 test: sudo apt-get install tini"; fi; }

# The Node SDK tests (tests/sdk_js) run the official `openai` and `@anthropic-ai/sdk` packages
# with Node.js 20+, installed by npm ci from the committed lock file (again only when it changes).
SDK_JS := tests/sdk_js
sdk-js: $(SDK_JS)/node_modules/.installed

$(SDK_JS)/node_modules/.installed: $(SDK_JS)/package.json $(SDK_JS)/package-lock.json
	@command -v npm >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nodejs npm; fi; }
	@if command -v npm >/dev/null; then \
	  cd $(SDK_JS) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "install Node.js 20+ and npm for the Node SDK tests: sudo apt-get install nodejs npm"; fi

unit: install browser cluster-tools deploy-tools sdk-js
	$(BIN)/pytest

test: lint typecheck unit

bench: install
	$(BIN)/tiergate bench

# The local cluster (deploy/local/cluster.sh): three replicas behind HAProxy on one PostgreSQL
# and one Redis. `make cluster` leaves it running (state in .cluster/), `make cluster-down` stops it.
cluster: install
	@deploy/local/cluster.sh up

cluster-down:
	deploy/local/cluster.sh down

# Its own cluster (in .cluster-test/, so a `make cluster` may be running), the suite, the
# teardown whatever the outcome; the checks' counts go to bench/results/cluster-*.json.
CLUSTER_TEST_DIR := $(CURDIR)/.cluster-test
cluster-test: install
	TIERGATE_CLUSTER_DIR=$(CLUSTER_TEST_DIR) deploy/local/cluster.sh up
	TIERGATE_CLUSTER_ENV=$(CLUSTER_TEST_DIR)/env TIERGATE_CLUSTER_RESULTS=$(CURDIR)/bench/results \
	  PYTHONPATH=$(CURDIR) $(BIN)/pytest tests/cluster -s -p no:cacheprovider; \
	  rc=$$?; TIERGATE_CLUSTER_DIR=$(CLUSTER_TEST_DIR) deploy/local/cluster.sh down; exit $$rc

fix: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
