#!/usr/bin/env bash
# The waiting room under load, in one command: a spike of browser-like visitors through one
# usher node (fairness, outflow, ETA accuracy, errors), then the memory of idle keep-alive
# connections on a fresh usher.
#
#   loadtest/waitroom.sh [-n VISITORS] [-o SECONDS] [-a ADMIT_PER_MINUTE] [-c CONNECTIONS]
#                        [-p BASE_PORT] [-d OUT_DIR] [-- EXTRA usher-loadtest visitors ARGS]
#
#   -n  visitors in the spike (default 20000)      -o  seconds they arrive within (default 5)
#   -a  the room's admit_per_minute (default 60000) -c idle connections (default 10000; 0 skips)
#   -p  first loopback port (default 18380; 3 ports from it are used, and must be free)
#   -d  where the reports go (default ./loadtest-results): spike.json, spike.svg,
#       connections.json, usher.toml and the logs
#
# It builds usher and usher-loadtest (release), starts on loopback the fixed 1 KiB upstream
# (BASE), usher (BASE+1, admin BASE+2) with one room on "/" (max_active high enough never to
# bind, so the outflow alone limits admission), and runs:
#   usher-loadtest visitors --profile spike ...   (the report on stdout, JSON and SVG in -d)
#   usher-loadtest connections --pid USHER ...    (usher restarted first, so it starts clean)
# Every visitor has its own source address in 127.1.0.0/16 onwards, so usher's per-client
# limits apply to each as to a real browser. Raises the open-files limit (needs root beyond
# the hard limit). Stops everything it started on exit.
set -euo pipefail

N=20000 OVER=5 ADMIT=60000 CONNS=10000 BASE=18380 OUT=loadtest-results
while getopts "n:o:a:c:p:d:h" o; do
  case $o in
    n) N=$OPTARG ;; o) OVER=$OPTARG ;; a) ADMIT=$OPTARG ;; c) CONNS=$OPTARG ;;
    p) BASE=$OPTARG ;; d) OUT=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
for n in "$N" "$ADMIT" "$CONNS" "$BASE"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "waitroom.sh: not a number: $n (see -h)" >&2; exit 2; }
done
[[ $OVER =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "waitroom.sh: -o is seconds, not $OVER" >&2; exit 2; }
command -v curl >/dev/null 2>&1 || { echo "waitroom.sh: needs curl (apt-get install curl)" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
P_UP=$BASE P_USHER=$((BASE + 1)) P_ADMIN=$((BASE + 2))

echo "== building (release)"
(cd "$ROOT" && cargo build --release --locked -q -p usher --bin usher && \
  cargo build --release --locked -q -p usher-loadtest --bin usher-loadtest)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
USHER=$TARGET_DIR/release/usher LOADGEN=$TARGET_DIR/release/usher-loadtest

# Both sides hold one descriptor per connection.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

PIDS=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cat >"$OUT/usher.toml" <<TOML
[listen]
http = "127.0.0.1:$P_USHER"
max_connections = 1000000
# Idle keep-alive connections are held this long (the connection measurement needs them open).
header_read_timeout = "60s"

[admin]
listen = "127.0.0.1:$P_ADMIN"

[upstream]
addresses = ["127.0.0.1:$P_UP"]

[[room]]
name = "spike"
paths = ["/"]
max_active = 10000000
admit_per_minute = $ADMIT
session_idle = "10m"
waiter_ttl = "45s"
claim_window = "2m"
TOML
"$USHER" check-config "$OUT/usher.toml" >/dev/null

start_usher() { # log-name
  USHER_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') USHER_LOG=${USHER_LOG:-warn} \
    "$USHER" --config "$OUT/usher.toml" >"$OUT/$1.log" 2>&1 &
  USHER_PID=$!
  PIDS+=("$USHER_PID")
  for _ in $(seq 100); do
    kill -0 "$USHER_PID" 2>/dev/null || { cat "$OUT/$1.log" >&2; exit 1; }
    curl -sf -o /dev/null "http://127.0.0.1:$P_ADMIN/readyz" && return 0
    sleep 0.1
  done
  echo "waitroom.sh: usher is not ready" >&2
  exit 1
}
stop_usher() {
  kill -TERM "$USHER_PID" 2>/dev/null || true
  wait "$USHER_PID" 2>/dev/null || true
}

"$LOADGEN" upstream --listen "127.0.0.1:$P_UP" >"$OUT/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
# Ours must be the one answering: a port taken by something else fails here, not silently.
for _ in $(seq 100); do
  kill -0 "$UP_PID" 2>/dev/null || { cat "$OUT/upstream.log" >&2; exit 1; }
  grep -q "listening" "$OUT/upstream.log" && break
  sleep 0.1
done
start_usher usher-spike

echo "== spike: $N visitors within $OVER s, admit_per_minute $ADMIT ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
"$LOADGEN" visitors --target "127.0.0.1:$P_USHER" --path /inbox --visitors "$N" --profile spike --over "$OVER" \
  --admin "127.0.0.1:$P_ADMIN" --room spike --json "$OUT/spike.json" --svg "$OUT/spike.svg" "$@"
echo "usher VmRSS after the spike: $(sed -n 's/^VmRSS:\s*//p' "/proc/$USHER_PID/status")"
stop_usher

if [ "$CONNS" -gt 0 ]; then
  start_usher usher-connections
  echo "== idle keep-alive connections: $CONNS"
  "$LOADGEN" connections --target "127.0.0.1:$P_USHER" --pid "$USHER_PID" --count "$CONNS" \
    --json "$OUT/connections.json"
  stop_usher
fi
echo "reports in $OUT"
