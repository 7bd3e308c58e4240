#!/usr/bin/env bash
# Runs every Go fuzz target in the module for the given time (default 10s).
# Targets are found by name (func FuzzXxx in *_test.go), so only packages
# that have some are built.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . | grep -v '^./tools/' | while read -r file; do
  pkg="./$(dirname "${file#./}")"
  for target in $(grep -oE '^func Fuzz[A-Za-z0-9_]+' "$file" | sed 's/^func //'); do
    echo "fuzz $pkg $target ($t)"
    if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$t" "$pkg" >/tmp/tasker-fuzz.log 2>&1; then
      # The fuzzing engine can report "context deadline exceeded" when
      # -fuzztime runs out while a worker is busy on a loaded machine; that
      # is not a failing input (none is written). Run the target once more.
      if grep -q 'context deadline exceeded' /tmp/tasker-fuzz.log && ! grep -q 'Failing input written' /tmp/tasker-fuzz.log; then
        echo "fuzz $pkg $target: the fuzzing engine timed out without a failing input; running it again"
        go test -run='^$' -fuzz="^${target}\$" -fuzztime="$t" "$pkg" >/tmp/tasker-fuzz.log 2>&1 || { cat /tmp/tasker-fuzz.log; exit 1; }
      else
        cat /tmp/tasker-fuzz.log
        exit 1
      fi
    fi
  done
done
