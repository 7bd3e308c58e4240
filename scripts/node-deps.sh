#!/usr/bin/env bash
# Installs the npm packages of the Node.js example worker (examples/node-worker)
# with `npm ci`, when node_modules is missing or package-lock.json changed since
# the last install (its hash is kept in node_modules/.tasker-lock-hash). When
# node or npm is missing, installs Debian's nodejs and npm with apt-get (as
# root). Idempotent, and silent when there is nothing to do. `make test` runs
# it before the Go tests, which run the Node worker.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=examples/node-worker
say() { printf 'node-deps: %s\n' "$*"; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    say "node or npm is not installed, and installing them needs root: run 'sudo apt-get install nodejs npm' (Node.js 18 or later), then this script again" >&2
    exit 1
  fi
  say "node or npm is not installed; installing Debian's nodejs and npm packages:"
  export DEBIAN_FRONTEND=noninteractive
  say "+ apt-get update"
  apt-get update -qq
  say "+ apt-get install -y --no-install-recommends nodejs npm"
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  say "installed node $(node --version), npm $(npm --version)"
fi

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
  say "node $(node --version) is too old: the example worker needs Node.js 18 or later (20 recommended)" >&2
  exit 1
fi

hash=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
stamp="$dir/node_modules/.tasker-lock-hash"
if [ -d "$dir/node_modules" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
  exit 0
fi

if [ -d "$dir/node_modules" ]; then
  say "package-lock.json changed since the last install; reinstalling in $dir"
else
  say "installing the npm packages of $dir"
fi
say "+ (cd $dir && npm ci --no-audit --no-fund)"
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
printf '%s\n' "$hash" >"$stamp"
say "done (node $(node --version), npm $(npm --version))"
