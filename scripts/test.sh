#!/usr/bin/env bash
# Runs every test of the project: the Rust unit and integration tests (SQLite
# and PostgreSQL stores), then the end-to-end tests with the real npm clients
# against the release binaries.
#
# Needs: cargo, Node.js 20 + npm, Chromium (CHROMIUM_PATH or /usr/bin/chromium),
# Redis at 127.0.0.1:6379 plus redis-server 7, redis-cli (the cluster tests start
# their own Redis Cluster) and nginx (multi-node tests), and
# PostgreSQL at SWITCHBOARD_TEST_POSTGRES (default
# postgres://root@127.0.0.1:5432/test). With CI=true a missing PostgreSQL fails
# the run instead of skipping its tests. `.ci/run` checks or installs all of them.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/switchboard-target}"
command -v cargo >/dev/null || { echo "test.sh: cargo not found" >&2; exit 2; }
command -v node >/dev/null || { echo "test.sh: node not found (Node.js 20 is required)" >&2; exit 2; }
command -v npm >/dev/null || { echo "test.sh: npm not found" >&2; exit 2; }

echo "== cargo build (release): switchboard and the protocol examples"
cargo build --release --locked -p switchboard --bin switchboard -p switchboard-loadgen
cargo build --release --locked -p switchboard-socketio --examples

echo "== cargo test (release)"
cargo test --release --locked --workspace

echo "== load generator smoke run (seconds; it must deliver, with no error)"
./scripts/loadgen-smoke.sh

echo "== demo page: the committed web/dist is what its sources build to"
(
  cd web
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
  npm run build --silent >/dev/null
)
if command -v git >/dev/null && git rev-parse --git-dir >/dev/null 2>&1; then
  git diff --exit-code --stat -- web/dist \
    || { echo "test.sh: web/dist differs from a fresh build of web/; rebuild and commit it" >&2; exit 1; }
fi

echo "== end-to-end tests (socket.io-client, eventsource, ws, yjs + y-websocket, Chromium)"
cd tests/e2e
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
export SWITCHBOARD_BIN="$CARGO_TARGET_DIR/release/switchboard"
export SWITCHBOARD_TESTBED="$CARGO_TARGET_DIR/release/examples/testbed"
npm test
