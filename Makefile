# modelcar: see README.md. `make demo` and `make test` do all set-up on a
# fresh Debian machine (test dependencies need root or sudo).
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin/modelcar
WORK    := .work
SIZE    ?= 2GiB

.PHONY: all build test test-short deps demo bench bench-coldstart lint fmt clean cluster-up cluster-down registry registry-down e2e-coldstart image chart test-faults

all: build

build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/modelcar

# Installs the real peers the end-to-end tests run against (Debian's
# containerd, skopeo, docker-registry, tar, iproute2, util-linux; crane, oras,
# toxiproxy-server and the test cluster's binaries built from tools/); quick
# when already installed.
deps:
	./.ci/install-deps.sh

# Everything, end-to-end tests included; MODELCAR_E2E=1 turns a missing peer
# tool into a failure instead of a skip. The whole `go test -v` output is
# shown and kept in $(TEST_DIR)/test.log; internal/testenv records every
# credential it makes to $(TEST_DIR)/secrets.txt and keeps the logs of the
# services it starts in $(TEST_DIR)/logs; then internal/cmd/leakcheck fails
# the target if any credential shows in the output or those logs. The
# cold-start benchmark's own module (tools/coldstart) is tested too: its
# end-to-end test runs the whole benchmark on a small model.
TEST_DIR := $(WORK)/test

test: deps
	@set -uo pipefail; status=0; \
	mkdir -p $(TEST_DIR) && rm -rf $(TEST_DIR)/test.log $(TEST_DIR)/logs && : > $(TEST_DIR)/secrets.txt; \
	export MODELCAR_SECRETS_FILE=$(abspath $(TEST_DIR))/secrets.txt MODELCAR_TESTENV_LOGS=$(abspath $(TEST_DIR))/logs; \
	MODELCAR_E2E=1 go test -v -count=1 -timeout 30m ./... 2>&1 | tee $(TEST_DIR)/test.log || status=1; \
	(cd tools/coldstart && MODELCAR_E2E=1 go test -v -count=1 -timeout 10m ./...) 2>&1 | tee -a $(TEST_DIR)/test.log || status=1; \
	go run ./internal/cmd/leakcheck -secrets $(TEST_DIR)/secrets.txt $(TEST_DIR)/test.log $$(ls -d $(TEST_DIR)/logs 2>/dev/null) || status=1; \
	exit $$status

# Unit tests only: no peer tools, no root.
test-short:
	go test -short ./...

# The main job end to end on the embedded default model, no external
# service: generate, pack, push to an in-process registry, mirror through an
# archive, pull and verify (internal/cmd/demo).
demo: build
	go run ./internal/cmd/demo -modelcar $(BIN) -work $(WORK)/demo

# Pack throughput per format against the parallel SHA-256 limit measured in
# the same run, then push/pull/mirror against crane, oras, skopeo and the
# registry's raw ingest limit, with peak RSS. SIZE=4GiB make bench for more.
bench: build deps
	go build -o bin/packbench ./internal/cmd/packbench
	./bin/packbench -modelcar $(BIN) -work $(WORK)/bench -size $(SIZE) -json $(WORK)/bench/results.json
	go build -o bin/pushbench ./internal/cmd/pushbench
	./bin/pushbench -modelcar $(BIN) -work $(WORK)/pushbench -size $(SIZE) -json $(WORK)/pushbench/results.json

# Node-side cold start, pull start -> model read, per image format, with a
# real registry behind a tc-shaped link in a private network namespace, real
# containerd, and stargz-snapshotter for lazy pulls (tools/coldstart). Root.
# COLDSTART_SIZE=4GiB, COLDSTART_RATE=10gbit, COLDSTART_RUNS=3 to vary;
# COLDSTART_NODE=containerd2 measures containerd 2.4.2 (pinned in
# tools/coldstart/go.mod, built here) with 3 concurrent unpacks instead of
# Debian's containerd 1.6.
COLDSTART_SIZE ?= 2GiB
COLDSTART_RATE ?= 1gbit
COLDSTART_RUNS ?= 1
COLDSTART_NODE ?= debian
COLDSTART_NODE_FLAGS_debian      := -containerd containerd
COLDSTART_NODE_FLAGS_containerd2 := -containerd bin/containerd-2.4.2 -max-concurrent-unpacks 3
bench-coldstart: build deps
	go build -o bin/genmodel ./internal/cmd/genmodel
	cd tools/coldstart && go build -o ../../bin/coldstart . && go build -o ../../bin/stargz-grpc ./cmd/stargz-grpc && \
	  go build -tags "no_btrfs no_devmapper no_zfs" -o ../../bin/containerd-2.4.2 github.com/containerd/containerd/v2/cmd/containerd
	./bin/coldstart -modelcar $(BIN) -genmodel bin/genmodel -stargz bin/stargz-grpc $(COLDSTART_NODE_FLAGS_$(COLDSTART_NODE)) \
	  -work $(WORK)/coldstart -size $(COLDSTART_SIZE) -rate $(COLDSTART_RATE) -runs $(COLDSTART_RUNS) \
	  -json $(WORK)/coldstart/results-$(COLDSTART_NODE)-$(COLDSTART_RATE).json -md $(WORK)/coldstart/results-$(COLDSTART_NODE)-$(COLDSTART_RATE).md

# The cold-start optimizer's loop closed on a real node (root;
# internal/cmd/e2ecoldstart): the chart serves an E2E_SIZE model through the
# vLLM stand-in on the test cluster's real node; E2E_RUNS cold starts of the
# image a user starts from (one gzip layer), each with the image removed and
# the page cache dropped; `modelcar plan --discover --bench --emit`; every
# emitted change applied (re-pack, pre-pull, chart values); E2E_RUNS cold
# starts again; predicted against measured saving per phase and lever, in
# $(WORK)/e2e-coldstart/results.{md,json}.
E2E_SIZE ?= 2GiB
E2E_RATE ?= 1gbit
E2E_RUNS ?= 3
e2e-coldstart: build deps
	go run ./internal/cmd/e2ecoldstart -modelcar $(BIN) -work $(WORK)/e2e-coldstart/run -size $(E2E_SIZE) -rate $(E2E_RATE) -runs $(E2E_RUNS) \
	  -json $(WORK)/e2e-coldstart/results.json -md $(WORK)/e2e-coldstart/results.md

# modelcar's own container image (amd64 + arm64, static, non-root, no shell),
# built reproducibly with go-containerregistry: an OCI layout in .work/image,
# pushable with `modelcar push oci:.work/image:$(VERSION) REGISTRY/modelcar:$(VERSION)`.
image:
	SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || echo 0)} \
	  go run ./internal/cmd/image -version $(VERSION) -out $(WORK)/image

# The test-only vLLM stand-in (internal/cmd/vllm-standin) as an image built
# the same way, for running the vllm-modelcar chart where vLLM cannot run:
# an OCI layout in .work/standin-image, entrypoint /usr/local/bin/vllm-standin,
# pushable with `modelcar push oci:.work/standin-image:$(VERSION) REGISTRY/vllm-standin:$(VERSION)`.
STANDIN_PLATFORMS ?= linux/amd64,linux/arm64
.PHONY: standin-image
standin-image:
	SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || echo 0)} \
	  go run ./internal/cmd/image -target vllm-standin -platforms $(STANDIN_PLATFORMS) -version $(VERSION) -out $(WORK)/standin-image

HELM ?= $(firstword $(wildcard $(or $(MODELCAR_TOOLS_BIN),$(HOME)/.cache/modelcar-testenv/tools)/helm-v3.22.0) helm)

# The vllm-modelcar Helm chart as $(WORK)/chart/vllm-modelcar-VERSION.tgz. Push it as an OCI artifact:
#   helm push $(WORK)/chart/vllm-modelcar-0.1.0.tgz oci://REGISTRY/charts
#   helm install NAME oci://REGISTRY/charts/vllm-modelcar --version 0.1.0 -f values.yaml
chart:
	$(HELM) lint --strict deploy/charts/vllm-modelcar -f testdata/deploy/base.values.yaml
	$(HELM) package deploy/charts/vllm-modelcar -d $(WORK)/chart

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	cd tools/coldstart && go vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin $(WORK)

# A local Kubernetes test cluster on 127.0.0.1 (internal/testcluster): etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and kwok with fake
# GPU and CPU nodes. The first run builds the binaries (about 10 minutes);
# then it starts in seconds. The last line printed is `export KUBECONFIG=...`:
#   eval "$(make -s cluster-up | tail -1)"
# Tests use this cluster instead of starting their own when
# MODELCAR_CLUSTER_KUBECONFIG names its kubeconfig.
CLUSTER_DIR ?= $(WORK)/cluster

#
# REAL_NODE=1 adds a real node, real-0 (kubelet, containerd 2.4.2, runc;
# root): it pulls from the registry of `make registry` over a link shaped to
# NODE_RATE (tc syntax, default 1gbit), in a network namespace of its own.
REAL_NODE ?=
NODE_RATE ?= 1gbit
cluster-up:
	@go run ./internal/cmd/testcluster up -dir $(CLUSTER_DIR) $(if $(REAL_NODE),-real-node -registry $(REGISTRY_ADDR) -rate $(NODE_RATE))

cluster-down:
	@go run ./internal/cmd/testcluster down -dir $(CLUSTER_DIR)

# A local registry for trying modelcar: Debian's docker-registry on
# $(REGISTRY_ADDR) (plain HTTP, storage in $(WORK)/registry), detached;
# `make registry-down` stops it. Push to it with --plain-http.
REGISTRY_ADDR ?= 127.0.0.1:5000
registry: deps
	@go run ./internal/cmd/testcluster registry-up -dir $(WORK)/registry -addr $(REGISTRY_ADDR)

registry-down:
	@go run ./internal/cmd/testcluster registry-down -dir $(WORK)/registry

# Fault injection, crash consistency, hostile inputs and fuzzing, with the
# figures the README shows (internal/cmd/faultsummary/README.md): the fault
# tests (toxiproxy and HTTP faults against real registries, stalls in every
# request phase, registry restart, revoked credentials, corrupt blobs,
# kill -9 resume and crash points, disk full, token expiry, hostile tars) as
# `go test -json`, then every fuzz target of the module for FUZZTIME each
# (new inputs minimized for at most 5s, so a short budget goes to
# exploring: with Go's default 60s, FuzzResolve made no execution for 8
# of its 11s while it minimized). A fuzz run's verdict is the summary's:
# a crash, a failing input written, or a failed seed is a failure; a bare
# "context deadline exceeded" at the -fuzztime deadline with no input
# written is Go's coordinator race (golang/go#75804, fixed in Go 1.27) and
# is reported as such, not failed;
# each stream shown as `go test -v` would and kept; then the leak check
# (internal/cmd/leakcheck: no credential the tests made in any stream or in
# the logs of the services they started), then the summary table: faults
# injected, survived, failed clearly, bytes lost (must be 0), bytes re-sent,
# fuzz executions and crashes, secrets checked and leaks found (must be 0).
# Streams, secrets.txt, logs/ and summary.md go to $(WORK)/faults; it fails
# when a test or fuzz target fails, a byte was lost or a credential leaked.
#   make test-faults                 # 30s per fuzz target
#   make test-faults FUZZTIME=10m    # longer, by hand
FUZZTIME   ?= 30s
FAULTS_DIR := $(WORK)/faults
FAULTS_RUN := Fault|Toxi|Resume|Crash|DiskFull|Token|Hostile|Extract

test-faults: deps
	@set -uo pipefail; status=0; \
	mkdir -p $(FAULTS_DIR) && rm -rf $(FAULTS_DIR)/*.json $(FAULTS_DIR)/summary.md $(FAULTS_DIR)/leakcheck.out $(FAULTS_DIR)/logs && \
	: > $(FAULTS_DIR)/secrets.txt && go build -o bin/faultsummary ./internal/cmd/faultsummary && \
	go build -o bin/leakcheck ./internal/cmd/leakcheck || exit 1; \
	export MODELCAR_SECRETS_FILE=$(abspath $(FAULTS_DIR))/secrets.txt MODELCAR_TESTENV_LOGS=$(abspath $(FAULTS_DIR))/logs; \
	echo "test-faults: fault tests -> $(FAULTS_DIR)/tests.json"; \
	MODELCAR_E2E=1 go test -json -count=1 -timeout 30m -run '$(FAULTS_RUN)' ./push ./cmd/modelcar ./internal/testenv \
	  | tee $(FAULTS_DIR)/tests.json | bin/faultsummary -print || status=1; \
	targets=$$({ git ls-files -co --exclude-standard '*_test.go' 2>/dev/null || find . -name '*_test.go'; } \
	  | grep -v -e '^tools/' -e '^\./tools/' -e '^\./\.work/' \
	  | xargs grep -Ho '^func Fuzz[A-Za-z0-9_]*(' | sed -E 's|^(.*)/[^/]*:func (Fuzz[A-Za-z0-9_]*)\($$|\1 \2|' | sort -u); \
	while read -r dir name; do \
	  [[ -n "$$name" ]] || continue; \
	  echo "test-faults: fuzzing $$dir $$name for $(FUZZTIME) -> $(FAULTS_DIR)/fuzz-$$name.json"; \
	  { go test -json -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./$$dir || true; } \
	    | tee $(FAULTS_DIR)/fuzz-$$name.json | bin/faultsummary -print || status=1; \
	done <<< "$$targets"; \
	bin/leakcheck -secrets $(FAULTS_DIR)/secrets.txt -o $(FAULTS_DIR)/leakcheck.out \
	  $(FAULTS_DIR)/*.json $$(ls -d $(FAULTS_DIR)/logs 2>/dev/null) || status=1; \
	bin/faultsummary -leaks $(FAULTS_DIR)/leakcheck.out -o $(FAULTS_DIR)/summary.md $(FAULTS_DIR)/*.json || status=1; \
	exit $$status
