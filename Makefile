GO ?= go
GOFMT ?= gofmt
BIN = bin

# golangci-lint is pinned and built into .cache/bin (git-ignored) on first use.
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT = .cache/bin/golangci-lint-$(GOLANGCI_LINT_VERSION)

.PHONY: all build console test test-in-rig test-unit test-console fmt-check vet lint bench run clean generate

# Connector protocol code generators, pinned and built into .cache/bin like golangci-lint.
# protoc itself comes from Debian (apt-get install protobuf-compiler).
PROTOC_GEN_GO_VERSION ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.2
PROTOC_GEN_GO = .cache/bin/protoc-gen-go-$(PROTOC_GEN_GO_VERSION)
PROTOC_GEN_GO_GRPC = .cache/bin/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION)
# grpcio-tools generates the Python stubs; its minor version follows the Go grpc module.
GRPCIO_TOOLS_VERSION ?= 1.85.1
PY_GEN_VENV = .cache/py-grpcio-tools-$(GRPCIO_TOOLS_VERSION)
CONNECTOR_PROTO = connectors/sdk/proto/connector/v1/connector.proto
# The Python SDK's package (connectors/sdk/python/flowd_connector) holds the Python stubs.
PY_SDK = connectors/sdk/python

# Go modules of the repository: flowd itself and the connector SDK (its own module, so that a
# connector depending on it does not pull flowd's server code).
MODULES = . connectors/sdk

# Built-in connectors: every connectors/<name>/ with a main.go becomes bin/connectors/<name>.
CONNECTORS = $(patsubst %/main.go,%,$(wildcard connectors/*/main.go))

# The web console (console/, a Vite + TypeScript + React app): npm builds it into console/dist,
# which the flowd binary embeds (package console). The stamp is touched after a build that
# succeeded, so the app is rebuilt only when its sources change; npm ci runs again only when
# package-lock.json is newer than the install (node_modules/.package-lock.json, which npm writes).
NPM ?= npm
CONSOLE_APP = $(wildcard console/package.json)
CONSOLE_STAMP = console/dist/.stamp
CONSOLE_INSTALL = console/node_modules/.package-lock.json
CONSOLE_SRC = $(shell find console/src console/public -type f 2>/dev/null) \
	$(wildcard console/index.html console/package.json console/package-lock.json console/vite.config.ts console/tsconfig*.json)

all: build

build: console
	$(GO) build -o $(BIN)/flowd ./cmd/flowd
ifneq ($(CONNECTORS),)
	@mkdir -p $(BIN)/connectors
	$(GO) build -o $(BIN)/connectors/ $(addprefix ./,$(CONNECTORS))
endif

ifneq ($(CONSOLE_APP),)
console: $(CONSOLE_STAMP)

# Vite empties console/dist first: the placeholder go:embed needs without a build is put back.
# A dist that lost its index.html (emptied by hand) is built again whatever the stamp says.
$(CONSOLE_STAMP): $(CONSOLE_INSTALL) $(CONSOLE_SRC) $(if $(wildcard console/dist/index.html),,console-force)
	cd console && $(NPM) run build
	@touch console/dist/.gitkeep $@

.PHONY: console-force
console-force:

$(CONSOLE_INSTALL): console/package-lock.json
	cd console && $(NPM) ci --no-audit --no-fund
	@mkdir -p $(@D) && touch $@
else
console:
	@echo "console/package.json not found: the binary embeds no console (/ answers 503)" >&2
endif

# test: every check, with the integration tests running against a real Kafka broker and a real
# redis-server that tools/rig/with-rig.sh starts before and stops after.
test:
	tools/rig/with-rig.sh $(MAKE) --no-print-directory test-in-rig

# test-in-rig is what `make test` runs inside the rig; on its own it would skip the
# integration tests, so it refuses to run without the rig. The console's unit tests run before
# the Go tests, its browser tests (test-console) after them.
test-in-rig: fmt-check vet console
	@test -n "$$FLOWD_REQUIRE_RIG" || { echo "test-in-rig runs inside the rig: use 'make test'" >&2; exit 2; }
	$(if $(CONSOLE_APP),cd console && $(NPM) test)
	@echo "go test: kafka $$FLOWD_TEST_KAFKA_VERSION at $$FLOWD_TEST_KAFKA_BROKERS, redis at $$FLOWD_TEST_REDIS_URL"
	@# The whole-stack packages (cmd/flowd, internal/e2e) take minutes on two cores; a busy
	@# machine must not turn go test's default 10-minute limit into a failure.
	tools/gotest.sh -race -count=1 -timeout 25m
	$(MAKE) --no-print-directory test-console

# test-console: the console's browser tests (console/e2e). They start a `flowd dev` of their own
# from the binary and connectors built here, and leave screenshots in console/test-results/.
test-console: build
ifneq ($(CONSOLE_APP),)
	cd console && FLOWD_BIN=$(CURDIR)/$(BIN)/flowd FLOWD_CONNECTORS_DIR=$(CURDIR)/$(BIN)/connectors $(NPM) run e2e
else
	@echo "console/package.json not found: no browser tests to run" >&2
endif

# test-unit: no rig; the integration tests skip and say so.
test-unit:
	for m in $(MODULES); do (cd $$m && $(GO) test -count=1 ./...) || exit 1; done

fmt-check:
	@files=$$(find . -path ./.cache -prune -o -name '*.go' -print | xargs -r $(GOFMT) -l); \
	if [ -n "$$files" ]; then echo "gofmt -w needed on:"; echo "$$files"; exit 1; fi

vet:
	for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

lint: $(GOLANGCI_LINT) $(if $(CONSOLE_APP),$(CONSOLE_INSTALL))
	for m in $(MODULES); do (cd $$m && $(CURDIR)/$(GOLANGCI_LINT) run ./...) || exit 1; done
	@if [ -n "$(CONSOLE_APP)" ] && node -e 'process.exit(require("./console/package.json").scripts?.lint ? 0 : 1)'; then \
		echo "cd console && $(NPM) run lint"; cd console && $(NPM) run lint; \
	fi

$(GOLANGCI_LINT):
	GOBIN=$(CURDIR)/.cache/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv .cache/bin/golangci-lint $@

# generate: the connector protocol's Go code (checked in) and, when python3 is present, the
# Python stubs of the Python SDK, generated as flowd_connector/connector.proto so that they import
# each other through the package.
generate: $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC)
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
	protoc -I connectors/sdk/proto \
		--plugin=protoc-gen-go=$(PROTOC_GEN_GO) --go_out=connectors/sdk/proto --go_opt=paths=source_relative \
		--plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GO_GRPC) --go-grpc_out=connectors/sdk/proto --go-grpc_opt=paths=source_relative \
		$(CONNECTOR_PROTO)
	@if command -v python3 >/dev/null; then \
		set -e; \
		test -x $(PY_GEN_VENV)/bin/python || { python3 -m venv $(PY_GEN_VENV) && $(PY_GEN_VENV)/bin/pip install -q grpcio-tools==$(GRPCIO_TOOLS_VERSION); }; \
		echo "grpc_tools.protoc -> $(PY_SDK)/flowd_connector"; \
		$(PY_GEN_VENV)/bin/python -m grpc_tools.protoc -I flowd_connector=$(dir $(CONNECTOR_PROTO)) \
			--python_out=$(PY_SDK) --grpc_python_out=$(PY_SDK) $(CONNECTOR_PROTO); \
	else echo "python3 not found: Python stubs not regenerated" >&2; fi

$(PROTOC_GEN_GO):
	GOBIN=$(CURDIR)/.cache/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	mv .cache/bin/protoc-gen-go $@

$(PROTOC_GEN_GO_GRPC):
	GOBIN=$(CURDIR)/.cache/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	mv .cache/bin/protoc-gen-go-grpc $@

# bench: the load benchmark (tools/bench, docs/performance.md) against the rig's real broker and
# redis-server: a table on stdout and bench/results/latest.json; about five minutes.
# BENCH_FLAGS passes options, e.g. BENCH_FLAGS='-profile bench/results/pprof'.
bench: build
	tools/rig/with-rig.sh $(GO) run ./tools/bench $(BENCH_FLAGS)

run: build
	$(BIN)/flowd dev --example deployments/examples/hello-flow.json

# clean leaves console/dist as a fresh checkout has it: the placeholder alone.
clean:
	rm -rf $(BIN)
	find console/dist -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
	@touch console/dist/.gitkeep
