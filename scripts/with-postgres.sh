#!/usr/bin/env bash
# Runs a command with DATABASE_URL pointing at a Postgres server.
#
# When DATABASE_URL is already set, the command runs against that server.
# Otherwise a throwaway cluster is created from the system's PostgreSQL
# binaries (the `postgresql` package is installed with apt when they are
# missing) in a private data directory on a private loopback port, and it is
# stopped and removed when the command ends, whatever its outcome.
#
#   scripts/with-postgres.sh [--durable] [--keep] -- CMD [ARGS...]
#
#   --durable   keep Postgres's default durability (fsync, synchronous_commit);
#               used by benchmarks. Without it the throwaway cluster runs with
#               fsync=off and synchronous_commit=off, which is safe for data
#               that is deleted afterwards and much faster for tests.
#   --keep      do not delete the data directory afterwards (for debugging).
set -euo pipefail

durable=0
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --durable) durable=1; shift ;;
    --keep) keep=1; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--durable] [--keep] -- CMD [ARGS...]" >&2; exit 2; }

if [ -n "${DATABASE_URL:-}" ]; then
  exec "$@"
fi

log() { printf '[postgres] %s\n' "$*" >&2; }

find_bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  done
  return 1
}

bindir=$(find_bindir || true)
if [ -z "$bindir" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL server binaries not found and not running as root: install the 'postgresql' package or set DATABASE_URL" >&2
    exit 1
  fi
  log "PostgreSQL server binaries not found; installing the 'postgresql' package with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
  bindir=$(find_bindir) || { echo "postgresql installed but initdb not found" >&2; exit 1; }
fi

# Postgres refuses to run as root: run it as the 'postgres' user when we are root.
run_pg() {
  if [ "$(id -u)" = 0 ]; then
    # From /, which the postgres user can read, whatever our directory is.
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

base=$(mktemp -d /tmp/tasker-pg.XXXXXX)
chmod 755 "$base"
datadir="$base/data"
sockdir="$base/sock"
mkdir -p "$datadir" "$sockdir"
[ "$(id -u)" = 0 ] && chown -R postgres "$base"

cleanup() {
  local rc=$?
  if [ -f "$datadir/postmaster.pid" ]; then
    run_pg "$bindir/pg_ctl" -D "$datadir" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ "$keep" = 0 ]; then rm -rf "$base"; else log "data kept in $base"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

run_pg "$bindir/initdb" -D "$datadir" -U postgres --auth=trust --encoding=UTF8 --locale=C >"$base/initdb.log" 2>&1 ||
  { cat "$base/initdb.log" >&2; exit 1; }

opts="-c listen_addresses=127.0.0.1 -c unix_socket_directories=$sockdir -c max_connections=300"
opts="$opts -c shared_buffers=256MB -c max_wal_size=2GB -c log_min_messages=warning"
if [ "$durable" = 0 ]; then
  opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
fi
# Extra server options for diagnostics, e.g.
# TASKER_PG_OPTS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
opts="$opts ${TASKER_PG_OPTS:-}"

started=0
for _ in $(seq 1 20); do
  port=$(( 20000 + RANDOM % 20000 ))
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
  if run_pg "$bindir/pg_ctl" -D "$datadir" -l "$base/postgres.log" -w -t 60 -o "-p $port $opts" start >/dev/null 2>&1; then
    started=1; break
  fi
done
if [ "$started" = 0 ]; then
  echo "could not start a throwaway Postgres; its log:" >&2
  cat "$base/postgres.log" >&2 || true
  exit 1
fi

dburl="postgres://postgres@127.0.0.1:$port/tasker?sslmode=disable"
run_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres tasker
mode="fsync off"; [ "$durable" = 1 ] && mode="default durability"
log "throwaway PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($mode), data in $datadir"
export DATABASE_URL="$dburl"
export TASKER_PG_BINDIR="$bindir"
export TASKER_PG_DATADIR="$datadir"
"$@"
