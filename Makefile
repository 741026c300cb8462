# volsnap — build, test and demo targets.
#
# `make` (or `make help`) lists the targets. Every target works on a fresh
# Debian machine: `make test` and `make bench` install the tools they need
# (GNU tar, gzip, zstd, pigz, GNU time, util-linux's setpriv, openssl) when
# they are missing and the caller is root; otherwise they only say what is
# missing.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
DEMO_ROOT ?= /tmp/volsnap-demo
STATE ?= .volsnap
CRDS_FILE := crds/volsnap.dev.yaml
# Tests run the binary built with the fault-injection points compiled in
# (they are inert unless VOLSNAP_FAULT is set); `make run` and `make release`
# build without them.
TEST_FEATURES := --features fault-injection

# Debian packages the tests and the benchmark rely on, as "command:package".
# The benchmark generates its datasets with openssl (AES-CTR keystream: the
# same bytes on every machine), which minimal Debian images lack.
TEST_TOOLS := tar:tar gzip:gzip zstd:zstd setpriv:util-linux /usr/bin/time:time
BENCH_TOOLS := $(TEST_TOOLS) pigz:pigz openssl:openssl findmnt:util-linux

.PHONY: help
help: ## Show this help
	@echo "volsnap — make targets:"
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the debug binary (target/debug/volsnap)
	$(CARGO) build

.PHONY: release
release: ## Build the release binary (target/release/volsnap)
	$(CARGO) build --release

.PHONY: demo-data
demo-data: ## Create the demo volumes under /tmp/volsnap-demo (idempotent)
	DEMO_ROOT=$(DEMO_ROOT) bash examples/demo-data.sh

.PHONY: run
run: demo-data ## Run the daemon on examples/ with demo data under /tmp/volsnap-demo
	$(CARGO) run --release -- run --manifests examples --state $(STATE) --allowed-root $(DEMO_ROOT)

.PHONY: test-deps
test-deps: ## Install the tools the tests need (root only; no-op when present)
	@$(call install_missing,$(TEST_TOOLS))

.PHONY: bench-deps
bench-deps: ## Install the tools the benchmark needs (root only; no-op when present)
	@$(call install_missing,$(BENCH_TOOLS))

# Runs a recipe line with VOLSNAP_REQUIRE_DOCKER=1 when a Docker Engine is
# (or could be made) available: the Docker tests then fail rather than skip.
# ensure-docker.sh exits 2 only when it cannot start an engine (not root, no
# apt-get); the Docker tests then skip with a message.
define with_docker
rc=0; bash tests/docker/ensure-docker.sh || rc=$$?; \
if [ $$rc = 0 ]; then export VOLSNAP_REQUIRE_DOCKER=1; \
elif [ $$rc = 2 ]; then echo "note: no Docker Engine and none can be started here: the Docker tests skip"; \
else exit $$rc; fi; \
$(1)
endef

.PHONY: docker-env
docker-env: ## Make sure a Docker Engine answers and the test image exists (as root: installs docker.io, starts dockerd)
	bash tests/docker/ensure-docker.sh

.PHONY: test
test: test-deps ## Run all tests (unit, e2e incl. Docker, Kubernetes and CRD staleness), rustfmt check and clippy
	bash tests/k8s/build-control-plane.sh
	@bash tests/k8s/cluster-up.sh
	@rc=0; ( $(call with_docker,VOLSNAP_REQUIRE_K8S=1 $(CARGO) test $(TEST_FEATURES) --all-targets --no-fail-fast) ) || rc=$$?; \
	bash tests/k8s/cluster-down.sh; exit $$rc
	$(CARGO) fmt --all --check
	$(CARGO) clippy $(TEST_FEATURES) --all-targets -- -D warnings
	$(CARGO) clippy --all-targets -- -D warnings

.PHONY: e2e
e2e: test-deps ## Run only the end-to-end tests (tests/e2e)
	@$(call with_docker,$(CARGO) test $(TEST_FEATURES) --test e2e)

# A local Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager; no scheduler or kubelet) for controller tests,
# built from Go modules into ~/.cache/volsnap/k8s (VOLSNAP_K8S_CACHE), with
# its state and admin kubeconfig under .e2e/. See tests/k8s/.
.PHONY: cluster-up
cluster-up: ## Build (first time ~10 min, then cached) and start a local Kubernetes control plane; kubeconfig in .e2e/kubeconfig
	bash tests/k8s/build-control-plane.sh
	bash tests/k8s/cluster-up.sh

.PHONY: cluster-down
cluster-down: ## Stop the control plane that cluster-up started (safe to repeat; keeps .e2e/ logs)
	bash tests/k8s/cluster-down.sh

# bench/bench.sh finds the binary where cargo put it (CARGO_TARGET_DIR or
# target/). BENCH_RUNS, BENCH_SIZE_MB, BENCH_SMALL_FILES, BENCH_DIR: see it.
.PHONY: bench
bench: bench-deps ## Release build, then one table: capture/restore time, MiB/s, size, peak RSS vs tar+gzip/pigz/zstd (long: see README, Benchmark)
	$(CARGO) build --release
	bash bench/bench.sh

.PHONY: crds
crds: ## Regenerate crds/volsnap.dev.yaml from the Rust types (`volsnap crds`)
	@mkdir -p crds
	$(CARGO) run -q -- crds > $(CRDS_FILE).tmp
	mv $(CRDS_FILE).tmp $(CRDS_FILE)

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: lint
lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings

.PHONY: clean
clean: ## Remove build output, the demo state and demo data
	$(CARGO) clean
	rm -rf $(STATE) $(DEMO_ROOT)

# install_missing: apt-get install the packages whose command is missing.
# Runs `apt-get update` at most once, and only when something is missing.
# Without root (or without apt-get) it prints what is missing and goes on:
# the tests that need a tool skip themselves with a message.
define install_missing
missing=""; \
for pair in $(1); do \
	cmd="$${pair%%:*}"; pkg="$${pair##*:}"; \
	command -v "$$cmd" >/dev/null 2>&1 || missing="$$missing $$pkg"; \
done; \
if [ -z "$$missing" ]; then exit 0; fi; \
if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	echo "note: missing tools:$$missing (not root or no apt-get: not installing; dependent tests skip)"; \
	exit 0; \
fi; \
echo "installing:$$missing"; \
export DEBIAN_FRONTEND=noninteractive; \
apt-get update -qq; \
apt-get install -y -qq --no-install-recommends $$missing
endef
