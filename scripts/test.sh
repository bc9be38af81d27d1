#!/usr/bin/env bash
# Runs every check and test of the project: formatting and clippy, the Rust unit
# and integration tests (SQLite and PostgreSQL stores), a load-generator smoke
# run, a check that the committed demo page matches its sources, then the
# end-to-end tests with the real npm clients (and the README's snippets) against
# the release binaries.
#
# First, in a few seconds, it checks every prerequisite and installs or starts
# what it can (scripts/prereqs.sh says what and how). It builds where cargo
# builds by default (or CARGO_TARGET_DIR, when set), so the release binary of
# `cargo run --release -p switchboard -- serve --dev` is reused, not rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/prereqs.sh
source scripts/prereqs.sh
check_prerequisites

TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
  | node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).target_directory))')
echo "== cargo target directory: $TARGET_DIR"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (release, every target, warnings are errors)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings

echo "== cargo build (release): switchboard, the load generator and the protocol examples"
# The same build as the README's `cargo run --release -p switchboard`, so it is reused.
cargo build --release --locked -p switchboard --bin switchboard
cargo build --release --locked -p switchboard-loadgen
cargo build --release --locked -p switchboard-socketio --examples

echo "== cargo test (release)"
cargo test --release --locked --workspace

echo "== load generator smoke run (seconds; it must deliver, with no error)"
SB_BIN="$TARGET_DIR/release/switchboard" LG_BIN="$TARGET_DIR/release/switchboard-loadgen" \
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

echo "== end-to-end tests (socket.io-client, eventsource, ws, yjs + y-websocket, Chromium, README snippets)"
cd tests/e2e
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
export SWITCHBOARD_BIN="$TARGET_DIR/release/switchboard"
export SWITCHBOARD_TESTBED="$TARGET_DIR/release/examples/testbed"
npm test
