#!/usr/bin/env bash
# The benchmarks (`make bench` runs this inside scripts/with-postgres.sh
# --durable, so DATABASE_URL names a throwaway Postgres with its default
# durability). Method and results: docs/performance.md.
#
#   1. `orchestrator bench` on each scenario, BENCH_RUNS times (default 3),
#      each run on a fresh database; then the median of each number.
#   2. one in-process linear4 run with a CPU profile, summarised by
#      `go tool pprof -top`.
#   3. the Go benchmarks of the hot SQL paths (internal/bench/sqlbench_test.go).
#
# Reports (JSON), logs and the profile are kept in .cache/bench/<time>/.
#
# Sizes: 10,000 single (3,000 before the twenty-fourth session: runs of
# 1-2 s, the model's under a second, whose shares of the model ranged
# 38-73 % within one make bench), the issue's 5000 linear4 (20,000 steps),
# 200 fanout, 1000 diamond, and linear4 again with tracing on, each traced run right
# after an untraced one (the pairs give tracing's cost); the open loop is the
# issue's, 100 tasks/s for 20s, each run followed by the design model on the
# same schedule (its latencies are the design's own on this machine). About 15 minutes on the reference 2-core
# machine. BENCH_SCALE scales them (0 is not allowed; use BENCH_ONLY to
# skip). Every run is bounded by BENCH_TIMEOUT.
#
# The throughput stages (single, linear4, and linear4 with and without
# tracing) run one Go worker with 128 slots (BENCH_WORKERS), the issue's
# "few, busy workers": each read and claim then carries about 60 steps
# instead of 17 with the bench's default of 2 workers x 32, which on the
# reference machine costs Postgres a quarter less CPU per step
# (docs/performance.md, "Worker slots"). The design model runs with the same
# workers and batch, so the shares stay like for like.
#
# Environment: BENCH_RUNS (3), BENCH_SCALE (1: multiplies every task count
# and open-loop duration), BENCH_WORKERS ("--workers 1 --concurrency 128":
# the throughput stages' workers; "" for the bench's defaults), BENCH_ONLY (a space-separated subset of: single
# linear4 diamond fanout tracing open open10 clients profile sql), BENCH_SQL_COUNT (the
# -benchtime count, 8), BENCH_TIMEOUT (per run, 5m).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${DATABASE_URL:?DATABASE_URL must name a Postgres server (make bench starts one)}"
bin=${BENCH_BIN:-bin/orchestrator}
runs=${BENCH_RUNS:-3}
scale=${BENCH_SCALE:-1}
only=${BENCH_ONLY:-single linear4 diamond fanout tracing open open10 clients profile sql}
sql_count=${BENCH_SQL_COUNT:-8}
timeout=${BENCH_TIMEOUT:-5m}
# shellcheck disable=SC2206 # word splitting wanted: a list of flags
workers=(${BENCH_WORKERS---workers 1 --concurrency 128})

if ! "$bin" bench --help >/dev/null 2>&1; then
  echo "$bin has no 'bench' command: run 'make build' (and check that internal/cli wires benchCmd into the root command)" >&2
  exit 1
fi

out=.cache/bench/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
start=$(date +%s)
stage() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }
wants() { [[ " $only " == *" $1 "* ]]; }
tasks() { echo $(( $1 * scale )); }

stage "machine"
echo "$(nproc) CPUs; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
psql "$DATABASE_URL" -Atc "SELECT 'PostgreSQL ' || current_setting('server_version') || ', fsync=' || current_setting('fsync')
  || ', synchronous_commit=' || current_setting('synchronous_commit') || ', full_page_writes=' || current_setting('full_page_writes')
  || ', shared_buffers=' || current_setting('shared_buffers')" 2>/dev/null || true

# run_one LABEL I ARGS...: run I of a configuration, its report in
# $out/LABEL-I.json. A failed run is reported and left out of the medians.
failed=0
run_one() {
  local label=$1 i=$2; shift 2
  echo "-- $label, run $i of $runs: $bin bench $*"
  if ! "$bin" bench --json --timeout "$timeout" "$@" >"$out/$label-$i.json" 2> >(tee "$out/$label-$i.log" >&2); then
    echo "!! $label run $i failed (log: $out/$label-$i.log)" >&2
    mv "$out/$label-$i.json" "$out/$label-$i.failed"
    failed=$((failed + 1))
  fi
}

# run LABEL ARGS...: BENCH_RUNS runs of one configuration; the other runs go
# on when one fails.
run() {
  local label=$1; shift
  local i
  for i in $(seq 1 "$runs"); do
    run_one "$label" "$i" "$@"
  done
}

if wants single; then
  stage "single: $(tasks 10000) one-step tasks, closed loop (${workers[*]:-default workers})"
  run single --scenario single --tasks "$(tasks 10000)" --model "${workers[@]}"
fi
if wants linear4; then
  stage "linear4: $(tasks 5000) tasks of 4 chained steps, closed loop (${workers[*]:-default workers})"
  run linear4 --scenario linear4 --tasks "$(tasks 5000)" --model "${workers[@]}"
fi
if wants diamond; then
  stage "diamond: $(tasks 1000) tasks of 1->2->1 steps, closed loop"
  run diamond --scenario diamond --tasks "$(tasks 1000)"
fi
if wants fanout; then
  stage "fanout: $(tasks 200) tasks of 1->50->1 steps, closed loop"
  run fanout --scenario fanout --tasks "$(tasks 200)"
fi
if wants tracing; then
  # In alternating pairs, each traced run right after an untraced one: the
  # host's speed drifts over a whole `make bench` (the tracing runs would
  # otherwise be compared with linear4 runs made minutes earlier). The
  # untraced runs of the pairs stay out of the medians (pairs/).
  stage "linear4 with tracing: $(tasks 5000) tasks, spans exported over OTLP/HTTP to an in-process receiver, alternating with runs without"
  mkdir -p "$out/pairs"
  for i in $(seq 1 "$runs"); do
    run_one pairs/linear4 "$i" --scenario linear4 --tasks "$(tasks 5000)" --no-floor "${workers[@]}"
    run_one tracing "$i" --scenario linear4 --tasks "$(tasks 5000)" --tracing --no-floor "${workers[@]}"
  done
fi
if wants open; then
  stage "open loop: single at 100 tasks/s for $(tasks 20)s, then the design model on the same schedule"
  run open --scenario single --rate 100 --duration "$(tasks 20)s" --model
fi
if wants open10; then
  stage "open loop: single at 10 tasks/s for $(tasks 10)s, then the design model on the same schedule"
  run open10 --scenario single --rate 10 --duration "$(tasks 10)s" --model
fi

if wants clients; then
  # Few clients: 8 submitting one task per request, the same 8 with batch
  # submissions (POST /v1/tasks/batch), and with batches on the task
  # request queue (pgmq.send_batch), all through the API or the queue as
  # separate processes would.
  stage "few clients: single, $(tasks 3000) tasks from 8 clients, one per request / batches of 100 / batches on the queue"
  run clients1 --scenario single --tasks "$(tasks 3000)" --submitters 8 --processes
  run clients100 --scenario single --tasks "$(tasks 3000)" --submitters 8 --submit-batch 100 --processes
  run clientsq --scenario single --tasks "$(tasks 3000)" --submitters 8 --submit-batch 100 --processes --via-queue
fi

if ls "$out"/*.json >/dev/null 2>&1; then
  stage "medians of $runs runs"
  "$bin" bench summarize "$out"/*.json | tee "$out/summary.txt"
fi
if wants tracing; then
  pairs=()
  for i in $(seq 1 "$runs"); do
    if [ -f "$out/pairs/linear4-$i.json" ] && [ -f "$out/tracing-$i.json" ]; then
      pairs+=("$out/pairs/linear4-$i.json" "$out/tracing-$i.json")
    fi
  done
  if [ "${#pairs[@]}" -gt 0 ]; then
    stage "what tracing costs: linear4 without and with tracing, in alternating pairs"
    "$bin" bench summarize --pairs "${pairs[@]}" | tee "$out/tracing-pairs.txt"
  fi
fi

if wants profile; then
  stage "CPU profile: linear4, $(tasks 1000) tasks, in-process (${workers[*]:-default workers})"
  "$bin" bench --scenario linear4 --tasks "$(tasks 1000)" --timeout "$timeout" --cpuprofile "$out/linear4.pprof" --no-floor "${workers[@]}" \
    2> >(tee "$out/profile.log" >&2) | tee "$out/profile.txt"
  go tool pprof -top -nodecount=25 "$bin" "$out/linear4.pprof" 2>/dev/null | tee "$out/profile-top.txt"
  echo "-- cumulative (who calls the time):"
  go tool pprof -top -cum -nodecount=25 "$bin" "$out/linear4.pprof" 2>/dev/null | tail -n +6 | tee "$out/profile-cum.txt"
fi

if wants sql; then
  stage "Go benchmarks of the hot SQL paths (-benchtime=${sql_count}x)"
  # pgtestdb logs each test database's URL through b.Log; keep the numbers.
  go test -run='^$' -bench=. -benchtime="${sql_count}x" -count=1 ./internal/bench/ 2>&1 |
    grep -v -e 'testdbconf:' -e '^--- BENCH' | tee "$out/sqlbench.txt"
fi

stage "done; reports in $out"
if [ "$failed" -gt 0 ]; then
  echo "$failed run(s) failed" >&2
  exit 1
fi
