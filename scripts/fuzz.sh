#!/usr/bin/env bash
# Runs every Go fuzz target in the module for the given time (default 10s).
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "fuzz $pkg $target ($t)"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$t" "$pkg" >/tmp/tasker-fuzz.log 2>&1 || { cat /tmp/tasker-fuzz.log; exit 1; }
  done
done
