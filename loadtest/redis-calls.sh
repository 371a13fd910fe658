#!/usr/bin/env bash
# The Redis store's cost, measured: Redis commands per proxied request and per status poll,
# and throughput and usher CPU per request beside the memory store, in one run.
#
#   cargo build --release && loadtest/redis-calls.sh [SECONDS]
#
# Starts on loopback (ports 18090-18102): nginx serving 1 KiB (the upstream), redis-server,
# two usher nodes on it (rooms "open", never full, and "held", paused) and one usher on the
# memory store. Rows, each measured with wrk -t2 -c32 for SECONDS (default 10), two rounds:
#   admitted  GET /room/x with a valid pass (the path that must not touch Redis)
#   status    GET /.usher/status with a ticket in the paused room, 40 ahead (a waiter's poll)
# "Redis commands" are INFO commandstats calls (commands run inside scripts included; the
# idle line is what the nodes' ticks cost alone), "EVALSHA" the round trips of scripts.
# Needs nginx, redis-server, redis-cli, wrk and curl.
set -euo pipefail
D=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
U=$ROOT/target/release/usher
[ -x "$U" ] || { echo "build first: cargo build --release" >&2; exit 2; }
for c in redis-server redis-cli wrk curl; do command -v $c >/dev/null || { echo "needs $c" >&2; exit 2; }; done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
W=$(mktemp -d); chmod 755 "$W"   # nginx workers read the page
export USHER_SECRET=0123456789abcdef0123456789abcdef-redis-calls
head -c 1024 /dev/zero | tr '\0' 'x' > "$W/page.html"
cat > "$W/nginx.conf" <<CONF
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18090; root $W; location / { try_files /page.html =404; } } }
CONF
node() { # store http admin
  cat <<CONF
[listen]
http = "127.0.0.1:$2"
workers = 2
[admin]
listen = "127.0.0.1:$3"
[upstream]
addresses = ["127.0.0.1:18090"]
[store]
kind = "$1"
$([ "$1" = redis ] && echo 'url = "redis://127.0.0.1:16379"')
[limits]
requests_per_second = 1000000
burst = 1000000
joins_per_minute = 1000000
join_burst = 1000000
polls_per_second = 1000000
poll_burst = 1000000
[[room]]
name = "open"
paths = ["/room/"]
max_active = 1000000
admit_per_minute = 1000000
[[room]]
name = "held"
paths = ["/held/"]
mode = "paused"
waiter_ttl = "10m"
CONF
}
node redis 18091 18092 > "$W/redis-1.toml"
node redis 18093 18094 > "$W/redis-2.toml"
node memory 18101 18102 > "$W/memory.toml"
redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$W/redis.pid" --logfile "$W/redis.log" --dir "$W"
"$NGINX" -c "$W/nginx.conf"
sleep 0.5
"$U" run --config "$W/redis-1.toml" 2>"$W/redis-1.log" & P1=$!
"$U" run --config "$W/redis-2.toml" 2>"$W/redis-2.log" & P2=$!
"$U" run --config "$W/memory.toml" 2>"$W/memory.log" & P3=$!
trap 'kill $P1 $P2 $P3 2>/dev/null; "$NGINX" -c "$W/nginx.conf" -s stop 2>/dev/null; redis-cli -p 16379 shutdown nosave >/dev/null 2>&1 || true; rm -rf "$W"' EXIT
sleep 2
# URL KIND: name=value of the cookie usher sets for a newcomer (names are KIND_<room>).
cookie() { curl -s -o /dev/null -c - -H 'Accept: application/json' "$1" | awk -v n="$2_" 'index($6, n) == 1 {print $6 "=" $7}'; }
# The polled ticket has 40 waiters ahead of it, as a waiter away from the front would: the
# front itself always asks Redis (its turn may come at any tick).
for i in $(seq 40); do cookie http://127.0.0.1:18091/held/ usher_ticket >/dev/null; cookie http://127.0.0.1:18101/held/ usher_ticket >/dev/null; done
PASS_R=$(cookie http://127.0.0.1:18091/room/ usher_pass); TICKET_R=$(cookie http://127.0.0.1:18091/held/ usher_ticket)
PASS_M=$(cookie http://127.0.0.1:18101/room/ usher_pass); TICKET_M=$(cookie http://127.0.0.1:18101/held/ usher_ticket)
[ -n "$PASS_R" ] && [ -n "$TICKET_R" ] && [ -n "$PASS_M" ] && [ -n "$TICKET_M" ] || { echo "no cookies" >&2; exit 1; }
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }   # utime+stime in 1/100 s
calls() { redis-cli -p 16379 INFO commandstats | awk -F'[:,=]' -v c="${1:-}" '/^cmdstat_/ && (c == "" || $1 == "cmdstat_" c) {s+=$3} END {print s+0}'; }
wrk_run() { wrk -t2 -c32 -d"${D}s" -H "Cookie: $2" -H 'Accept: application/json' "$1" > "$W/wrk.txt"; }
field() { awk -v f="$1" '$0 ~ f {print $2}' "$W/wrk.txt"; }
redis-cli -p 16379 CONFIG RESETSTAT >/dev/null; sleep "$D"
echo "idle: $(calls) Redis commands, $(calls evalsha) EVALSHA in ${D}s without traffic (two nodes' ticks, two rooms each)"
RP=$(cat "$W/redis.pid")
for round in 1 2; do
  for row in admitted status; do
    if [ $row = admitted ]; then path=/room/x; rc="$PASS_R"; mc="$PASS_M"
    else path=/.usher/status; rc="$TICKET_R"; mc="$TICKET_M"; fi
    redis-cli -p 16379 CONFIG RESETSTAT >/dev/null
    u0=$(cpu $P1); r0=$(cpu "$RP")
    wrk_run "http://127.0.0.1:18091$path" "$rc"
    u1=$(cpu $P1); r1=$(cpu "$RP"); all=$(calls); ev=$(calls evalsha)
    n=$(awk '/requests in/ {print $1}' "$W/wrk.txt"); rps=$(field Requests/sec); bad=$(awk '/Non-2xx/ {print $NF}' "$W/wrk.txt")
    m0=$(cpu $P3)
    wrk_run "http://127.0.0.1:18101$path" "$mc"
    m1=$(cpu $P3)
    mn=$(awk '/requests in/ {print $1}' "$W/wrk.txt"); mrps=$(field Requests/sec); mbad=$(awk '/Non-2xx/ {print $NF}' "$W/wrk.txt")
    awk -v row=$row -v round=$round -v n="$n" -v rps="$rps" -v bad="${bad:-0}" -v all="$all" -v ev="$ev" \
        -v u="$((u1 - u0))" -v r="$((r1 - r0))" -v mn="$mn" -v mrps="$mrps" -v mbad="${mbad:-0}" -v m="$((m1 - m0))" 'BEGIN {
      printf "round %d %-8s redis: %8.0f req/s (non-2xx %s), %.4f Redis commands and %.4f EVALSHA per request, usher %.1f us + redis-server %.1f us CPU per request\n", round, row, rps, bad, all / n, ev / n, u * 10000 / n, r * 10000 / n
      printf "               memory: %8.0f req/s (non-2xx %s), usher %.1f us CPU per request; redis/memory throughput %.2f\n", mrps, mbad, m * 10000 / mn, rps / mrps
    }'
  done
done
