#!/usr/bin/env bash
# A real local Bluesky network for the Bluesky tests: the reference PLC directory, PDS and
# bsky AppView (plus Ozone, which dev-env always starts) from @atproto/dev-env's TestNetwork,
# with a private PostgreSQL cluster; everything listens on 127.0.0.1 only.
#
#   run-network.sh install   # PostgreSQL from apt if missing, then `npm ci` into $BSKY_NET_DIR;
#                            # skipped when that directory already holds this package-lock
#   run-network.sh start     # fresh state; prints one line: NETWORK {json} (PDS :2583,
#                            # AppView :2584, control :2589/processAll)
#   run-network.sh stop      # stops the network and PostgreSQL by PID, removes the state
#
# After writing, GET the "control" URL of the NETWORK line (/processAll): it returns once the
# AppView has indexed every PDS event, so tests never sleep for indexing.
# Needs root (PostgreSQL runs as the postgres user through runuser).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=${BSKY_NET_DIR:-/var/cache/presence-tests/bsky-net}
STATE=${BSKY_NET_STATE:-$ROOT/state}
PGPORT=${PGPORT:-5433}
NODE=${NODE:-node}
pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true; }
lock_sum() { sha256sum "$1" | cut -d' ' -f1; }

case "${1:-start}" in
install)
  if [ -z "$(pgbin)" ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql
  fi
  command -v "$NODE" >/dev/null && command -v npm >/dev/null || {
    echo "node and npm are needed for the Bluesky network" >&2; exit 1; }
  mkdir -p "$ROOT"
  cp "$HERE/network.js" "$HERE/loopback.js" "$ROOT/"
  want=$(lock_sum "$HERE/package-lock.json")
  if [ -d "$ROOT/node_modules/@atproto/dev-env" ] && [ "$(cat "$ROOT/.lock-sum" 2>/dev/null)" = "$want" ]; then
    echo "bsky-net: already installed in $ROOT"
    exit 0
  fi
  cp "$HERE/package.json" "$HERE/package-lock.json" "$ROOT/"
  rm -f "$ROOT/.lock-sum"
  (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$ROOT/.lock-sum" ;;
start)
  "$0" stop >/dev/null 2>&1 || true
  PGBIN=$(pgbin)
  [ -n "$PGBIN" ] || { echo "PostgreSQL is not installed: run $0 install" >&2; exit 1; }
  [ -d "$ROOT/node_modules/@atproto/dev-env" ] || { echo "not installed: run $0 install" >&2; exit 1; }
  cp "$HERE/network.js" "$HERE/loopback.js" "$ROOT/"
  mkdir -p "$STATE/tmp" "$STATE/pg"; chown postgres: "$STATE/pg"
  runuser -u postgres -- "$PGBIN/initdb" -D "$STATE/pg" -U pg --auth=trust >"$STATE/initdb.log"
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$STATE/pg" -l "$STATE/pg/server.log" -w start -o \
    "-c listen_addresses=127.0.0.1 -p $PGPORT -k $STATE/pg -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null
  cd "$ROOT"
  TMPDIR="$STATE/tmp" DB_POSTGRES_URL="postgresql://pg@127.0.0.1:$PGPORT/postgres" REDIS_HOST=unused \
    LOG_ENABLED=${LOG_ENABLED:-false} NODE_NO_WARNINGS=1 \
    setsid "$NODE" -r "$ROOT/loopback.js" network.js >"$STATE/network.log" 2>&1 </dev/null & echo $! >"$STATE/network.pid"
  for _ in $(seq 1 240); do
    if line=$(grep -m1 '^NETWORK ' "$STATE/network.log"); then echo "$line"; exit 0; fi
    kill -0 "$(cat "$STATE/network.pid")" 2>/dev/null || { cat "$STATE/network.log" >&2; exit 1; }
    sleep 0.5
  done
  echo "the network did not start within 120 s; see $STATE/network.log" >&2; exit 1 ;;
stop)
  if [ -f "$STATE/network.pid" ]; then
    pid=$(cat "$STATE/network.pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    kill -9 "$pid" 2>/dev/null || true
  fi
  if [ -f "$STATE/pg/postmaster.pid" ]; then
    runuser -u postgres -- "$(pgbin)/pg_ctl" -D "$STATE/pg" -m fast -w stop >/dev/null || true
  fi
  rm -rf "$STATE" ;;
*)
  echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
