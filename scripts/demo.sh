#!/usr/bin/env bash
# The local demo (`make run`), run inside scripts/with-postgres.sh so
# DATABASE_URL is set: migrations, Jaeger (built once from the Go module
# proxy, then cached), the orchestrator, the example worker, a few sample
# orders run to completion, and where to look at their traces and metrics.
#
#   TASKER_DEMO_JAEGER=0   skip Jaeger (no traces)
#   TASKER_DEMO_EXIT=1     exit when the demo is done instead of waiting for Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
say() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }

free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port found" >&2; return 1
}

run_dir="$root/.cache/demo/run-$$"
mkdir -p "$run_dir"
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -f "$run_dir/jaeger/env" ]; then scripts/jaeger.sh stop "$run_dir/jaeger" >/dev/null 2>&1 || true; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x bin/orchestrator ] && [ -x bin/example-worker ] || { say "building"; go build -o bin/ ./cmd/...; }

say "applying migrations"
bin/orchestrator migrate

if [ "${TASKER_DEMO_JAEGER:-1}" != 0 ] && [ -x scripts/jaeger.sh ]; then
  say "starting Jaeger (built from the Go module proxy on first use; about 3 minutes, then cached)"
  scripts/jaeger.sh build
  scripts/jaeger.sh start "$run_dir/jaeger"
  # shellcheck disable=SC1091
  . "$run_dir/jaeger/env"
  export TASKER_TELEMETRY_TRACING_ENABLED=true
  export TASKER_TELEMETRY_OTLP_ENDPOINT="$JAEGER_OTLP_GRPC"
fi

api_port=$(free_port)
metrics_port=$(free_port)
export TASKER_SERVER="http://127.0.0.1:$api_port"
say "starting the orchestrator on $TASKER_SERVER (log: $run_dir/orchestrator.log)"
TASKER_LOG_FORMAT=text bin/orchestrator serve --listen "127.0.0.1:$api_port" >"$run_dir/orchestrator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "$TASKER_SERVER/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$TASKER_SERVER/readyz" >/dev/null || { tail -20 "$run_dir/orchestrator.log"; say "orchestrator did not become ready"; exit 1; }

say "starting the example worker (metrics on http://127.0.0.1:$metrics_port/metrics, log: $run_dir/worker.log)"
TASKER_WORKER_METRICS_LISTEN="127.0.0.1:$metrics_port" bin/example-worker >"$run_dir/worker.log" 2>&1 &
pids+=($!)

say "submitting three orders (the third one's payment gateway fails once, so it is retried)"
ctx1='{"customer_id":"cust-0001","currency":"USD","items":[{"sku":"BOOK-1","quantity":1,"unit_price_cents":1299}]}'
ctx2='{"customer_id":"cust-0002","currency":"EUR","items":[{"sku":"MUG-7","quantity":2,"unit_price_cents":850},{"sku":"PEN-1","quantity":3,"unit_price_cents":250}]}'
ctx3='{"customer_id":"cust-0003","currency":"USD","items":[{"sku":"LAMP-2","quantity":1,"unit_price_cents":4599}],"simulate":{"payment_failures":1}}'
ids=()
for c in "$ctx1" "$ctx2" "$ctx3"; do
  out=$(bin/orchestrator task submit -n ecommerce --name order_fulfillment --initiator demo --context "$c" --wait --json)
  id=$(printf '%s' "$out" | sed -n 's/^  "task_uuid": "\(.*\)",$/\1/p' | head -1)
  state=$(printf '%s' "$out" | sed -n 's/^  "state": "\(.*\)",$/\1/p' | head -1)
  say "task $id: $state"
  ids+=("$id")
done

echo
say "the third order (its payment failed once and was retried), with its whole history:"
bin/orchestrator task get "${ids[2]}" --transitions
echo
say "all three orders completed. Where to look:"
echo "  tasks:        bin/orchestrator --server $TASKER_SERVER task list"
echo "                curl -s $TASKER_SERVER/v1/tasks/${ids[0]} | jq ."
echo "  API docs:     $TASKER_SERVER/v1/openapi.json"
echo "  metrics:      curl -s $TASKER_SERVER/metrics | grep ^tasker_"
echo "                curl -s http://127.0.0.1:$metrics_port/metrics | grep ^tasker_step   (the worker)"
if [ -n "${JAEGER_QUERY:-}" ]; then
  for id in "${ids[@]}"; do
    trace=$(curl -fsS "$TASKER_SERVER/v1/tasks/$id" | sed -n 's/.*"trace_id":"\([0-9a-f]*\)".*/\1/p')
    echo "  trace:        $JAEGER_QUERY/api/traces/$trace   (task $id; Jaeger's JSON API — this Jaeger is built without its UI assets)"
  done
fi
echo
echo "  a sample of the metrics:"
curl -fsS "$TASKER_SERVER/metrics" | grep -E '^tasker_(task_completion_duration_seconds_count|events_total\{event="task.completed")' | sed 's/^/    /' || true
echo
if [ -t 0 ] && [ -z "${TASKER_DEMO_EXIT:-}" ]; then
  say "the demo keeps running so you can look around; press Ctrl-C to stop it (Postgres and Jaeger are removed)"
  while true; do sleep 3600; done
fi
