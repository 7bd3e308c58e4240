#!/usr/bin/env bash
# The whole test suite (run by `make test` inside scripts/with-postgres.sh,
# so DATABASE_URL is set). Each stage prints a header; the first failure stops.
set -euo pipefail
cd "$(dirname "$0")/.."
stage() { printf '\n== %s\n' "$*"; }
start=$(date +%s)

stage "go vet + gofmt"
go vet ./...
unformatted=$(gofmt -l . | grep -v '^tools/' || true)
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi

if [ -x scripts/node-deps.sh ]; then
  stage "Node.js example worker dependencies"
  scripts/node-deps.sh
fi

stage "go test -race (unit and integration tests against real Postgres)"
go test -race -count=1 -timeout 25m ./...

if [ -x scripts/fuzz.sh ]; then
  stage "fuzz targets (short run)"
  scripts/fuzz.sh 5s
fi

if [ -x scripts/e2e.sh ]; then
  stage "Jaeger end-to-end"
  scripts/e2e.sh
fi

printf '\n== all tests passed in %ss\n' "$(( $(date +%s) - start ))"
