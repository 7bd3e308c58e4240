#!/usr/bin/env bash
# A private Jaeger (v2, all-in-one, in-memory storage) for the end-to-end
# tracing check and the demo, built from the Go module proxy (no Docker).
#
#   scripts/jaeger.sh build        build .cache/jaeger/jaeger if missing or
#                                  tools/jaeger/go.mod changed
#   scripts/jaeger.sh start DIR    build if needed, start Jaeger on free
#                                  loopback ports, write DIR/env, wait until
#                                  its query API answers; log in DIR/jaeger.log
#   scripts/jaeger.sh stop DIR     stop the Jaeger started with DIR
#
# DIR/env (shell syntax, for `. DIR/env`):
#   JAEGER_OTLP_GRPC=127.0.0.1:PORT        OTLP gRPC receiver (host:port)
#   JAEGER_OTLP_HTTP=http://127.0.0.1:PORT OTLP HTTP receiver (base URL)
#   JAEGER_QUERY=http://127.0.0.1:PORT     query API and UI
#   JAEGER_METRICS=http://127.0.0.1:PORT   the collector's own Prometheus
#                                          metrics (/metrics): spans accepted
#                                          per receiver transport
#   JAEGER_PID=PID
#
# Jaeger v2 is an OpenTelemetry collector distribution. Its built-in
# all-in-one configuration listens on fixed ports (4317, 4318, 16686, 8888,
# 13133, ...), which collide when tests run in parallel; start writes its
# own configuration (DIR/config.yaml) in which every listener that is
# enabled binds 127.0.0.1 on a port chosen here: the OTLP receivers, the
# query HTTP and gRPC servers and the collector's own Prometheus metrics.
# Nothing else is enabled (no jaeger/zipkin receivers, no health check,
# zpages, expvar, pprof or remote sampling extensions).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=v1.76.0
tooldir="$root/tools/jaeger"
cachedir="$root/.cache/jaeger"
bin="$cachedir/jaeger"
stamp="$cachedir/jaeger.stamp"

log() { printf '[jaeger] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# The build is keyed by the tools module's go.mod and go.sum and the Go
# version that compiled it.
build_key() {
  { cat "$tooldir/go.mod" "$tooldir/go.sum"; go version; } | sha256sum | cut -d' ' -f1
}

cmd_build() {
  mkdir -p "$cachedir"
  # Parallel runs (CI jobs, `make test` next to `make run`) take turns; the
  # second finds the binary built by the first. The lock is held by a
  # subshell so that the Jaeger started afterwards does not inherit it.
  ( flock 9; build_locked ) 9>"$cachedir/build.lock"
}

build_locked() {
  local key
  key=$(build_key)
  if [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
    return 0
  fi
  log "building Jaeger $version from the Go module proxy (first run ~3 min)…"
  local start=$SECONDS tmp="$cachedir/jaeger.tmp.$$"
  # The tools module is a module of its own (nested go.mod): its
  # dependencies never enter the main module's build. -mod=readonly keeps
  # its committed go.mod and go.sum authoritative.
  if ! (cd "$tooldir" && GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" \
    go build -o "$tmp" github.com/jaegertracing/jaeger/cmd/jaeger); then
    rm -f "$tmp"
    die "building Jaeger failed"
  fi
  mv -f "$tmp" "$bin"
  printf '%s\n' "$key" >"$stamp"
  log "built $bin in $((SECONDS - start))s"
}

# port_free PORT: nothing listens on 127.0.0.1:PORT (or on any address).
port_free() {
  ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}

# pick_ports N: N distinct free ports below the ephemeral range (so that
# outgoing connections do not take them meanwhile). A port can still be
# taken between this check and Jaeger's bind: start then retries.
pick_ports() {
  local n=$1 out=() p i
  while [ ${#out[@]} -lt "$n" ]; do
    p=$((20000 + RANDOM % 12000))
    for i in "${out[@]}"; do [ "$i" = "$p" ] && continue 2; done
    port_free "$p" && out+=("$p")
  done
  echo "${out[@]}"
}

write_config() {
  local dir=$1 grpc=$2 http=$3 qhttp=$4 qgrpc=$5 metrics=$6
  cat >"$dir/config.yaml" <<EOF
# Written by scripts/jaeger.sh: all-in-one with in-memory storage, every
# listener on 127.0.0.1 and a port chosen by the script.
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: basic
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: $metrics
    logs:
      level: info

extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    # Jaeger would otherwise trace its own queries into the same store.
    enable_tracing: false
    # Show timestamps as exported: the check compares them.
    max_clock_skew_adjust: 0s
    http:
      endpoint: 127.0.0.1:$qhttp
    grpc:
      endpoint: 127.0.0.1:$qgrpc

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$grpc
      http:
        endpoint: 127.0.0.1:$http

processors:
  # Small timeout: spans are queryable soon after they are exported.
  batch:
    timeout: 200ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
}

cmd_start() {
  local dir=${1:?usage: $0 start DIR}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  cmd_build
  if [ -f "$dir/env" ]; then
    cmd_stop "$dir"
  fi
  local attempt ports grpc http qhttp qgrpc metrics pid deadline
  for attempt in 1 2 3 4 5; do
    read -r grpc http qhttp qgrpc metrics <<<"$(pick_ports 5)"
    write_config "$dir" "$grpc" "$http" "$qhttp" "$qgrpc" "$metrics"
    "$bin" --config "$dir/config.yaml" >"$dir/jaeger.log" 2>&1 &
    pid=$!
    deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ]; do
      if ! kill -0 "$pid" 2>/dev/null; then
        break
      fi
      if curl -fsS -o /dev/null "http://127.0.0.1:$qhttp/api/services" 2>/dev/null; then
        cat >"$dir/env" <<EOF
JAEGER_OTLP_GRPC=127.0.0.1:$grpc
JAEGER_OTLP_HTTP=http://127.0.0.1:$http
JAEGER_QUERY=http://127.0.0.1:$qhttp
JAEGER_METRICS=http://127.0.0.1:$metrics
JAEGER_PID=$pid
EOF
        log "Jaeger $version (pid $pid): OTLP gRPC 127.0.0.1:$grpc, OTLP HTTP 127.0.0.1:$http, UI/API http://127.0.0.1:$qhttp; log $dir/jaeger.log"
        return 0
      fi
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      tail -n 30 "$dir/jaeger.log" >&2
      die "Jaeger did not answer on http://127.0.0.1:$qhttp within 60s"
    fi
    wait "$pid" 2>/dev/null || true
    if grep -q 'address already in use' "$dir/jaeger.log"; then
      log "a chosen port was taken meanwhile; retrying with other ports (attempt $attempt)"
      continue
    fi
    tail -n 30 "$dir/jaeger.log" >&2
    die "Jaeger exited at start; log: $dir/jaeger.log"
  done
  die "could not find free ports for Jaeger"
}

cmd_stop() {
  local dir=${1:?usage: $0 stop DIR}
  [ -f "$dir/env" ] || return 0
  local pid
  pid=$(sed -n 's/^JAEGER_PID=//p' "$dir/env")
  rm -f "$dir/env"
  [ -n "$pid" ] || return 0
  # Only the Jaeger this script started: the pid may have been reused.
  grep -qa "$bin" "/proc/$pid/cmdline" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || return 0
  local i
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

case "${1:-}" in
  build) cmd_build ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  *) echo "usage: $0 build | start DIR | stop DIR" >&2; exit 2 ;;
esac
