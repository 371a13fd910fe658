#!/usr/bin/env bash
# Does the admin event stream slow the request path? One usher (release) in front of
# usher-loadtest's 1 KiB upstream, a room on /room/ ticking every 200 ms (so figures flow),
# and wrk on /room/ with a pass (the admitted path). Rounds alternate 0 and N subscribers to
# /admin/events (curl, each reading the stream to /dev/null); an operator changes the room's
# message every second meanwhile, so every subscriber also gets changes. Prints req/s, p99 and
# usher's CPU per request for each, and the ratio.
#
#   loadtest/events.sh [-n SUBSCRIBERS] [-d SECONDS] [-r ROUNDS] [-p BASE_PORT]
#
#   -n  subscribers (default 100)    -d  seconds per measurement (default 10)
#   -r  rounds of each (default 3)   -p  first loopback port (default 18580; 3 are used)
#
# Needs cargo, curl and wrk.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SUBS=100 DUR=10 ROUNDS=3 BASE=18580
while getopts "n:d:r:p:h" o; do
  case $o in
    n) SUBS=$OPTARG ;; d) DUR=$OPTARG ;; r) ROUNDS=$OPTARG ;; p) BASE=$OPTARG ;;
    h) lib_usage; exit 0 ;; *) exit 2 ;;
  esac
done
lib_numbers "$SUBS" "$DUR" "$ROUNDS" "$BASE"
lib_need curl wrk
P_UP=$BASE P_USHER=$((BASE + 1)) P_ADMIN=$((BASE + 2))
lib_build usher-loadtest
lib_raise_open_files
lib_on_exit_stop_started
WORK=$(mktemp -d /tmp/usher-events.XXXXXX)

TOKEN=$(lib_secret)
HASH=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
cat >"$WORK/usher.toml" <<TOML
[listen]
http = "127.0.0.1:$P_USHER"

[admin]
listen = "127.0.0.1:$P_ADMIN"

[[admin.operator]]
name = "loadtest"
role = "operator"
token_sha256 = "$HASH"

[upstream]
addresses = ["127.0.0.1:$P_UP"]

[limits]
requests_per_second = 1000000
burst = 1000000

[[room]]
name = "admitted"
paths = ["/room/"]
max_active = 1000000
admit_per_minute = 1000000
tick = "200ms"
TOML
lib_start_upstream "$P_UP" "$WORK/upstream.log"
lib_start_usher "$WORK/usher.toml" "$WORK/usher.log" "$P_ADMIN"
PASS=$(curl -s -D - -o /dev/null "http://127.0.0.1:$P_USHER/room/" | tr -d '\r' |
  sed -n 's/^[Ss]et-[Cc]ookie: \(usher_pass_[^=]*=[^;]*\).*/\1/p' | head -n1)
[ -n "$PASS" ] || lib_die "no pass from usher"

# An operator's change every second, so subscribers carry changes as well as figures.
( i=0; while :; do
    curl -s -o /dev/null -X PATCH -H "Authorization: Bearer $TOKEN" \
      -d "{\"message\": \"change $i\"}" "http://127.0.0.1:$P_ADMIN/admin/rooms/admitted"
    i=$((i + 1)); sleep 1
  done ) &
PIDS+=($!)

ticks() { awk '{ print $14 + $15 }' "/proc/$USHER_PID/stat"; }
measure() { # label -> "rps p99_ms cpu_us_per_req"
  local t0 t1 out
  t0=$(ticks)
  out=$(wrk -t2 -c64 -d"${DUR}s" --latency -H "Cookie: $PASS" "http://127.0.0.1:$P_USHER/room/")
  t1=$(ticks)
  awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 } / requests in / { n = $1 } /Non-2xx/ { bad = $NF }
    END { printf "%d %.3f %.1f %d\n", rps, p99, d * 1e6 / hz / n, bad + 0 }' <<<"$out"
}
subscribe() { # n: starts n readers of the stream
  local i
  SUB_PIDS=()
  for i in $(seq "$1"); do
    curl -s -N -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_ADMIN/admin/events" &
    SUB_PIDS+=($!)
  done
  sleep 1
}
unsubscribe() { kill "${SUB_PIDS[@]}" 2>/dev/null || true; wait "${SUB_PIDS[@]}" 2>/dev/null || true; }

echo "== warming up"; measure warm >/dev/null
printf "%-14s %8s %8s %12s %7s\n" subscribers req/s p99_ms cpu_us/req non2xx
declare -a R0 R1
for r in $(seq "$ROUNDS"); do
  read -r a b c d <<<"$(measure none)"; R0+=("$a $b $c"); printf "%-14s %8d %8.3f %12.1f %7d\n" 0 "$a" "$b" "$c" "$d"
  subscribe "$SUBS"
  open=$(ls /proc/"$USHER_PID"/fd | wc -l)
  read -r a b c d <<<"$(measure some)"; R1+=("$a $b $c"); printf "%-14s %8d %8.3f %12.1f %7d\n" "$SUBS ($open fds)" "$a" "$b" "$c" "$d"
  unsubscribe
done
median() { printf "%s\n" "$@" | sort -n | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }'; }
col() { local i=$1; shift; for x in "$@"; do echo "$x" | cut -d' ' -f"$i"; done; }
echo
printf "median, %d subscribers / none: req/s %s, p99 %s, cpu/req %s\n" "$SUBS" \
  "$(awk -v a="$(median $(col 1 "${R1[@]}"))" -v b="$(median $(col 1 "${R0[@]}"))" 'BEGIN { printf "%.2f×", a / b }')" \
  "$(awk -v a="$(median $(col 2 "${R1[@]}"))" -v b="$(median $(col 2 "${R0[@]}"))" 'BEGIN { printf "%.2f×", a / b }')" \
  "$(awk -v a="$(median $(col 3 "${R1[@]}"))" -v b="$(median $(col 3 "${R0[@]}"))" 'BEGIN { printf "%.2f×", a / b }')"
rm -rf "$WORK"
