# modelcar: see README.md. `make demo` and `make test` do all set-up on a
# fresh Debian machine (test dependencies need root or sudo).
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin/modelcar
WORK    := .work
SIZE    ?= 2GiB

.PHONY: all build test test-short deps demo bench lint fmt clean

all: build

build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/modelcar

# Installs the real peers the end-to-end tests run against (containerd,
# skopeo, docker-registry, crane, oras); quick when already installed.
deps:
	./.ci/install-deps.sh

# Everything, end-to-end tests included; MODELCAR_E2E=1 turns a missing peer
# tool into a failure instead of a skip.
test: deps
	MODELCAR_E2E=1 go test -count=1 -timeout 30m ./...

# Unit tests only: no peer tools, no root.
test-short:
	go test -short ./...

# Packs the embedded default model (generated, deterministic) in two layouts
# and inspects them; needs no external service.
demo: build
	@rm -rf $(WORK)/demo && mkdir -p $(WORK)/demo
	go run ./internal/cmd/genmodel -out $(WORK)/demo/model -size 256MiB -shards 4 -seed 1
	@echo; echo '$$ modelcar pack $(WORK)/demo/model --output oci:$(WORK)/demo/oci:v1'
	@time $(BIN) pack $(WORK)/demo/model --output oci:$(WORK)/demo/oci:v1
	@echo; echo '$$ modelcar pack $(WORK)/demo/model --format estargz --output oci-archive:$(WORK)/demo/model-estargz.tar:v1'
	@time $(BIN) pack $(WORK)/demo/model --format estargz --output oci-archive:$(WORK)/demo/model-estargz.tar:v1
	@echo; echo '$$ modelcar pack (again: unchanged files come from the digest cache)'
	@time $(BIN) pack $(WORK)/demo/model --output oci:$(WORK)/demo/oci:v1
	@echo; $(BIN) inspect oci:$(WORK)/demo/oci:v1
	@echo; $(BIN) inspect oci-archive:$(WORK)/demo/model-estargz.tar:v1

# Pack throughput per format against the parallel SHA-256 limit measured in
# the same run, with peak RSS. SIZE=4GiB make bench for a larger model.
bench: build
	go build -o bin/packbench ./internal/cmd/packbench
	./bin/packbench -modelcar $(BIN) -work $(WORK)/bench -size $(SIZE) -json $(WORK)/bench/results.json

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin $(WORK)
