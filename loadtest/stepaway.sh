#!/usr/bin/env bash
# Stepping away under load (issue 21): a spike through one usher node in which a share of the
# waiting visitors stops polling for a while (a locked phone), then comes back and asks at
# once, as usher's page does. Reports the places lost among those who came back within
# `hold`, the outflow while the line was full, and the order among those who stayed.
#
#   loadtest/stepaway.sh [-n VISITORS] [-o SECONDS] [-a ADMIT_PER_MINUTE] [-s SHARE]
#                        [-w AWAY_AFTER] [-f AWAY_FOR] [-p BASE_PORT] [-d OUT_DIR]
#                        [-- MORE usher-loadtest visitors ARGS]
#
#   -n  visitors in the spike (default 10000)       -o  seconds they arrive within (default 5)
#   -a  the room's admit_per_minute (default 6000)  -s  share who step away (default 0.2)
#   -w  seconds after joining they go (default 10)  -f  seconds they stay away (default 60)
#   -p  first loopback port (default 18480; 3 ports from it are used, and must be free)
#   -d  where the reports go (default: a new /tmp/usher-stepaway.* directory): stepaway.json,
#       stepaway.svg, usher.toml, the logs and usher's final /metrics
#
# The room keeps the defaults that matter here (waiter_ttl 30 s, claim_window 30 s, hold
# 10 min), so a visitor away for 60 s is taken for away by usher, skipped, and must get its
# place back. max_active is high enough never to bind: the outflow alone limits admission.
# Builds usher and usher-loadtest (release). Stops everything it started on exit.
set -euo pipefail

N=10000 OVER=5 ADMIT=6000 SHARE=0.2 AFTER=10 FOR=60 BASE=18480 OUT=""
while getopts "n:o:a:s:w:f:p:d:h" o; do
  case $o in
    n) N=$OPTARG ;; o) OVER=$OPTARG ;; a) ADMIT=$OPTARG ;; s) SHARE=$OPTARG ;;
    w) AFTER=$OPTARG ;; f) FOR=$OPTARG ;; p) BASE=$OPTARG ;; d) OUT=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
. "$(dirname "$0")/lib.sh"
lib_numbers "$N" "$ADMIT" "$BASE"
lib_need curl

[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/usher-stepaway.XXXXXX)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
P_UP=$BASE P_USHER=$((BASE + 1)) P_ADMIN=$((BASE + 2))

lib_build usher-loadtest
lib_raise_open_files
lib_on_exit_stop_started

cat >"$OUT/usher.toml" <<TOML
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
admit_per_minute = $ADMIT
session_idle = "10m"
TOML
"$USHER" check-config "$OUT/usher.toml" >/dev/null

lib_start_upstream "$P_UP" "$OUT/upstream.log"
lib_start_usher "$OUT/usher.toml" "$OUT/usher.log" "$P_ADMIN"

echo "== spike: $N visitors within $OVER s, admit_per_minute $ADMIT; $SHARE of the waiters step away" \
  "$AFTER s after joining for $FOR s ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
"$LOADGEN" visitors --target "127.0.0.1:$P_USHER" --path /inbox --visitors "$N" --profile spike --over "$OVER" \
  --away-share "$SHARE" --away-after "$AFTER" --away-for "$FOR" \
  --admin "127.0.0.1:$P_ADMIN" --room spike --json "$OUT/stepaway.json" --svg "$OUT/stepaway.svg" "$@"
curl -sf "http://127.0.0.1:$P_ADMIN/metrics" >"$OUT/metrics.txt"
echo "== usher's own count (usher_*{room=\"spike\"}):"
grep -E '^usher_(away_total|returned_total|abandoned_total|expired_grants_total|held|admitted_total)\{' "$OUT/metrics.txt" \
  | grep 'room="spike"' || true
grep -E '^usher_away_seconds_(sum|count)\{' "$OUT/metrics.txt" || true
echo "reports in $OUT"
