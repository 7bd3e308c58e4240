#!/usr/bin/env bash
# Runs every Go fuzz target in the module for the given time (default 10s).
# Targets are found by name (func FuzzXxx in *_test.go), so only packages
# that have some are built.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
# The retry's time: three times t when t is in seconds.
if [[ $t =~ ^([0-9]+)s$ ]]; then long="$((BASH_REMATCH[1] * 3))s"; else long=$t; fi
timed_out() { grep -q 'context deadline exceeded' /tmp/tasker-fuzz.log && ! grep -q 'Failing input written' /tmp/tasker-fuzz.log; }
grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . | grep -v '^./tools/' | while read -r file; do
  pkg="./$(dirname "${file#./}")"
  for target in $(grep -oE '^func Fuzz[A-Za-z0-9_]+' "$file" | sed 's/^func //'); do
    echo "fuzz $pkg $target ($t)"
    if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$t" "$pkg" >/tmp/tasker-fuzz.log 2>&1; then
      # The fuzzing engine can report "context deadline exceeded" when
      # -fuzztime runs out while a worker is busy on a loaded machine, or
      # while it is still replaying a large corpus cached by earlier runs
      # (its baseline coverage); that is not a failing input (none is
      # written). Run the target once more with three times the time, and
      # if the engine times out again without an input, say so and go on:
      # nothing was found.
      if timed_out; then
        echo "fuzz $pkg $target: the fuzzing engine timed out without a failing input; running it again for $long"
        if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$long" "$pkg" >/tmp/tasker-fuzz.log 2>&1; then
          if timed_out; then
            echo "fuzz $pkg $target: timed out again without a failing input (machine busy); not a failure"
          else
            cat /tmp/tasker-fuzz.log
            exit 1
          fi
        fi
      else
        cat /tmp/tasker-fuzz.log
        exit 1
      fi
    fi
  done
done
