# Tasker — the two commands that matter:
#   make run    the local demo (Postgres, migrations, orchestrator, example
#               worker, Jaeger, sample workflows run to completion)
#   make test   every test, against a throwaway Postgres unless DATABASE_URL is set
#
# Neither needs a service left running: scripts/with-postgres.sh starts a
# private Postgres from the system's binaries (installing them with apt when
# missing) and removes it afterwards.

SHELL := /bin/bash
GO ?= go
export GOFLAGS ?= -mod=mod
BIN := bin
WITH_PG := scripts/with-postgres.sh

.PHONY: help build run test test-go e2e node-deps bench chaos fuzz vet fmt clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

build: ## build bin/orchestrator and bin/example-worker
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

run: build ## the local demo: Postgres, migrations, orchestrator, example worker, Jaeger, sample workflows
	@$(WITH_PG) -- scripts/demo.sh

test: ## all tests: vet, unit and integration tests (race detector), Node.js worker, Jaeger end-to-end
	@$(WITH_PG) -- scripts/test.sh

test-go: ## only the Go test suite (no Jaeger end-to-end)
	@$(WITH_PG) -- $(GO) test -race -count=1 ./...

e2e: build ## the Jaeger end-to-end check alone
	@$(WITH_PG) -- scripts/e2e.sh

node-deps: ## install the Node.js example worker's packages
	@scripts/node-deps.sh

bench: build ## benchmarks (Postgres with its default durability)
	@$(WITH_PG) --durable -- scripts/bench.sh

chaos: build ## the long chaos run (kill -9 of orchestrators and workers under load)
	@$(WITH_PG) -- env TASKER_CHAOS=long $(GO) test -count=1 -run TestChaos -timeout 30m -v ./internal/chaos/

fuzz: ## run each fuzz target for 30s
	@scripts/fuzz.sh 30s

vet: ## go vet and gofmt check
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (gofmt -l . && echo "gofmt needed" && exit 1)

fmt: ## gofmt the tree
	gofmt -w .

clean: ## remove build outputs and caches of this repository
	rm -rf $(BIN) .cache/demo
