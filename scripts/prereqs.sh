# Prerequisites of scripts/test.sh, sourced by it: `check_prerequisites` checks
# everything the tests need, in a few seconds, before anything is built, and
# fixes what it can:
#
# - as root with apt-get (Debian, Ubuntu): installs nginx, chromium, curl and
#   redis-server when they are missing, and the rustfmt and clippy components
#   through rustup;
# - starts PostgreSQL (pg_ctlcluster) and Redis (redis-server --daemonize) when
#   they are installed but not answering.
#
# Whatever is still missing is listed at once, and the function exits 2.
#
# Needs: cargo with rustfmt and clippy; Node.js 20 or later with npm; curl;
# PostgreSQL reachable with psql at SWITCHBOARD_TEST_POSTGRES (default
# postgres://root@127.0.0.1:5432/test, trust authentication); Redis at
# 127.0.0.1:6379; redis-server 7 and redis-cli (the cluster tests start their
# own Redis Cluster); nginx (the sticky-session example's test); Chromium at
# CHROMIUM_PATH or /usr/bin/chromium (the demo page's browser test).

PREREQS_POSTGRES_URL="${SWITCHBOARD_TEST_POSTGRES:-postgres://root@127.0.0.1:5432/test}"
PREREQS_CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"

prereqs_say() { echo "prerequisites: $*" >&2; }

prereqs_have() { command -v "$1" >/dev/null 2>&1; }

prereqs_postgres_up() { psql "$PREREQS_POSTGRES_URL" -X -Atc 'select 1' >/dev/null 2>&1; }

prereqs_redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

# Waits up to 30 s for a check to pass.
prereqs_wait_for() {
  local _
  for _ in $(seq 1 30); do
    "$@" && return 0
    sleep 1
  done
  return 1
}

# Installs Debian packages when running as root with apt-get; otherwise returns 1.
prereqs_apt_install() {
  [ "$(id -u)" = 0 ] && prereqs_have apt-get || return 1
  prereqs_say "installing $*"
  if [ -z "${PREREQS_APT_UPDATED:-}" ]; then
    apt-get update -qq >/dev/null || return 1
    PREREQS_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

check_prerequisites() {
  local missing=() packages=()

  # Packages first, in one apt-get run.
  prereqs_have nginx || packages+=(nginx)
  [ -x "$PREREQS_CHROMIUM" ] || [ -n "${CHROMIUM_PATH:-}" ] || packages+=(chromium)
  prereqs_have curl || packages+=(curl)
  { prereqs_have redis-server && prereqs_have redis-cli; } || packages+=(redis-server)
  if [ ${#packages[@]} -gt 0 ]; then
    prereqs_apt_install "${packages[@]}" || prereqs_say "could not install ${packages[*]} (needs root and apt-get)"
  fi

  # Rust.
  if ! prereqs_have cargo; then
    missing+=("cargo (install Rust with rustup)")
  else
    local component
    for component in fmt clippy; do
      if ! cargo "$component" --version >/dev/null 2>&1; then
        local name=$component
        [ "$component" = fmt ] && name=rustfmt
        if prereqs_have rustup; then
          prereqs_say "adding the rustup component $name"
          rustup component add "$name" >/dev/null 2>&1 || true
        fi
        cargo "$component" --version >/dev/null 2>&1 || missing+=("cargo $component (rustup component add $name)")
      fi
    done
  fi

  # Node.js 20 or later, npm.
  if ! prereqs_have node; then
    missing+=("node (Node.js 20 or later)")
  elif ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    missing+=("Node.js 20 or later (found $(node --version))")
  fi
  prereqs_have npm || missing+=("npm")
  prereqs_have curl || missing+=("curl")

  # PostgreSQL: start the machine's cluster if it is installed but down.
  if ! prereqs_have psql; then
    missing+=("psql (PostgreSQL client) and a PostgreSQL server at $PREREQS_POSTGRES_URL")
  elif ! prereqs_postgres_up; then
    if prereqs_have pg_ctlcluster && [ -d /etc/postgresql ]; then
      prereqs_say "PostgreSQL is not answering; starting it"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1 || true
      prereqs_wait_for prereqs_postgres_up || true
    fi
    prereqs_postgres_up \
      || missing+=("PostgreSQL at $PREREQS_POSTGRES_URL (trust authentication; or set SWITCHBOARD_TEST_POSTGRES)")
  fi

  # Redis: redis-server 7 and redis-cli; start one at 127.0.0.1:6379 if none answers.
  if ! prereqs_have redis-server || ! prereqs_have redis-cli; then
    missing+=("redis-server 7 and redis-cli")
  else
    local major
    major=$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')
    [ "${major:-0}" -ge 7 ] || missing+=("redis-server 7 or later (found version ${major:-unknown})")
    if ! prereqs_redis_up; then
      prereqs_say "Redis is not answering at 127.0.0.1:6379; starting it"
      local dir=/var/lib/redis log=/var/log/redis/switchboard-test.log
      if [ ! -w "$dir" ] || [ ! -w "$(dirname "$log")" ]; then
        dir=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-redis.XXXXXX")
        log=$dir/redis.log
      fi
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir "$dir" --logfile "$log" >/dev/null 2>&1 || true
      prereqs_wait_for prereqs_redis_up || true
    fi
    prereqs_redis_up || missing+=("Redis at 127.0.0.1:6379")
  fi

  prereqs_have nginx || missing+=("nginx (apt-get install nginx)")
  [ -x "$PREREQS_CHROMIUM" ] \
    || missing+=("Chromium at $PREREQS_CHROMIUM (apt-get install chromium, or set CHROMIUM_PATH)")

  if [ ${#missing[@]} -gt 0 ]; then
    prereqs_say "missing:"
    local item
    for item in "${missing[@]}"; do echo "  - $item" >&2; done
    exit 2
  fi

  # Open files: the end-to-end tests hold a few thousand sockets at once.
  local hard
  hard=$(ulimit -Hn)
  if [ "$hard" = unlimited ] || [ "$hard" -ge 20000 ]; then
    ulimit -n 20000 2>/dev/null || true
  else
    ulimit -n "$hard" 2>/dev/null || true
  fi
  export SWITCHBOARD_TEST_POSTGRES="$PREREQS_POSTGRES_URL"
}
