# m3sup — see README.md.
#   make run    build m3sup and run a single-node M3 cluster in the foreground
#   make unit   unit tests of every package but e2e/ and bench/, -race -short; no M3
#   make e2e    the end-to-end tests in e2e/ (root; real etcd, containerd, runc, M3; ~22 minutes)
#   make test   vet, fuzz, unit, e2e: what CI runs (.ci/run)
#   make fuzz   each fuzz target for FUZZ_TIME (default 10s)
#   make bench  benchmarks; figures go to BENCHMARKS.md

GO          ?= go
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
BIN         := bin/m3sup
M3_VERSION  ?= 1.5.0
M3_DIR      := $(CURDIR)/.cache/m3-release
M3_TARBALL  := $(M3_DIR)/m3_$(M3_VERSION)_linux_amd64.tar.gz
M3_SUMS     := $(M3_DIR)/m3_$(M3_VERSION)_checksums.txt
DATA_DIR    ?= /var/lib/m3sup
TEST_FLAGS  ?=

export GOFLAGS := -buildvcs=false

.PHONY: all build run test unit e2e bench prereqs prereqs-test m3-release vet fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/m3sup

prereqs:
	@scripts/prereqs.sh

# containerd and runc, plus what the tests use: docker-registry and curl.
prereqs-test:
	@scripts/prereqs.sh test

# The official release is on GitHub; with no internet, build the same tarball
# from the Go module proxy (cached after the first time).
m3-release:
	@M3_VERSION=$(M3_VERSION) scripts/build-m3-release.sh $(M3_DIR)

run: build prereqs m3-release
	$(BIN) run --data-dir $(DATA_DIR) \
	  --release-url $(M3_TARBALL) \
	  --release-checksum sha256:$$(cut -d' ' -f1 $(M3_SUMS))

vet:
	$(GO) vet ./...

# Each fuzz target runs for FUZZ_TIME on its own (go test -fuzz takes one
# target per run), from its seeds (f.Add) and whatever it found before (the
# fuzz cache). A failure writes the input to <pkg>/testdata/fuzz/: commit it
# with the fix, and it becomes a regression test that every `go test` runs.
FUZZ_TIME ?= 10s
FUZZ_TARGETS := \
	FuzzLoad:./supervisor/config/ \
	FuzzVerifyBundle:./bundle/ \
	FuzzBundleManifest:./bundle/ \
	FuzzUnpack:./bundle/ \
	FuzzParseToken:./supervisor/join/ \
	FuzzDecodeRequest:./supervisor/join/ \
	FuzzCrashReason:./supervisor/m3/

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  name=$${t%%:*}; pkg=$${t#*:}; \
	  echo "fuzz $$name ($$pkg, $(FUZZ_TIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZ_TIME) $$pkg; \
	done

# Everything CI checks, in order: the test prerequisites (so that no unit
# test skips for want of docker-registry), vet, fuzz, unit (with the tests
# -short skips), e2e.
test: SHORT :=
test: prereqs-test vet fuzz unit e2e

# Unit tests: every package but the end-to-end suite (e2e/) and the
# benchmarks (bench/, which holds no tests). No M3. -short skips the three
# supervisor/store tests that grow and shrink a three-member etcd (about a
# minute: etcd accepts a membership change only once every member has been
# connected for 5 s); `make test` runs them.
SHORT ?= -short
unit:
	$(GO) test -race -count=1 -timeout 10m $(SHORT) $(TEST_FLAGS) \
	  $$($(GO) list ./... | grep -v -e '/e2e$$' -e '/bench$$')

# The end-to-end tests run real etcd, containerd, runc and M3 binaries; they
# need root, and prereqs.sh installs containerd, runc, docker-registry and
# curl. The suite builds m3sup once, with -race like its own test binary.
e2e: prereqs-test m3-release
	M3SUP_E2E_RELEASE=$(M3_TARBALL) $(GO) test -race -count=1 -timeout 60m $(TEST_FLAGS) ./e2e/

# bench/ starts m3sup and M3 for real (one start per iteration, hence 1x):
# time to ready against a baseline in M3SUP_BENCH_ROUNDS alternating pairs
# (default 5), idle RSS, binary size. Then three hosts on 127.0.0.2-4 (time
# to ready, rolling restart against three single restarts, failed writes),
# then the packages' micro-benchmarks.
BENCH_ROUNDS ?= 7
bench: prereqs m3-release
	M3SUP_E2E_RELEASE=$(M3_TARBALL) M3SUP_BENCH_ROUNDS=$(BENCH_ROUNDS) \
	  $(GO) test ./bench/ -run '^$$' -bench . -benchtime 1x -timeout 60m
	M3SUP_E2E_RELEASE=$(M3_TARBALL) \
	  $(GO) test ./e2e/ -run '^$$' -bench ThreeHosts -benchtime 1x -timeout 30m
	$(GO) test ./bundle/ ./runtime/... -run '^$$' -bench . -benchtime 3x -timeout 30m
	$(GO) test ./supervisor/m3/cpucore/ -run '^$$' -bench . -benchtime 1000x

clean:
	rm -rf bin
