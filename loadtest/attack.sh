#!/usr/bin/env bash
# Every attack of issue 14 against one usher, each beside a measured real client, in one
# command; prints one Markdown table (the one SECURITY.md carries).
#
#   loadtest/attack.sh [-s SECONDS] [-k KINDS] [-p BASE_PORT] [-d OUT_DIR] [-r RATE] [-c]
#
#   -s  seconds per attack (default 20, or $ATTACK_SECONDS)
#   -k  the kinds to run, comma-separated (default: all), e.g. -k slowloris,h2-rapid-reset
#   -p  first loopback port (default 18480; 3 ports from it are used, and must be free)
#   -d  where the reports go (default: a new /tmp/usher-attack.* directory): one JSON report
#       per kind, table.md, usher.toml and the logs
#   -r  the real client's new visitors a second (default 20; 3 requests each): more gives
#       its p99 more answers to stand on (at 20, 1,200 in 20 s: the p99 is the 12th worst)
#   -c  pin usher to CPU 0 and everything else (attack, real client, upstream) to CPU 1
#       (taskset), so that the attack tool's own work does not take usher's CPU: on one
#       machine the attacker is otherwise also a noisy neighbour, which a real one is not.
#       usher then runs one worker thread (it sizes its runtime by the CPUs it may use). As
#       root the upstream then runs SCHED_FIFO, as the real client does (see below): the
#       mailbox is not on the attacker's machine.
#
# It builds usher and usher-loadtest (release), starts on loopback the fixed 1 KiB upstream
# (BASE; it also accepts WebSocket upgrades), and for each kind a fresh usher (BASE+1, admin
# BASE+2), so every row starts from the same clean process and one that falls over cannot
# spoil the next. usher's configuration (written to OUT_DIR/usher.toml):
#   - room "inbox" on /inbox, auto, capacity never reached: the real client is admitted at
#     once and served by the upstream, so its latency is usher's path end to end;
#   - room "event" on /event, queue_all: every join is a ticket (the ticket flood's target);
#   - client.trusted_proxies = ["127.7.0.0/16"], X-Forwarded-For believed: the key and ticket
#     floods come through that proxy and name their IPv6 clients in it. Every other attacker,
#     the real client (127.3.x.y) and the recovery probes (127.2.x.y) are clients in their
#     own right, keyed by their own addresses, as on the internet;
#   - limits as the example configuration, but limits.max_tracked_clients = 10000: the
#     limiter forgets a key once it is out of debt (50 ms after one request at 20/s) and is
#     swept each second, so a flood of ~30,000 new keys a second never fills the default
#     table of 1,000,000; at 10,000 it is full within each second, and the overflow cells are
#     what the key flood measures.
# The baseline (the real client alone) runs first; then, each for SECONDS:
#   slowloris (10,000 sockets, one byte each 5 s), h2-idle (5,000), h2-rapid-reset,
#   h2-continuation, h2-settings, h2-ping, h2-hpack (8 connections each), key-flood
#   (1,000,000 /64s through 32 proxy connections, one client flooding at 200/s), ticket-flood
#   (the /64s of one /48 joining /event), websocket-flood (2,000 tunnels held open).
# The baseline runs once more at the end (noise of the machine). The real client: 20 new
# visitors a second, 3 requests each, from 127.3.x.y, measured while the attack runs (it stops
# before the attack lets go of its sockets; the end, every socket closing at once, is the
# recovery probes' "slowest answer"). On the shared CPU the attack's threads run at nice 19
# and the client's thread, as root, SCHED_FIFO, so the client measures usher rather than the
# tool's time slices. A row is a MISS when its p99 is above twice the lower of the two
# baselines', it saw errors, or usher went down.
# Raises the open-files limit. Stops everything it started on exit.
set -euo pipefail

SECONDS_EACH=${ATTACK_SECONDS:-20} KINDS="" BASE=18480 OUT="" RATE=20 PIN=""
ALL="slowloris,h2-idle,h2-rapid-reset,h2-continuation,h2-settings,h2-ping,h2-hpack,key-flood,ticket-flood,websocket-flood"
while getopts "s:k:p:d:r:ch" o; do
  case $o in
    s) SECONDS_EACH=$OPTARG ;; k) KINDS=$OPTARG ;; p) BASE=$OPTARG ;; d) OUT=$OPTARG ;;
    r) RATE=$OPTARG ;; c) PIN=1 ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
  esac
done
[ -n "$KINDS" ] || KINDS=$ALL
. "$(dirname "$0")/lib.sh"
lib_numbers "$SECONDS_EACH" "$BASE" "$RATE"
lib_need curl
OTHERS=()
if [ -n "$PIN" ]; then
  lib_need taskset
  [ "$(nproc)" -ge 2 ] || lib_die "-c needs two CPUs"
  export USHER_PIN=0
  OTHERS=(taskset -c 1)
fi

[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/usher-attack.XXXXXX)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
P_UP=$BASE P_USHER=$((BASE + 1)) P_ADMIN=$((BASE + 2))

lib_build usher-loadtest
# usher and the tool hold one descriptor per attacking socket.
lib_raise_open_files
lib_on_exit_stop_started

cat >"$OUT/usher.toml" <<TOML
[listen]
http = "127.0.0.1:$P_USHER"

[admin]
listen = "127.0.0.1:$P_ADMIN"

[upstream]
addresses = ["127.0.0.1:$P_UP"]

[client]
trusted_proxies = ["127.7.0.0/16"]
real_ip_from = "x-forwarded-for"

[limits]
requests_per_second = 20
burst = 40
joins_per_minute = 6
join_burst = 300
tickets_per_client = 300
max_tracked_clients = 10000

[[room]]
name = "inbox"
paths = ["/inbox"]
max_active = 10000000
admit_per_minute = 6000000
session_idle = "10m"

[[room]]
name = "event"
paths = ["/event"]
max_active = 1000
admit_per_minute = 60
mode = "queue_all"
TOML
"$USHER" check-config "$OUT/usher.toml" >/dev/null

lib_start_upstream "$P_UP" "$OUT/upstream.log"
[ -z "$PIN" ] || taskset -a -p -c 1 "$UP_PID" >/dev/null
# The upstream stands for the mailbox, which is not on the attacker's machine. Pinned, as root,
# it runs SCHED_FIFO like the real client, so its answers do not wait out the attack tool's
# time slices on the shared CPU (WebSocket flood: p99 1.54 and 1.71 ms with, 2.44 and 3.43 ms
# without, in alternating runs). Unpinned it would take usher's CPUs too, so it is left alone.
if [ -n "$PIN" ] && [ "$(id -u)" = 0 ] && command -v chrt >/dev/null; then
  chrt -a -f -p 1 "$UP_PID" >/dev/null || echo "(the upstream could not be made SCHED_FIFO)"
fi

echo "== usher $(cd "$LIB_ROOT" && git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $SECONDS_EACH s per attack," \
  "real client $RATE visitors/s${PIN:+, usher pinned to CPU 0 and the rest to CPU 1}"
REPORTS=()
# The baseline runs again at the end: on a shared machine the two show how much of a row's
# p99 is the machine's noise rather than the attack.
for run in none ${KINDS//,/ } none-again; do
  kind=${run%-again}
  lib_start_usher "$OUT/usher.toml" "$OUT/usher-$run.log" "$P_ADMIN"
  echo "== $run"
  # A tool that fails still leaves the other rows; its row is missing from the table.
  if "${OTHERS[@]}" "$LOADGEN" attack "$kind" --target "127.0.0.1:$P_USHER" --admin "127.0.0.1:$P_ADMIN" \
      --pid "$USHER_PID" --seconds "$SECONDS_EACH" --client-rate "$RATE" \
      --json "$OUT/$run.json" >"$OUT/$run.txt" 2>&1; then
    REPORTS+=("$OUT/$run.json")
  fi
  cat "$OUT/$run.txt"
  kill -0 "$USHER_PID" 2>/dev/null || echo "!! usher died during $run (see $OUT/usher-$run.log)"
  lib_stop_usher
done

echo
"$LOADGEN" attack-table "${REPORTS[@]}" | tee "$OUT/table.md"
echo "reports in $OUT"
