#!/usr/bin/env bash
# CI smoke run of the load generator (a few seconds): starts a Switchboard server
# on a free loopback port (embedded SQLite in a temporary directory, a made-up
# JWT secret and API key unless SWITCHBOARD_JWT_SECRET / SWITCHBOARD_API_KEY are
# set), runs `switchboard-loadgen fanout` with 50 clients for 2 s, and fails
# unless messages were delivered and nothing went wrong (no failed client, no
# error event, no failed publish). Stops the server on exit.
#
#   scripts/loadgen-smoke.sh            # builds the two release binaries if missing
#   SB_BIN=... LG_BIN=... scripts/loadgen-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/switchboard-target}
SB_BIN=${SB_BIN:-$TARGET_DIR/release/switchboard}
LG_BIN=${LG_BIN:-$TARGET_DIR/release/switchboard-loadgen}
SECRET=${SWITCHBOARD_JWT_SECRET:-smoke-secret-$$-$RANDOM-0123456789}
API_KEY=${SWITCHBOARD_API_KEY:-smoke-api-key-$$-$RANDOM-0123456789}

if [ ! -x "$SB_BIN" ] || [ ! -x "$LG_BIN" ]; then
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p switchboard -p switchboard-loadgen
fi

TMP=$(mktemp -d /tmp/loadgen-smoke.XXXXXX)
SPID=""
cleanup() {
  if [ -n "$SPID" ]; then
    kill "$SPID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SPID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# Port 0: the server picks a free port and logs it ("switchboard listening addr=...").
SWITCHBOARD_BIND=127.0.0.1:0 SWITCHBOARD_JWT_SECRET=$SECRET SWITCHBOARD_API_KEY=$API_KEY \
  SWITCHBOARD_DATABASE_URL="sqlite://$TMP/smoke.db" RUST_LOG=info NO_COLOR=1 \
  "$SB_BIN" serve >"$TMP/server.log" 2>&1 &
SPID=$!
PORT=""
for _ in $(seq 1 100); do
  PORT=$(sed -n 's/.*switchboard listening.*addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/server.log" | head -1)
  [ -n "$PORT" ] && break
  kill -0 "$SPID" 2>/dev/null || { cat "$TMP/server.log" >&2; echo "loadgen-smoke: server exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$PORT" ] || { cat "$TMP/server.log" >&2; echo "loadgen-smoke: server did not start" >&2; exit 1; }

rc=0
"$LG_BIN" fanout --ports "$PORT" --pids "server:$SPID" --token-secret "$SECRET" --api-key "$API_KEY" \
  --clients 50 --duration 2 --warmup 0.5 --rate 20 --drain 5 --max-s 60 --quiet \
  --json "$TMP/fanout.json" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "loadgen-smoke: switchboard-loadgen exited $rc" >&2
  tail -20 "$TMP/server.log" >&2
  exit 1
fi
# belt and braces: the JSON says it delivered and saw no problem
delivered=$(sed -n 's/^  "delivered": \([0-9]*\),*$/\1/p' "$TMP/fanout.json" | tail -1)
ok=$(sed -n 's/^  "ok": \(true\|false\),*$/\1/p' "$TMP/fanout.json" | tail -1)
if [ "${delivered:-0}" -le 0 ] || [ "$ok" != true ]; then
  echo "loadgen-smoke: delivered=${delivered:-?} ok=${ok:-?}" >&2
  exit 1
fi
echo "loadgen-smoke: ok ($delivered deliveries)"
