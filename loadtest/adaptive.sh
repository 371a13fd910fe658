#!/usr/bin/env bash
# Adaptive outflow against fixed ones (issue 17): the same spike three times through one usher
# node in front of a mailbox with a knee (`usher-loadtest upstream --capacity C --base-ms B`:
# quick up to C requests in flight, slower past it, 503 past 2C). The outflow is fixed too
# high (3× the mailbox's capacity), fixed too low (a third of it), and adaptive, starting from
# the low guess. Reports, per run, the mailbox's p99 and error rate, usher's admissions per
# minute against the mailbox's true capacity, and the citizens' median wait; one SVG shows all
# three.
#
#   loadtest/adaptive.sh [-n VISITORS] [-o SECONDS] [-c CAPACITY] [-b BASE_MS] [-t TARGET_MS]
#                        [-e PERIOD] [-l SECONDS] [-p BASE_PORT] [-d OUT_DIR] [-r RUNS] [-f PERCENT]
#                        [-m "SECONDS:CAPACITY ..."] [-- MORE visitors ARGS]
#
#   -n  visitors in the spike (default 15000)    -o  seconds they arrive within (default 10)
#   -c  the mailbox's capacity in requests in flight (default 32)
#   -b  its service time up to the capacity, ms (default 100)
#   -t  the adaptive run's target p99 latency, ms (default 250: 2.5× the service time)
#   -e  the adaptive run's period, seconds (default 2)
#   -l  each run's time limit, seconds (default 200)
#   -p  first loopback port (default 18520; 3 ports from it are used, and must be free)
#   -d  where the reports go (default: a new /tmp/usher-adaptive.* directory): one directory
#       per run (usher.toml, visitors.json, upstream.json, logs, final /metrics), table.md
#       and adaptive.svg
#   -r  which runs to make (default "fixed-high fixed-low adaptive"; "fixed-right" is a fourth:
#       the outflow fixed at -f % of the true capacity, the guess an operator who knew the
#       mailbox would make, and so the p99 a perfect controller could hope for); a run not made
#       this time is read from OUT_DIR if an earlier one left it there
#   -f  the fixed-right run's share of the capacity, in % (default 90)
#   -m  the capacity moves: from SECONDS after the mailbox started (a second or so before the
#       visitors) it has CAPACITY workers, e.g. -m "60:16 120:32" halves it for a minute; the
#       table's "of capacity" is then against its mean while the line waited, and the fixed
#       runs' outflows are set from the first capacity
#
# Each admitted visitor makes 3 mailbox requests, 0.5 s apart. The mailbox answers at most
# C / B requests a second, so its true capacity is 60 × C / B / 3 admissions a minute (6,400
# with the defaults). A mailbox of 4 workers was tried first: its p99 passes twice its service
# time at 70 % of its capacity (bursts of arrivals), so no controller could keep a p99 target
# there and use 90 % of it; 32 workers smooth the bursts as a real application's pool does. max_active is high enough never to bind: the outflow alone admits.
# Builds usher and usher-loadtest (release). Stops everything it started on exit.
set -euo pipefail

N=15000 OVER=10 CAP=32 BASE_MS=100 TARGET=250 LIMIT=200 BASE=18520 OUT=""
RUNS="fixed-high fixed-low adaptive" PERIOD=2 RIGHT=90 MOVES=""
while getopts "n:o:c:b:t:e:l:p:d:r:f:m:h" o; do
  case $o in
    n) N=$OPTARG ;; o) OVER=$OPTARG ;; c) CAP=$OPTARG ;; b) BASE_MS=$OPTARG ;;
    t) TARGET=$OPTARG ;; e) PERIOD=$OPTARG ;; l) LIMIT=$OPTARG ;; p) BASE=$OPTARG ;; d) OUT=$OPTARG ;; r) RUNS=$OPTARG ;; f) RIGHT=$OPTARG ;; m) MOVES=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
. "$(dirname "$0")/lib.sh"
lib_numbers "$N" "$OVER" "$CAP" "$BASE_MS" "$TARGET" "$PERIOD" "$LIMIT" "$BASE" "$RIGHT"
lib_need curl
[ "$CAP" -gt 0 ] && [ "$BASE_MS" -gt 0 ] || lib_die "-c and -b must be above 0"

REQUESTS=3
CAPACITY=$((60 * CAP * 1000 / BASE_MS / REQUESTS))
HIGH=$((3 * CAPACITY)) LOW=$((CAPACITY / 3)) RIGHT_RATE=$((CAPACITY * RIGHT / 100))
UP_MOVES=() REPORT_MOVES=()
for move in $MOVES; do
  [[ $move =~ ^[0-9]+:[1-9][0-9]*$ ]] || lib_die "-m takes SECONDS:CAPACITY pairs, not $move"
  UP_MOVES+=(--capacity-at "$move")
  REPORT_MOVES+=(--capacity-per-minute-at "${move%%:*}:$((60 * ${move#*:} * 1000 / BASE_MS / REQUESTS))")
done
[ "$LOW" -gt 0 ] || LOW=1

[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/usher-adaptive.XXXXXX)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
P_UP=$BASE P_USHER=$((BASE + 1)) P_ADMIN=$((BASE + 2))

lib_build usher-loadtest
lib_raise_open_files
lib_on_exit_stop_started

# One run: NAME, admit_per_minute, and the [room.adaptive] table (or nothing).
run() {
  local name=$1 admit=$2 adaptive=$3 dir="$OUT/$1"
  shift 3
  mkdir -p "$dir"
  cat >"$dir/usher.toml" <<TOML
[listen]
http = "127.0.0.1:$P_USHER"
max_connections = 1000000

[admin]
listen = "127.0.0.1:$P_ADMIN"

[upstream]
addresses = ["127.0.0.1:$P_UP"]

[[room]]
name = "spike"
paths = ["/"]
max_active = 10000000
admit_per_minute = $admit
session_idle = "10m"
$adaptive
TOML
  "$USHER" check-config "$dir/usher.toml" >/dev/null
  lib_start_upstream "$P_UP" "$dir/upstream.log" --capacity "$CAP" --base-ms "$BASE_MS" "${UP_MOVES[@]}"
  lib_start_usher "$dir/usher.toml" "$dir/usher.log" "$P_ADMIN"
  echo "== $name: admit_per_minute $admit${adaptive:+ (adaptive)}; $N visitors within $OVER s" \
    "($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$LOADGEN" visitors --target "127.0.0.1:$P_USHER" --path /inbox --visitors "$N" --profile spike --over "$OVER" \
    --mailbox-requests "$REQUESTS" --think 0.5 --time-limit "$LIMIT" \
    --admin "127.0.0.1:$P_ADMIN" --room spike --json "$dir/visitors.json" "$@" | tail -n 12
  curl -sf "http://127.0.0.1:$P_UP/.upstream/stats" >"$dir/upstream.json"
  curl -sf "http://127.0.0.1:$P_ADMIN/metrics" >"$dir/metrics.txt"
  grep -E '^usher_adaptive_decisions_total' "$dir/metrics.txt" || true
  lib_stop_usher
  kill -TERM "$UP_PID" 2>/dev/null || true
  wait "$UP_PID" 2>/dev/null || true
}

echo "== the mailbox: $CAP in flight at $BASE_MS ms, so $CAPACITY admissions a minute" \
  "($REQUESTS requests each)${MOVES:+; capacity moving: $MOVES}"
wanted() { [[ " $RUNS " == *" $1 "* ]]; }
wanted fixed-high && run fixed-high "$HIGH" "" "$@"
wanted fixed-low && run fixed-low "$LOW" "" "$@"
wanted fixed-right && run fixed-right "$RIGHT_RATE" "" "$@"
wanted adaptive && run adaptive "$LOW" "[room.adaptive]
target_latency = \"${TARGET}ms\"
quantile = 0.99
error_budget = 0.01
min_per_minute = $((CAPACITY / 10 > 0 ? CAPACITY / 10 : 1))
max_per_minute = $((10 * CAPACITY))
period = \"${PERIOD}s\"" "$@"

# Every run this directory holds, made now or earlier (-r).
REPORTED=()
for r in fixed-high fixed-low fixed-right adaptive; do
  [ -f "$OUT/$r/visitors.json" ] && [ -f "$OUT/$r/upstream.json" ] && REPORTED+=("$r=$OUT/$r")
done
"$LOADGEN" adaptive-report --capacity-per-minute "$CAPACITY" "${REPORT_MOVES[@]}" --svg "$OUT/adaptive.svg" \
  --title "$N visitors within $OVER s; mailbox: $CAP in flight at $BASE_MS ms = $CAPACITY admissions/min" \
  "${REPORTED[@]}" | tee "$OUT/table.md"
echo "reports in $OUT"
