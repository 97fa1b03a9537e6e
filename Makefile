GO ?= go
GOFMT ?= gofmt
BIN = bin

# golangci-lint is pinned and built into .cache/bin (git-ignored) on first use.
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT = .cache/bin/golangci-lint-$(GOLANGCI_LINT_VERSION)

.PHONY: all build test test-in-rig test-unit fmt-check vet lint bench run clean

all: build

build:
	$(GO) build -o $(BIN)/flowd ./cmd/flowd

# test: every check, with the integration tests running against a real Kafka broker and a real
# redis-server that tools/rig/with-rig.sh starts before and stops after.
test:
	tools/rig/with-rig.sh $(MAKE) --no-print-directory test-in-rig

# test-in-rig is what `make test` runs inside the rig; on its own it would skip the
# integration tests, so it refuses to run without the rig.
test-in-rig: fmt-check vet
	@test -n "$$FLOWD_REQUIRE_RIG" || { echo "test-in-rig runs inside the rig: use 'make test'" >&2; exit 2; }
	@echo "go test: kafka $$FLOWD_TEST_KAFKA_VERSION at $$FLOWD_TEST_KAFKA_BROKERS, redis at $$FLOWD_TEST_REDIS_URL"
	$(GO) test -race -count=1 ./...

# test-unit: no rig; the integration tests skip and say so.
test-unit:
	$(GO) test -count=1 ./...

fmt-check:
	@files=$$(find . -path ./.cache -prune -o -name '*.go' -print | xargs -r $(GOFMT) -l); \
	if [ -n "$$files" ]; then echo "gofmt -w needed on:"; echo "$$files"; exit 1; fi

vet:
	$(GO) vet ./...

lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

$(GOLANGCI_LINT):
	GOBIN=$(CURDIR)/.cache/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv .cache/bin/golangci-lint $@

bench:
	@echo "no benchmarks yet"

run: build
	$(BIN)/flowd dev --example deployments/examples/hello-flow.json

clean:
	rm -rf $(BIN)
