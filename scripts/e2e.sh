#!/usr/bin/env bash
# The Jaeger end-to-end check of the tracing (`make e2e`, part of `make
# test`): a private Jaeger on free loopback ports, then the e2e Go test, which
# runs the orchestrator and the example worker with OTLP export to it and
# checks the traces through Jaeger's query API. Needs DATABASE_URL (run it
# inside scripts/with-postgres.sh, as make does).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?DATABASE_URL is not set: run scripts/with-postgres.sh -- scripts/e2e.sh (or make e2e)}"

start=$SECONDS
if [ ! -x bin/orchestrator ] || [ ! -x bin/example-worker ]; then
  mkdir -p bin
  go build -o bin/ ./cmd/...
fi

scripts/jaeger.sh build
build_done=$SECONDS

dir=$(mktemp -d "${TMPDIR:-/tmp}/tasker-jaeger.XXXXXX")
cleanup() {
  local rc=$?
  scripts/jaeger.sh stop "$dir" || true
  if [ "$rc" = 0 ]; then
    rm -rf "$dir"
  else
    echo "[e2e] failed; Jaeger's log is kept in $dir/jaeger.log" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/jaeger.sh start "$dir"
set -a
# shellcheck disable=SC1091
. "$dir/env"
set +a

go test -tags e2e -count=1 -v -timeout 15m ./e2e/
echo "[e2e] passed in $((SECONDS - start))s (Jaeger build check $((build_done - start))s)"
