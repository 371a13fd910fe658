#!/usr/bin/env bash
# The waiting room under load, in one command: a spike of browser-like visitors through one
# usher node (fairness, outflow, ETA accuracy, errors), then the memory of idle keep-alive
# connections on a fresh usher.
#
#   loadtest/waitroom.sh [-n VISITORS] [-o SECONDS] [-a ADMIT_PER_MINUTE] [-c CONNECTIONS]
#                        [-p BASE_PORT] [-d OUT_DIR] [-- MORE usher-loadtest visitors ARGS]
#
#   -n  visitors in the spike (default 20000)      -o  seconds they arrive within (default 5)
#   -a  the room's admit_per_minute (default 60000) -c idle connections (default 10000; 0 skips)
#   -p  first loopback port (default 18380; 7 ports from it are used, and must be free)
#   -d  where the reports go (default: a new /tmp/usher-waitroom.* directory): spike.json, spike.svg,
#       connections-*.json, usher.toml and the logs
#
# It builds usher and usher-loadtest (release), starts on loopback the fixed 1 KiB upstream
# (BASE), usher (BASE+1, admin BASE+2) with one room on "/" (max_active high enough never to
# bind, so the outflow alone limits admission), and runs:
#   usher-loadtest visitors --profile spike ...   (the report on stdout, JSON and SVG in -d)
#   usher-loadtest connections --pid USHER ...    (usher restarted first, so it starts clean)
# and the same connection measurement, as peers, on nginx as a reverse proxy (BASE+3, one
# worker; master and worker summed) and on bare-proxy --per-core 0 (BASE+4), each fresh.
# usher's connections ask /.usher/status (answered by usher), the peers' ask / (proxied).
# Then the same for TLS connections (a P-256 certificate made with openssl, TLS 1.3), usher's
# TLS listener (BASE+5) beside nginx terminating TLS (BASE+6), when openssl is installed.
# Arguments after -- go to `usher-loadtest visitors` and override its flags above, e.g.
#   loadtest/waitroom.sh -c 0 -- --profile steady --rate 500 --visitors 5000
# Every visitor has its own source address in 127.1.0.0/16 onwards, so usher's per-client
# limits apply to each as to a real browser. Raises the open-files limit (needs root beyond
# the hard limit). Stops everything it started on exit.
set -euo pipefail

N=20000 OVER=5 ADMIT=60000 CONNS=10000 BASE=18380 OUT=""
while getopts "n:o:a:c:p:d:h" o; do
  case $o in
    n) N=$OPTARG ;; o) OVER=$OPTARG ;; a) ADMIT=$OPTARG ;; c) CONNS=$OPTARG ;;
    p) BASE=$OPTARG ;; d) OUT=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
. "$(dirname "$0")/lib.sh"
lib_numbers "$N" "$ADMIT" "$CONNS" "$BASE"
[[ $OVER =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "waitroom.sh: -o is seconds, not $OVER" >&2; exit 2; }
lib_need curl

[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/usher-waitroom.XXXXXX)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
P_UP=$BASE P_USHER=$((BASE + 1)) P_ADMIN=$((BASE + 2)) P_NGINX=$((BASE + 3)) P_BARE=$((BASE + 4))
P_USHER_TLS=$((BASE + 5)) P_NGINX_TLS=$((BASE + 6))
TLS=""
if command -v openssl >/dev/null 2>&1; then
  mkdir -p "$OUT/tls" && chmod 755 "$OUT/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE -keyout "$OUT/tls/key.pem" -out "$OUT/tls/cert.pem" 2>"$OUT/tls/openssl.log"
  chmod 644 "$OUT/tls/key.pem"
  TLS=$OUT/tls
fi

lib_build usher-loadtest bare-proxy
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
lib_raise_open_files
lib_on_exit_stop_started

cat >"$OUT/usher.toml" <<TOML
[listen]
http = "127.0.0.1:$P_USHER"
$([ -n "$TLS" ] && printf 'https = "127.0.0.1:%s"\ntls_cert = "%s/cert.pem"\ntls_key = "%s/key.pem"\n' "$P_USHER_TLS" "$TLS" "$TLS")
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

lib_start_upstream "$P_UP" "$OUT/upstream.log"
lib_start_usher "$OUT/usher.toml" "$OUT/usher-spike.log" "$P_ADMIN"

echo "== spike: $N visitors within $OVER s, admit_per_minute $ADMIT ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
"$LOADGEN" visitors --target "127.0.0.1:$P_USHER" --path /inbox --visitors "$N" --profile spike --over "$OVER" \
  --admin "127.0.0.1:$P_ADMIN" --room spike --json "$OUT/spike.json" --svg "$OUT/spike.svg" "$@"
echo "usher VmRSS after the spike: $(sed -n 's/^VmRSS:\s*//p' "/proc/$USHER_PID/status")"
lib_stop_usher

# Idle keep-alive connections of a fresh server: PIDS... -- loadtest connections ARGS...
measure_connections() { # name url-path port pid...   (a name ending in -tls: TLS connections)
  local name=$1 path=$2 port=$3; shift 3
  local pid_args=() tls_args=()
  for p in "$@"; do pid_args+=(--pid "$p"); done
  [[ $name == *-tls ]] && tls_args=(--tls-ca "$TLS/cert.pem")
  echo "== idle keep-alive connections: $CONNS to $name"
  "$LOADGEN" connections --target "127.0.0.1:$port" --path "$path" "${pid_args[@]}" --count "$CONNS" \
    "${tls_args[@]}" --json "$OUT/connections-$name.json"
}
if [ "$CONNS" -gt 0 ]; then
  lib_start_usher "$OUT/usher.toml" "$OUT/usher-connections.log" "$P_ADMIN"
  measure_connections usher /.usher/status "$P_USHER" "$USHER_PID"
  lib_stop_usher
  if [ -n "$TLS" ]; then
    lib_start_usher "$OUT/usher.toml" "$OUT/usher-connections-tls.log" "$P_ADMIN"
    measure_connections usher-tls /.usher/status "$P_USHER_TLS" "$USHER_PID"
    lib_stop_usher
  fi

  if [ -x "$NGINX" ]; then
    mkdir -p "$OUT/nginx" && chmod 755 "$OUT/nginx"
    cat >"$OUT/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
daemon off;
events { worker_connections 65536; }
http {
  access_log off;
  keepalive_timeout 60s;
  upstream up { server 127.0.0.1:$P_UP; keepalive 256; }
  server {
    listen 127.0.0.1:$P_NGINX backlog=4096;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
$([ -n "$TLS" ] && cat <<TLSCONF
  server {
    listen 127.0.0.1:$P_NGINX_TLS ssl backlog=4096;
    ssl_certificate $TLS/cert.pem;
    ssl_certificate_key $TLS/key.pem;
    ssl_protocols TLSv1.3;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
TLSCONF
)
}
CONF
    "$NGINX" -e "$OUT/nginx/error.log" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" >"$OUT/nginx.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$P_NGINX/" && break; sleep 0.1; done
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$OUT/nginx/error.log" >&2; exit 1; }
    measure_connections nginx-proxy / "$P_NGINX" "$NGINX_PID" $(ps -o pid= --ppid "$NGINX_PID")
    kill -TERM "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true
    if [ -n "$TLS" ]; then
      # A fresh nginx for the TLS row, as for usher's.
      "$NGINX" -e "$OUT/nginx/error.log" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" >"$OUT/nginx-tls.log" 2>&1 &
      NGINX_PID=$!
      PIDS+=("$NGINX_PID")
      for _ in $(seq 100); do curl -sfk -o /dev/null "https://127.0.0.1:$P_NGINX_TLS/" && break; sleep 0.1; done
      measure_connections nginx-proxy-tls / "$P_NGINX_TLS" "$NGINX_PID" $(ps -o pid= --ppid "$NGINX_PID")
      kill -TERM "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true
    fi
  else
    echo "== nginx not installed: no nginx row (apt-get install nginx-light)"
  fi

  "$BARE" "127.0.0.1:$P_BARE" "127.0.0.1:$P_UP" --per-core 0 >"$OUT/bare-proxy.log" 2>&1 &
  BARE_PID=$!
  PIDS+=("$BARE_PID")
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$P_BARE/" && break; sleep 0.1; done
  kill -0 "$BARE_PID" 2>/dev/null || { cat "$OUT/bare-proxy.log" >&2; exit 1; }
  measure_connections bare-percore / "$P_BARE" "$BARE_PID"
  kill -TERM "$BARE_PID"; wait "$BARE_PID" 2>/dev/null || true
fi
echo "reports in $OUT"
