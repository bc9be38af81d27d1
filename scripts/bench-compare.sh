#!/usr/bin/env bash
# Side-by-side benchmarks: Switchboard against the Node.js Socket.IO reference
# server (shared/anchors/socketio-node, `--dialect contract`), driven by the same
# load generator (switchboard-loadgen) with the same frames, in one run.
#
#   scripts/bench-compare.sh                      # everything, REPEAT=3 rounds (~20 min)
#   SCENARIOS="fanout chat" REPEAT=1 scripts/bench-compare.sh
#
# Per round, each scenario runs against Switchboard, then against Node, each on a
# freshly started server (and fresh databases); the summary gives the median (and
# min-max) of every figure over the rounds, and the Switchboard/Node ratio.
#
# Scenarios (SCENARIOS, space-separated):
#   memory   idle clients in one room, MEM_STEPS (0,1000,5000,10000), KiB/connection
#   fanout   CLIENTS (1000) in one room, POST /api/publish: saturation, RATES (10,25,50,100)
#   chat     100 rooms x 10 clients, 1 msg/s each, persisted to PostgreSQL by both servers
#   cluster  2 nodes + Redis (own redis-server), clients split, publisher on A, latency on B
#   sse      Switchboard only: CLIENTS notification streams, notifications POSTed
#   collab   Switchboard only: 100 documents x 10 editors over y-websocket
#   big      Switchboard only, once: BIG (100000) idle connections (memory steps), source
#            addresses spread over 127.0.0.x; capped by the open-file limit (see BENCHMARKS.md)
#   chat-sqlite  Switchboard only: chat on the embedded SQLite store
#   memory-unique  memory with one user per client (Switchboard announces each join to
#            the room: N^2/2 presence frames), SB_ONLY_ROUNDS rounds; not in the default set
#
# Switchboard runs on the embedded SQLite store (a fresh file per run) except for
# chat and cluster, which use a fresh PostgreSQL database per run on 127.0.0.1:5432
# (user root, trust auth; PG_URL); Node persists chat messages to a fresh database
# of its own. Server CPU is read from /proc of the server processes alone
# (PostgreSQL and Redis are reported apart). Everything started here is stopped on
# exit. Results: $OUT/<scenario>/<server>-<round>.{json,txt,err} and $OUT/summary.md.
#
# The run re-executes itself in a session of its own whose autogroup gets nice
# BENCH_NICE (-10, as the reference's run-all.sh; 0 = off): with autogroups, other
# sessions (builds, tests) would otherwise get an equal share of the 2 cores whatever
# their nice. Servers and loadgen share that one weight; PostgreSQL keeps its own.
# Before each run a loopback calibration (the reference's calib.c: CPU of one
# 100-byte write + read) is appended to $OUT/calib.txt.
#
# Knobs: REPEAT (3), SCENARIOS, CLIENTS (1000), DURATION (10 s per window), RATES,
# MEM_STEPS, MEM_USERS (1: distinct user ids in memory runs, so that Switchboard's
# presence announcements (N^2/2 frames for N users) do not dominate; 0 = one per
# client), BIG (100000), QUIET_WAIT (20 s: wait for an idle machine before each run,
# 0 = off), OUT, SB_BIN, LG_BIN, ANCHOR_SRC, ANCHOR_DIR, PG_URL, BUILD (1: build the
# release binaries first if missing), SB_ONLY_ROUNDS (1: rounds of the
# Switchboard-only scenarios sse, collab, chat-sqlite).
set -uo pipefail

BENCH_NICE=${BENCH_NICE:--10}
if [ "$BENCH_NICE" != 0 ] && [ -z "${BENCH_IN_SESSION:-}" ] && [ -w /proc/self/autogroup ] \
  && command -v setsid >/dev/null; then
  export BENCH_IN_SESSION=1
  setsid "$0" "$@" &
  child=$!
  trap 'kill -TERM $child 2>/dev/null' INT TERM
  wait $child; rc=$?
  exit $rc
fi
if [ -n "${BENCH_IN_SESSION:-}" ]; then
  echo "$BENCH_NICE" >/proc/self/autogroup 2>/dev/null || true
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/switchboard-target}
SB_BIN=${SB_BIN:-$TARGET_DIR/release/switchboard}
LG_BIN=${LG_BIN:-$TARGET_DIR/release/switchboard-loadgen}
ANCHOR_SRC=${ANCHOR_SRC:-$ROOT/../shared/anchors/socketio-node}
ANCHOR_DIR=${ANCHOR_DIR:-/var/tmp/switchboard-bench/anchor}
OUT=${OUT:-/var/tmp/switchboard-bench/$(date +%Y%m%d-%H%M%S)}
REPEAT=${REPEAT:-3}
SCENARIOS=${SCENARIOS:-"memory fanout chat cluster sse collab big"}
CLIENTS=${CLIENTS:-1000}
DURATION=${DURATION:-10}
RATES=${RATES:-10,25,50,100}
MEM_STEPS=${MEM_STEPS:-0,1000,5000,10000}
MEM_USERS=${MEM_USERS:-1}
BIG=${BIG:-100000}
QUIET_WAIT=${QUIET_WAIT:-20}
PG_URL=${PG_URL:-postgres://root@127.0.0.1:5432}
BUILD=${BUILD:-1}
SB_ONLY_ROUNDS=${SB_ONLY_ROUNDS:-1}
SECRET=bench-secret-0123456789  # the server wants at least 16 bytes
API_KEY=bench-api-key-0123456789
SB_PORT=17400 SB_A=17401 SB_B=17402
NODE_PORT=17410 NODE_A=17411 NODE_B=17412
REDIS_PORT=17379

log() { echo "[bench-compare $(date +%T)] $*" >&2; }
die() { log "$*"; exit 1; }

mkdir -p "$OUT/logs" || die "cannot create $OUT"
TMPD=$(mktemp -d /tmp/bench-compare.XXXXXX)
STARTED=()
DBS=()
RUN_ID=$(date +%H%M%S)$$

stop_pid() {
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
  for p in "${STARTED[@]}"; do stop_pid "$p"; done
  for d in "${DBS[@]}"; do dropdb --if-exists -h 127.0.0.1 -U root "$d" 2>/dev/null || true; done
  rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- prerequisites -----------------------------------------------------------
if [ "$BUILD" = 1 ] && { [ ! -x "$SB_BIN" ] || [ ! -x "$LG_BIN" ]; }; then
  log "building the release binaries (nice, $TARGET_DIR)"
  (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR nice -n 10 cargo build --release -p switchboard -p switchboard-loadgen) \
    || die "build failed"
fi
[ -x "$SB_BIN" ] || die "no Switchboard binary at $SB_BIN"
[ -x "$LG_BIN" ] || die "no loadgen binary at $LG_BIN"
# private copies: a rebuild in the shared target dir during the run changes nothing
SB_SRC=$SB_BIN LG_SRC=$LG_BIN
cp "$SB_SRC" "$TMPD/switchboard" && cp "$LG_SRC" "$TMPD/switchboard-loadgen" || die "cannot copy the binaries"
SB_BIN=$TMPD/switchboard LG_BIN=$TMPD/switchboard-loadgen
command -v node >/dev/null || die "node not found"
command -v createdb >/dev/null || die "createdb not found (PostgreSQL client)"
command -v redis-server >/dev/null || die "redis-server not found"
if [ ! -d "$ANCHOR_DIR/node_modules" ]; then
  log "copying the Node reference to $ANCHOR_DIR and running npm ci"
  rm -rf "$ANCHOR_DIR" && mkdir -p "$(dirname "$ANCHOR_DIR")" && cp -r "$ANCHOR_SRC" "$ANCHOR_DIR" \
    && chmod -R u+w "$ANCHOR_DIR" && (cd "$ANCHOR_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2) \
    || die "could not install the Node reference"
fi

# Open files: 100,000 connections need more than the usual limit. Raising the hard
# limit needs CAP_SYS_RESOURCE; the servers and the loadgen inherit what we get here.
ulimit -Hn 1048576 2>/dev/null || log "could not raise the hard open-file limit ($(ulimit -Hn)): $(ulimit -Hn 1048576 2>&1 | sed 's/.*: //')"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
PG_DATA=$(psql "$PG_URL/postgres" -tAc 'show data_directory' 2>/dev/null || true)
PG_PID=""
[ -n "$PG_DATA" ] && [ -r "$PG_DATA/postmaster.pid" ] && PG_PID=$(head -1 "$PG_DATA/postmaster.pid")

{
  echo "date $(date -Is)"
  echo "host $(uname -n), kernel $(uname -r)"
  echo "nproc $(nproc)"
  lscpu | grep -m1 'Model name' | sed 's/  */ /g'
  awk '/MemTotal/{printf "memory %.1f GiB\n", $2/1048576}' /proc/meminfo
  echo "open files: soft $(ulimit -n), hard $(ulimit -Hn)"
  echo "switchboard $SB_SRC ($(stat -c %y "$SB_SRC" | cut -d. -f1))"
  echo "loadgen $LG_SRC ($(stat -c %y "$LG_SRC" | cut -d. -f1))"
  (cd "$ROOT" && echo "git $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' + uncommitted changes')")
  echo "node $(node --version), socket.io $(node -p 'require(process.argv[1]).version' "$ANCHOR_DIR/node_modules/socket.io/package.json" 2>/dev/null)"
  echo "postgres $(psql "$PG_URL/postgres" -tAc 'show server_version' 2>/dev/null), synchronous_commit $(psql "$PG_URL/postgres" -tAc 'show synchronous_commit' 2>/dev/null), postmaster pid ${PG_PID:-?}"
  echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
  echo "autogroup: $(cat /proc/self/autogroup 2>/dev/null)"
  echo "settings: REPEAT=$REPEAT CLIENTS=$CLIENTS DURATION=$DURATION RATES=$RATES MEM_STEPS=$MEM_STEPS MEM_USERS=$MEM_USERS BIG=$BIG"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# --- processes -----------------------------------------------------------------
wait_port() { # PORT PID: bounded (20 s)
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || { log "process $2 died before listening on $1"; return 1; }
    sleep 0.1
  done
  log "port $1 not listening after 20 s"; return 1
}

new_db() { # NAME -> DB (its URL); not in a subshell, so that cleanup sees it in DBS
  local name="bench_${RUN_ID}_$1"
  createdb -h 127.0.0.1 -U root "$name" >&2 || return 1
  DBS+=("$name")
  DB="$PG_URL/$name"
}

# start_sb NAME PORT [DATABASE_URL] [BROKER] -> SPID
start_sb() {
  local name=$1 port=$2 db=${3:-sqlite://$TMPD/$1.db} broker=${4:-memory}
  SWITCHBOARD_BIND=127.0.0.1:$port SWITCHBOARD_JWT_SECRET=$SECRET SWITCHBOARD_API_KEY=$API_KEY \
    SWITCHBOARD_DATABASE_URL=$db SWITCHBOARD_BROKER=$broker SWITCHBOARD_MAX_CONNECTIONS_PER_USER=1000000 \
    RUST_LOG=${SB_LOG:-warn} "$SB_BIN" serve >"$OUT/logs/$name.log" 2>&1 &
  SPID=$!
  STARTED+=("$SPID")
  wait_port "$port" "$SPID"
}

# start_node NAME PORT [DATABASE_URL] [REDIS_URL] -> SPID
start_node() {
  local name=$1 port=$2 db=${3:-} redis=${4:-}
  (cd "$ANCHOR_DIR" && PORT=$port HOST=127.0.0.1 JWT_SECRET=$SECRET API_KEY=$API_KEY DATABASE_URL=$db \
    REDIS_URL=$redis exec node server.js) >"$OUT/logs/$name.log" 2>&1 &
  SPID=$!
  STARTED+=("$SPID")
  wait_port "$port" "$SPID"
}

start_redis() { # -> RPID
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --loglevel warning >"$OUT/logs/redis-$RUN_ID.log" 2>&1 &
  RPID=$!
  STARTED+=("$RPID")
  wait_port "$REDIS_PORT" "$RPID"
}

stop_all() { for p in "$@"; do stop_pid "$p"; done; }

CALIB=""
if command -v gcc >/dev/null && gcc -O2 -o "$TMPD/calib" "$ANCHOR_DIR/calib.c" 2>/dev/null; then CALIB="$TMPD/calib"; fi

quiet() { # wait (bounded) for the machine to be idle: < 10 % busy for 3 s in a row; then calibrate
  [ -n "$CALIB" ] && echo "$1: $("$CALIB")" >>"$OUT/calib.txt"
  [ "$QUIET_WAIT" -gt 0 ] || return 0
  local ok=0 waited=0 a b busy
  read -r -a a < <(head -1 /proc/stat)
  while [ "$waited" -lt "$QUIET_WAIT" ]; do
    sleep 1; waited=$((waited + 1))
    read -r -a b < <(head -1 /proc/stat)
    local tot=0 i
    for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
    local idle=$((b[4] - a[4] + b[5] - a[5]))
    busy=$(( tot > 0 ? 100 * (tot - idle) / tot : 0 ))
    a=("${b[@]}")
    if [ "$busy" -lt 10 ]; then ok=$((ok + 1)); else ok=0; fi
    [ "$ok" -ge 3 ] && { echo "$1: quiet after ${waited}s" >>"$OUT/quiet.txt"; return 0; }
  done
  echo "$1: NOT quiet after ${waited}s (last ${busy}% busy), measuring anyway" >>"$OUT/quiet.txt"
  log "machine not idle after ${QUIET_WAIT}s (${busy}% busy); measuring anyway"
}

# lg SCENARIO SERVER ROUND ARGS...: runs the loadgen, keeps its JSON, table and log
lg() {
  local sc=$1 srv=$2 round=$3; shift 3
  mkdir -p "$OUT/$sc"
  local base="$OUT/$sc/$srv-$round"
  "$LG_BIN" "$@" --token-secret "$SECRET" --api-key "$API_KEY" --label "$srv" --json "$base.json" \
    --allow-errors >"$base.txt" 2>"$base.err"
  local rc=$?
  [ "$rc" -eq 0 ] || log "$sc/$srv round $round: loadgen exit $rc (see $base.err)"
  sed -n '1,40p' "$base.txt" >&2
  return 0
}

pg_pids() { [ -n "$PG_PID" ] && echo ",pg:$PG_PID:tree"; }

# --- scenarios -----------------------------------------------------------------
run_memory() { # SERVER ROUND [USERS] [SCENARIO NAME]
  local srv=$1 r=$2 u=${3:-$MEM_USERS} sc=${4:-memory} users=()
  [ "$u" -gt 0 ] && users=(--users "$u")
  quiet "$sc $srv"
  if [ "$srv" = switchboard ]; then start_sb "sb-$sc-$r" $SB_PORT || return; port=$SB_PORT
  else start_node "node-$sc-$r" $NODE_PORT || return; port=$NODE_PORT; fi
  lg "$sc" "$srv" "$r" memory --ports "$port" --pids "server:$SPID" --steps "$MEM_STEPS" "${users[@]}"
  stop_all "$SPID"
}

run_fanout() {
  local srv=$1 r=$2
  quiet "fanout $srv"
  if [ "$srv" = switchboard ]; then start_sb "sb-fanout-$r" $SB_PORT || return; port=$SB_PORT
  else start_node "node-fanout-$r" $NODE_PORT || return; port=$NODE_PORT; fi
  lg fanout "$srv" "$r" fanout --ports "$port" --pids "server:$SPID" --clients "$CLIENTS" \
    --duration "$DURATION" --rate "$RATES"
  stop_all "$SPID"
}

run_chat() { # both servers persist every message to a fresh PostgreSQL database
  local srv=$1 r=$2 db
  new_db "chat_${srv}_$r" || { log "createdb failed"; return; }
  db=$DB
  quiet "chat $srv"
  if [ "$srv" = switchboard ]; then start_sb "sb-chat-$r" $SB_PORT "$db" || return; port=$SB_PORT
  else start_node "node-chat-$r" $NODE_PORT "$db" || return; port=$NODE_PORT; fi
  lg chat "$srv" "$r" chat --ports "$port" --pids "server:$SPID$(pg_pids)" --clients "$CLIENTS" \
    --room-size 10 --duration "$DURATION"
  stop_all "$SPID"
}

run_chat_sqlite() {
  local r=$1
  quiet "chat-sqlite"
  start_sb "sb-chat-sqlite-$r" $SB_PORT || return
  lg chat-sqlite switchboard "$r" chat --ports $SB_PORT --pids "server:$SPID" --clients "$CLIENTS" \
    --room-size 10 --duration "$DURATION"
  stop_all "$SPID"
}

run_cluster() {
  local srv=$1 r=$2 db a b
  quiet "cluster $srv"
  start_redis || return
  if [ "$srv" = switchboard ]; then
    new_db "cluster_$r" || { stop_all "$RPID"; return; }
    db=$DB
    start_sb "sb-cluster-a-$r" $SB_A "$db" "redis://127.0.0.1:$REDIS_PORT" || return; a=$SPID
    start_sb "sb-cluster-b-$r" $SB_B "$db" "redis://127.0.0.1:$REDIS_PORT" || return; b=$SPID
    ports=$SB_A,$SB_B
  else
    start_node "node-cluster-a-$r" $NODE_A "" "redis://127.0.0.1:$REDIS_PORT" || return; a=$SPID
    start_node "node-cluster-b-$r" $NODE_B "" "redis://127.0.0.1:$REDIS_PORT" || return; b=$SPID
    ports=$NODE_A,$NODE_B
  fi
  lg cluster "$srv" "$r" cluster --ports "$ports" --pids "A:$a,B:$b,redis:$RPID" --clients "$CLIENTS" \
    --duration "$DURATION" --rate "$RATES"
  stop_all "$a" "$b" "$RPID"
}

run_sse() {
  local r=$1
  quiet "sse"
  start_sb "sb-sse-$r" $SB_PORT || return
  lg sse switchboard "$r" sse --ports $SB_PORT --pids "server:$SPID" --streams "$CLIENTS" --duration "$DURATION"
  stop_all "$SPID"
}

run_collab() {
  local r=$1
  quiet "collab"
  start_sb "sb-collab-$r" $SB_PORT || return
  lg collab switchboard "$r" collab --ports $SB_PORT --pids "server:$SPID" --docs 100 --editors 10 \
    --duration "$DURATION"
  stop_all "$SPID"
}

run_big() {
  local n=$BIG steps
  # each side holds one descriptor per connection: stay under the limit we have
  if [ "$NOFILE" -lt $((n + 500)) ]; then
    n=$(( (NOFILE - 500) / 1000 * 1000 ))
    log "big: open-file limit $NOFILE < $BIG + 500; measuring $n connections instead"
    echo "big: capped at $n connections by the open-file limit (soft $(ulimit -n), hard $(ulimit -Hn))" >>"$OUT/machine.txt"
  fi
  steps="0,$((n / 10)),$((n / 2)),$n"
  quiet "big"
  start_sb "sb-big" $SB_PORT || return
  lg big switchboard 1 memory --ports $SB_PORT --pids "server:$SPID" --steps "$steps" --users 1 \
    --concurrency 500 --connect-timeout 60
  stop_all "$SPID"
}

has() { case " $SCENARIOS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

T0=$(date +%s)
for r in $(seq 1 "$REPEAT"); do
  log "round $r of $REPEAT"
  for sc in $SCENARIOS; do
    case $sc in
      memory | fanout | chat | cluster)
        for srv in switchboard node; do
          log "$sc: $srv (round $r)"
          "run_$sc" "$srv" "$r"
        done ;;
      sse | collab)
        [ "$r" -le "$SB_ONLY_ROUNDS" ] && { log "$sc: switchboard (round $r)"; "run_$sc" "$r"; } ;;
      chat-sqlite)
        [ "$r" -le "$SB_ONLY_ROUNDS" ] && { log "$sc: switchboard (round $r)"; run_chat_sqlite "$r"; } ;;
      memory-unique)
        if [ "$r" -le "$SB_ONLY_ROUNDS" ]; then
          for srv in switchboard node; do log "$sc: $srv (round $r)"; run_memory "$srv" "$r" 0 memory-unique; done
        fi ;;
      big) ;;
      *) log "unknown scenario $sc" ;;
    esac
  done
done
if has big; then log "big: switchboard"; run_big; fi
log "all runs done in $(( $(date +%s) - T0 )) s"

# --- summary -------------------------------------------------------------------
node - "$OUT" >"$OUT/summary.md" <<'EOF'
'use strict';
// Medians over rounds of each figure, per server, and the Switchboard/Node ratio.
const fs = require('fs');
const path = require('path');
const OUT = process.argv[2];
const runs = {}; // scenario -> server -> [json]
for (const sc of fs.readdirSync(OUT)) {
  const dir = path.join(OUT, sc);
  if (!fs.statSync(dir).isDirectory() || sc === 'logs') continue;
  for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
    const srv = f.replace(/-\d+\.json$/, '');
    try {
      const j = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
      ((runs[sc] ||= {})[srv] ||= []).push(j);
    } catch (e) { /* a run that died without JSON */ }
  }
}
const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
const fmt = (x, d = 1) => (x == null ? '–' : Math.abs(x) >= 1000 ? Math.round(x).toLocaleString('en-US') : (+x.toFixed(d)).toString());
function cell(xs, d) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x));
  if (!v.length) return '–';
  const m = median(v);
  if (v.length === 1) return fmt(m, d);
  return `${fmt(m, d)} [${fmt(Math.min(...v), d)}–${fmt(Math.max(...v), d)}]`;
}
const out = [];
const targets = [];
const win = (j, re) => (j.windows || []).find((w) => re.test(w.phase));
const lastRow = (j) => (j.rows || [])[(j.rows || []).length - 1];
// rows: [label, getter(json) -> number, decimals, lowerIsBetter]
function table(title, sc, rows, servers = ['switchboard', 'node']) {
  const r = runs[sc];
  if (!r) return;
  const have = servers.filter((s) => r[s]);
  if (!have.length) return;
  out.push(`### ${title}`, '');
  const both = have.length === 2;
  out.push(`| figure | ${have.join(' | ')} |${both ? ' Switchboard / Node |' : ''}`);
  out.push(`|---|${have.map(() => '---:').join('|')}|${both ? '---:|' : ''}`);
  for (const [label, get, d = 1] of rows) {
    const vals = have.map((s) => r[s].map((j) => { try { return get(j); } catch (e) { return null; } }));
    if (vals.every((v) => v.every((x) => x == null))) continue;
    let ratio = '';
    if (both) {
      const a = median(vals[0]), b = median(vals[1]);
      ratio = ` ${a != null && b ? (a / b).toFixed(3) : '–'} |`;
    }
    out.push(`| ${label} | ${vals.map((v) => cell(v, d)).join(' | ')} |${ratio}`);
  }
  out.push(`| runs | ${have.map((s) => r[s].length).join(' | ')} |${both ? ' |' : ''}`, '');
}
const med = (sc, srv, get) => { const r = runs[sc] && runs[sc][srv]; return r ? median(r.map((j) => { try { return get(j); } catch (e) { return null; } })) : null; };
function target(name, value, limit, unit, kind) {
  const met = value == null ? 'not measured' : value <= limit ? '**met**' : '**missed**';
  targets.push(`| ${name} | ${value == null ? '–' : kind === 'ratio' ? value.toFixed(3) : fmt(value, 2) + (unit ? ' ' + unit : '')} | ≤ ${kind === 'ratio' ? limit.toFixed(3) : limit + (unit ? ' ' + unit : '')} | ${met} |`);
}

// memory
function memTable(sc, title) {
  const memRows = [];
  const steps = new Set();
  for (const srv of Object.values(runs[sc] || {})) for (const j of srv) for (const row of j.rows || []) steps.add(row.clients);
  for (const c of [...steps].sort((a, b) => a - b)) {
    const at = (j) => (j.rows || []).find((row) => row.clients === c);
    memRows.push([`RSS MiB at ${c.toLocaleString('en-US')} clients`, (j) => at(j).rss_kib.server / 1024]);
    if (c > 0) memRows.push([`KiB per connection at ${c.toLocaleString('en-US')}`, (j) => at(j).kib_per_conn.server]);
  }
  memRows.push(['connects/s (last step)', (j) => lastRow(j).connects_per_s, 0]);
  table(title, sc, memRows);
}
memTable('memory', 'Memory: idle clients joined to one room');
memTable('memory-unique', 'Memory with one user per client (Switchboard announces every join to the room)');

// fan-out
const rateRows = (sc, group) => {
  const rs = [];
  const rates = new Set();
  for (const srv of Object.values(runs[sc] || {})) for (const j of srv) for (const w of j.windows || []) { const m = /^([\d.]+) msg\/s/.exec(w.phase); if (m) rates.add(+m[1]); }
  for (const rate of [...rates].sort((a, b) => a - b)) {
    const w = (j) => win(j, new RegExp(`^${rate} msg/s`));
    const lat = (j) => (group == null ? w(j).latency : w(j).groups[group].latency);
    rs.push([`${rate} msg/s: deliveries/s`, (j) => w(j).delivered_per_s, 0]);
    rs.push([`${rate} msg/s: expected deliveries/s`, (j) => w(j).expected_per_s, 0]);
    rs.push([`${rate} msg/s: p50 ms${group == null ? '' : ' (far node B)'}`, (j) => lat(j).p50_ms, 2]);
    rs.push([`${rate} msg/s: p99 ms${group == null ? '' : ' (far node B)'}`, (j) => lat(j).p99_ms, 2]);
    rs.push([`${rate} msg/s: p99.9 ms${group == null ? '' : ' (far node B)'}`, (j) => lat(j).p999_ms, 2]);
    if (group != null) rs.push([`${rate} msg/s: p99 ms (publisher's node A)`, (j) => w(j).groups[0].latency.p99_ms, 2]);
    rs.push([`${rate} msg/s: server CPU %`, (j) => w(j).server_cpu_pct]);
    rs.push([`${rate} msg/s: server CPU µs/delivery`, (j) => w(j).server_cpu_us_per_delivery, 2]);
  }
  return rs;
};
const sat = (j) => win(j, /^saturation/);
const n = (sc, key = 'clients') => { for (const srv of Object.values(runs[sc] || {})) for (const j of srv) if (j[key] != null) return Number(j[key]).toLocaleString('en-US'); return '?'; };
table(`Fan-out, 1 node: ${n('fanout')} clients in one room, POST /api/publish`, 'fanout', [
  ['saturation: deliveries/s', (j) => sat(j).delivered_per_s, 0],
  ['saturation: server CPU %', (j) => sat(j).server_cpu_pct],
  ['saturation: **server CPU µs/delivery**', (j) => sat(j).server_cpu_us_per_delivery, 2],
  ['saturation: loadgen CPU %', (j) => sat(j).loadgen_cpu_pct],
  ['saturation: p50 ms (closed-loop queueing)', (j) => sat(j).latency.p50_ms, 1],
  ...rateRows('fanout', null),
]);
const chatW = (j) => (j.windows || [])[0];
const chatRows = [
  ['deliveries/s', (j) => chatW(j).delivered_per_s, 0],
  ['expected/s', (j) => chatW(j).expected_per_s, 0],
  ['p50 ms', (j) => chatW(j).latency.p50_ms, 2],
  ['p99 ms', (j) => chatW(j).latency.p99_ms, 2],
  ['p99.9 ms', (j) => chatW(j).latency.p999_ms, 2],
  ['**server CPU %**', (j) => chatW(j).server_cpu_pct],
  ['server CPU µs/delivery', (j) => chatW(j).server_cpu_us_per_delivery, 2],
  ['PostgreSQL CPU % (whole cluster, shared)', (j) => chatW(j).cpu_pct.pg],
  ['loadgen CPU %', (j) => chatW(j).loadgen_cpu_pct],
];
table(`Chat: ${n('chat')} clients in rooms of 10, 1 msg/s each, persisted to PostgreSQL`, 'chat', chatRows);
table(`Chat: ${n('chat-sqlite')} clients on the embedded SQLite store (Switchboard only)`, 'chat-sqlite', chatRows.filter((r) => !/PostgreSQL/.test(r[0])), ['switchboard']);
table(`Fan-out over 2 nodes + Redis: ${n('cluster')} clients split over A and B, publisher on A, latency on B`, 'cluster', [
  ['saturation: deliveries/s (both nodes)', (j) => sat(j).delivered_per_s, 0],
  ['saturation: deliveries/s on B', (j) => sat(j).groups[1].delivered_per_s, 0],
  ['saturation: server CPU µs/delivery (A+B)', (j) => sat(j).server_cpu_us_per_delivery, 2],
  ...rateRows('cluster', 1),
  ['10 msg/s: CPU % A', (j) => win(j, /^10 msg/).cpu_pct.A],
  ['10 msg/s: CPU % B', (j) => win(j, /^10 msg/).cpu_pct.B],
  ['10 msg/s: CPU % redis', (j) => win(j, /^10 msg/).cpu_pct.redis],
]);
const sseRows = [['saturation: notifications/s', (j) => sat(j).delivered_per_s, 0], ['saturation: server CPU %', (j) => sat(j).server_cpu_pct], ['saturation: server CPU µs/notification', (j) => sat(j).server_cpu_us_per_delivery, 1]];
for (const rate of [100, 500]) {
  const w = (j) => win(j, new RegExp(`^${rate} notif`));
  sseRows.push([`${rate} notif/s: p50 ms`, (j) => w(j).latency.p50_ms, 2], [`${rate} notif/s: p99 ms`, (j) => w(j).latency.p99_ms, 2], [`${rate} notif/s: server CPU %`, (j) => w(j).server_cpu_pct]);
}
table(`SSE: ${n('sse', 'streams')} notification streams, notifications POSTed (Switchboard only; SQLite)`, 'sse', sseRows, ['switchboard']);
table(`Collaborative editing: ${n('collab', 'docs')} documents x ${n('collab', 'editors_per_doc')} editors, 1 update/s each (Switchboard only)`, 'collab', [
  ['updates sent/s', (j) => chatW(j).sent_per_s, 0],
  ['deliveries/s', (j) => chatW(j).delivered_per_s, 0],
  ['expected/s', (j) => chatW(j).expected_per_s, 0],
  ['p50 ms', (j) => chatW(j).latency.p50_ms, 2],
  ['p99 ms', (j) => chatW(j).latency.p99_ms, 2],
  ['server CPU %', (j) => chatW(j).server_cpu_pct],
], ['switchboard']);
const big = runs.big && runs.big.switchboard && runs.big.switchboard[0];
if (big) {
  out.push('### Many idle connections on one node (Switchboard only)', '', '| clients | failed | connects/s | RSS MiB | KiB/connection |', '|---:|---:|---:|---:|---:|');
  for (const row of big.rows || []) out.push(`| ${row.clients.toLocaleString('en-US')} | ${row.failed} | ${fmt(row.connects_per_s, 0)} | ${fmt(row.rss_kib.server / 1024)} | ${fmt(row.kib_per_conn.server)} |`);
  out.push('', `open files: ${JSON.stringify(big.nofile)}`, '');
}

// targets
const kibAt = (j) => lastRow(j).kib_per_conn.server;
const sbK = med('memory', 'switchboard', kibAt), ndK = med('memory', 'node', kibAt);
target('idle memory per connection, Switchboard / Node', sbK != null && ndK ? sbK / ndK : null, 0.2, '', 'ratio');
const us = (j) => sat(j).server_cpu_us_per_delivery;
const sbU = med('fanout', 'switchboard', us), ndU = med('fanout', 'node', us);
target('fan-out server CPU per delivery (saturation), Switchboard / Node', sbU != null && ndU ? sbU / ndU : null, 0.1, '', 'ratio');
target(`fan-out p99 at 10 msg/s into ${n('fanout')} members (Switchboard)`, med('fanout', 'switchboard', (j) => win(j, /^10 msg/).latency.p99_ms), 1.5, 'ms');
const cc = (j) => chatW(j).server_cpu_pct;
const sbC = med('chat', 'switchboard', cc), ndC = med('chat', 'node', cc);
target('chat with persistence: server CPU, Switchboard / Node', sbC != null && ndC ? sbC / ndC : null, 0.2, '', 'ratio');
target('two-node far-side p99 at 10 msg/s (Switchboard)', med('cluster', 'switchboard', (j) => win(j, /^10 msg/).groups[1].latency.p99_ms), 3, 'ms');
if (big) {
  const last = lastRow(big);
  targets.push(`| 100,000 idle WebSocket connections on one node | ${last.clients.toLocaleString('en-US')} connected (${last.failed} failed) | 100,000 | ${last.clients >= 100000 && last.failed === 0 ? '**met**' : '**not met** (see notes)'} |`);
}
try {
  const cal = fs.readFileSync(path.join(OUT, 'calib.txt'), 'utf8').split('\n').map((l) => /([\d.]+) us cpu/.exec(l)).filter(Boolean).map((m) => +m[1]);
  if (cal.length) out.push(`Loopback calibration (CPU of one 100-byte write + read, calib.c), before each run: median ${median(cal).toFixed(2)} µs [${Math.min(...cal).toFixed(2)}–${Math.max(...cal).toFixed(2)}] over ${cal.length} runs.`, '');
} catch (e) { /* no calibration */ }
console.log('## Targets\n\n| target | measured (median) | goal | |\n|---|---:|---:|---|');
console.log(targets.join('\n'));
console.log('\n## Results (median [min–max] over rounds)\n');
console.log(out.join('\n'));
EOF
cat "$OUT/summary.md"
log "results in $OUT (summary.md)"
