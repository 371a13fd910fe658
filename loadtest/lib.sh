# Helpers shared by the load scripts (stepaway.sh, waitroom.sh, attack.sh, soak.sh), sourced
# after `set -euo pipefail`. Every server they start listens on loopback only, and the
# processes started through them are stopped when the script exits, however it exits.
#
#   . "$(dirname "$0")/lib.sh"
#   lib_build usher-loadtest [bare-proxy]   # sets USHER, LOADGEN, BARE (release builds)
#   lib_on_exit_stop_started                 # traps: stop everything in PIDS on exit
#   lib_start_upstream PORT LOG [ARGS]       # usher-loadtest's 1 KiB upstream; sets UP_PID
#   lib_start_usher CONFIG LOG ADMIN_PORT    # sets USHER_PID once /readyz answers

LIB_NAME=$(basename "$0")
LIB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIDS=()

lib_die() {
  echo "$LIB_NAME: $*" >&2
  exit 1
}

# Fails early, with the package to install, when a tool is missing.
lib_need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$LIB_NAME: needs $tool (apt-get install $tool)" >&2; exit 2; }
  done
}

# Exits 2 naming the value unless every argument is a whole number.
lib_numbers() {
  local n
  for n in "$@"; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "$LIB_NAME: not a number: $n (see -h)" >&2; exit 2; }
  done
}

# Prints the script's header comment (from line 2 to `set -euo`), for -h.
lib_usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

# Builds usher and the named usher-loadtest binaries (release, locked) and sets USHER,
# LOADGEN and BARE to where cargo put them.
lib_build() {
  local bins=() b
  for b in "$@"; do bins+=(--bin "$b"); done
  echo "== building (release)"
  (cd "$LIB_ROOT" && cargo build --release --locked -q -p usher --bin usher &&
    cargo build --release --locked -q -p usher-loadtest "${bins[@]}")
  local target
  target=$(cd "$LIB_ROOT" && cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  USHER=$target/release/usher LOADGEN=$target/release/usher-loadtest BARE=$target/release/bare-proxy
}

# Both sides of a load run hold one descriptor per connection.
lib_raise_open_files() {
  ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}

# On exit, INT or TERM: every process in PIDS gets TERM, and the script keeps its status.
lib_on_exit_stop_started() {
  trap lib_stop_started EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

lib_stop_started() {
  local status=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null
  exit $status
}

# A fresh 32-byte secret in hex, for one run's nodes.
lib_secret() {
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

# usher-loadtest's fixed upstream on 127.0.0.1:PORT. Ours must be the one answering: a port
# taken by something else fails here, not silently later. More arguments go to `upstream`
# (e.g. `--capacity 4 --base-ms 50`, the mailbox with a knee).
lib_start_upstream() { # port log [upstream args]
  "$LOADGEN" upstream --listen "127.0.0.1:$1" "${@:3}" >"$2" 2>&1 &
  UP_PID=$!
  PIDS+=("$UP_PID")
  local _
  for _ in $(seq 100); do
    kill -0 "$UP_PID" 2>/dev/null || { cat "$2" >&2; exit 1; }
    grep -q "listening" "$2" && return 0
    sleep 0.1
  done
  lib_die "the upstream did not start (see $2)"
}

# usher with CONFIG, its log in LOG; returns once its admin listener (on ADMIN_PORT) says
# ready. USHER_SECRET may be set by the caller (nodes that share a secret); else a fresh one.
# USHER_PIN (a CPU list, as taskset -c takes) runs it on those CPUs only.
lib_start_usher() { # config log admin-port
  local pin=()
  [ -z "${USHER_PIN:-}" ] || pin=(taskset -c "$USHER_PIN")
  USHER_SECRET=${USHER_SECRET:-$(lib_secret)} USHER_LOG=${USHER_LOG:-warn} \
    "${pin[@]}" "$USHER" --config "$1" >"$2" 2>&1 &
  USHER_PID=$!
  PIDS+=("$USHER_PID")
  local _
  for _ in $(seq 100); do
    kill -0 "$USHER_PID" 2>/dev/null || { cat "$2" >&2; exit 1; }
    curl -sf -o /dev/null "http://127.0.0.1:$3/readyz" && return 0
    sleep 0.1
  done
  lib_die "usher is not ready (see $2)"
}

# Stops usher with TERM; a usher that hangs on shutdown is a finding, but must not hang the
# run: KILL after 10 s.
lib_stop_usher() {
  kill -TERM "$USHER_PID" 2>/dev/null || true
  local _
  for _ in $(seq 100); do kill -0 "$USHER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$USHER_PID" 2>/dev/null || true
  wait "$USHER_PID" 2>/dev/null || true
}
