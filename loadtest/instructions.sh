#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: repeatable whatever else
# the machine is doing, unlike req/s. usher (one worker, no room) in front of nginx serving a
# 1 KiB page; counters zeroed after a warm-up, then 10 s of wrk -t1 -c8.
#
#   loadtest/instructions.sh [USHER_BINARY]     (default: target/release/usher, built if missing)
#
# Needs valgrind, nginx, wrk and curl. Uses loopback ports 18480-18482.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/usher}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --bin usher)
for tool in valgrind callgrind_control nginx wrk curl; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || { echo "instructions.sh: $tool is missing" >&2; exit 2; }
done
WORK=$(mktemp -d)
cleanup() { [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; pkill -INT -f "$WORK/usher.toml" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
head -c 768 /dev/urandom | base64 -w0 | head -c 1024 > "$WORK/page.html"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1; pid $WORK/nginx.pid; error_log $WORK/error.log;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18480; location / { root $WORK; try_files /page.html =404; } } }
NGINX
nginx -c "$WORK/nginx.conf"
cat > "$WORK/usher.toml" <<TOML
[listen]
http = "127.0.0.1:18481"
workers = 1
[admin]
listen = "127.0.0.1:18482"
[upstream]
addresses = ["127.0.0.1:18480"]
[limits]
requests_per_second = 1000000
burst = 1000000
TOML
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.%p" "$BIN" run --config "$WORK/usher.toml" > "$WORK/usher.log" 2>&1 &
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18481/ && break; sleep 0.2; done
wrk -t1 -c8 -d3s http://127.0.0.1:18481/ > /dev/null
callgrind_control -z > /dev/null
requests=$(wrk -t1 -c8 -d10s http://127.0.0.1:18481/ | awk '/requests in/ {print $1}')
callgrind_control -d > /dev/null
sleep 1
total=$(callgrind_annotate "$(ls "$WORK"/callgrind.*.1 | head -1)" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$(basename "$BIN"): $total instructions / $requests requests = $((total / requests)) per request"
