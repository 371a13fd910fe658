#!/usr/bin/env bash
# usher beside its peers, measured in one run with one load generator (wrk), so that the
# ratios mean something on a shared, noisy machine. Absolute figures do not: only compare
# rows of one run.
#
#   loadtest/compare.sh [-d SECONDS] [-c CONNECTIONS] [-r ROUNDS] [-t WRK_THREADS]
#                       [-w USHER_WORKERS] [-p BASE_PORT] [-x COMMAND] [NAME=URL[::HEADER]]...
#
#   -d  seconds per measurement (default 10)      -c  open connections (default 64)
#   -r  rounds, interleaved (default 3)           -t  wrk threads (default: cores)
#   -w  usher listen.workers (default 0: one per core)
#   -p  first loopback port (default 18080; 14 ports from it are used)
#   -x  a command started in the background with the peers (e.g. another server that extra
#       rows measure), stopped at the end
#
# It builds usher and bare-proxy (release) and starts on loopback, from BASE_PORT on:
#   +0 direct        nginx, 1 worker, serving a 1 KiB page: the upstream of every proxy row
#   +1 nginx-proxy   nginx reverse proxy to it with a keep-alive upstream pool
#   +2 nginx-limit   the same plus limit_req per client address (the limit is never reached)
#   +3 bare-proxy    loadtest's bare-proxy: a hyper proxy doing nothing else, one shared pool
#   +4 static-1k     nginx serving a 1 KiB static file (peer of a small answer usher makes)
#   +5 bare-percore  bare-proxy --per-core 0: the same in usher's shape (a runtime per core)
#   +6 usher         usher in front of +0, no rooms, a per-client limit never reached (admin +7)
#   +8 nginx-proxy-https  nginx-proxy terminating TLS (TLS 1.3, a P-256 certificate made here)
#   +9 usher-https   usher's TLS listener, same certificate, same routes as +6
#  +10 direct-tls    the upstream again, over TLS 1.3 (same certificate): the mailbox's hop in TLS
#  +11 nginx-proxy-ssl   nginx-proxy to +10 (proxy_ssl, verified, keep-alive pool, sessions reused)
#  +12 usher-upstream-tls  a second usher, as +6 but to +10 over verified TLS, HTTP/1.1 (admin +13)
# then measures every row, plus each NAME=URL[::HEADER] given, in rounds (the order rotates
# each round) and prints the median round of each row and usher's ratios to its peers. In
# extra rows "{usher}" stands for usher's base URL and "{admin}" for its admin listener's:
#   loadtest/compare.sh "usher-status={usher}/.usher/status::Cookie: usher_ticket_<room>=..."
# A row counts only when its non-2xx and error columns are 0. cpu_us/req is the CPU time of
# the row's server per request; other% is the CPU that anything else on the machine took
# meanwhile (a disturbed run: measure again). BENCHMARKS.md explains every column.
#
# Needs cargo, curl, nginx and wrk; installs nginx-light and wrk with apt-get when missing
# and run as root. Set KEEP=1 to keep the work directory (configs, logs) for a look after.
set -euo pipefail

DUR=10 CONNS=64 ROUNDS=3 THREADS=$(nproc) WORKERS=0 BASE=18080 EXTRA=""
while getopts "d:c:r:t:w:p:x:h" o; do
  case $o in
    d) DUR=$OPTARG ;; c) CONNS=$OPTARG ;; r) ROUNDS=$OPTARG ;; t) THREADS=$OPTARG ;;
    w) WORKERS=$OPTARG ;; p) BASE=$OPTARG ;; x) EXTRA=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
for n in "$DUR" "$CONNS" "$ROUNDS" "$THREADS" "$WORKERS" "$BASE"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "compare.sh: not a number: $n (see -h)" >&2; exit 2; }
done
(( THREADS > CONNS )) && THREADS=$CONNS

ROOT=$(cd "$(dirname "$0")/.." && pwd)
P_DIRECT=$BASE P_NGINX=$((BASE + 1)) P_LIMIT=$((BASE + 2)) P_BARE=$((BASE + 3))
P_STATIC=$((BASE + 4)) P_PERCORE=$((BASE + 5)) P_USHER=$((BASE + 6)) P_ADMIN=$((BASE + 7))
P_NGINX_TLS=$((BASE + 8)) P_USHER_TLS=$((BASE + 9))
P_DIRECT_TLS=$((BASE + 10)) P_NGINX_SSL=$((BASE + 11)) P_USHER_UP_TLS=$((BASE + 12)) P_ADMIN_UP_TLS=$((BASE + 13))

# --- tools -----------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
missing=()
have nginx || missing+=(nginx-light)
have wrk || missing+=(wrk)
have curl || missing+=(curl)
have openssl || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "installing ${missing[*]} ..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "compare.sh needs these Debian packages: ${missing[*]}  (sudo apt-get install ${missing[*]})" >&2
    exit 2
  fi
fi
have cargo || { echo "compare.sh needs cargo (Rust)" >&2; exit 2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $(seq "$BASE" "$P_ADMIN_UP_TLS"); do
  if port_busy "$p"; then echo "compare.sh: port $p is in use; pick another base with -p" >&2; exit 1; fi
done

# --- build -----------------------------------------------------------------------------
echo "building usher and bare-proxy (release) ..." >&2
BUILD_JSON=$(cd "$ROOT" && cargo build --release -p usher -p usher-loadtest --bins --message-format=json-render-diagnostics)
exe() { grep -o "\"executable\":\"[^\"]*/$1\"" <<<"$BUILD_JSON" | tail -n1 | cut -d'"' -f4; }
USHER=$(exe usher) BARE=$(exe bare-proxy)
if [ ! -x "$USHER" ] || [ ! -x "$BARE" ]; then
  echo "compare.sh: the build gave no usher or bare-proxy binary" >&2
  exit 1
fi

# --- processes -------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/usher-compare.XXXXXX)
chmod 755 "$WORK" # nginx workers run as another user when started as root
PIDS=() NAMES=() GROUP=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [ -n "$GROUP" ] && kill -TERM -- "-$GROUP" 2>/dev/null
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  [ -n "$GROUP" ] && kill -KILL -- "-$GROUP" 2>/dev/null
  wait 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

declare -A PID_OF
start() { # name command... ; output goes to $WORK/name.log
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!) NAMES+=("$name") PID_OF[$name]=$!
}

head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/page.html"
# One certificate for every TLS row: the same key type and handshake cost on each side. Its
# DNS name is what both proxies verify on the upstream hop.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>"$WORK/openssl.log" ||
  { cat "$WORK/openssl.log" >&2; exit 1; }
chmod 644 "$WORK/key.pem"
nginx_conf() { # name port workers server-block-body [http-block-extra]
  cat >"$WORK/$1.conf" <<CONF
worker_processes $3;
pid $WORK/$1.pid;
error_log $WORK/$1.err warn;
daemon off;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  ${5:-}
  server {
    listen 127.0.0.1:$2 reuseport backlog=4096;
    $4
  }
}
CONF
  start "$1" "$NGINX" -e "$WORK/$1.err" -p "$WORK" -c "$WORK/$1.conf"
}
POOL="upstream up { server 127.0.0.1:$P_DIRECT; keepalive 256; }"
PROXY='location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }'
PAGE="location / { root $WORK; try_files /page.html =404; }"
nginx_conf direct "$P_DIRECT" 1 "$PAGE"
nginx_conf nginx-proxy "$P_NGINX" auto "$PROXY" "$POOL"
nginx_conf nginx-limit "$P_LIMIT" auto "limit_req zone=perip burst=1000000 nodelay; $PROXY" \
  "$POOL limit_req_zone \$binary_remote_addr zone=perip:10m rate=1000000r/s;"
nginx_conf static-1k "$P_STATIC" auto "$PAGE"
# `listen ... ssl` needs the certificate lines in the same server block as the location.
nginx_conf nginx-proxy-https "$P_NGINX_TLS ssl" auto \
  "ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; ssl_protocols TLSv1.3; $PROXY" "$POOL"
# The upstream over TLS, and nginx verifying it as usher does (SNI, the name, the CA).
nginx_conf direct-tls "$P_DIRECT_TLS ssl" 1 \
  "ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; ssl_protocols TLSv1.3; $PAGE"
nginx_conf nginx-proxy-ssl "$P_NGINX_SSL" auto \
  "location / { proxy_pass https://uptls; proxy_http_version 1.1; proxy_set_header Connection \"\";
     proxy_ssl_verify on; proxy_ssl_trusted_certificate $WORK/cert.pem; proxy_ssl_name localhost;
     proxy_ssl_server_name on; proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on; }" \
  "upstream uptls { server 127.0.0.1:$P_DIRECT_TLS; keepalive 256; }"
start bare-proxy "$BARE" "127.0.0.1:$P_BARE" "127.0.0.1:$P_DIRECT"
start bare-percore "$BARE" "127.0.0.1:$P_PERCORE" "127.0.0.1:$P_DIRECT" --per-core 0

cat >"$WORK/usher.toml" <<TOML
[listen]
http = "127.0.0.1:$P_USHER"
https = "127.0.0.1:$P_USHER_TLS"
tls_cert = "$WORK/cert.pem"
tls_key = "$WORK/key.pem"
workers = $WORKERS

[admin]
listen = "127.0.0.1:$P_ADMIN"

[upstream]
addresses = ["127.0.0.1:$P_DIRECT"]

# As in nginx-limit: the per-client limit is checked on every request and never reached.
[limits]
requests_per_second = 1000000
burst = 1000000
join_burst = 1000000
# The status row polls with one ticket from one address: the poll budget must not bind either.
polls_per_second = 1000000
poll_burst = 1000000

# The rate-limited path: after the first request each minute, every answer is a 429.
[[limits.route]]
path = "/limited/"
per_minute = 1

# The admitted path: a room that never fills; wrk presents one valid pass.
[[room]]
name = "admitted"
paths = ["/room/"]
max_active = 1000000
admit_per_minute = 1000000

# The queue status path: everyone queues and nobody is admitted; wrk polls with one ticket.
[[room]]
name = "waiting"
paths = ["/queue/"]
mode = "paused"
waiter_ttl = "1h"
TOML
# The second usher: the same limits, no rooms, its upstream hop in TLS.
sed -n '/^\[limits\]/,/^poll_burst/p' "$WORK/usher.toml" >"$WORK/limits.toml"
cat >"$WORK/usher-upstream-tls.toml" <<TOML
[listen]
http = "127.0.0.1:$P_USHER_UP_TLS"
workers = $WORKERS

[admin]
listen = "127.0.0.1:$P_ADMIN_UP_TLS"

[upstream]
addresses = ["127.0.0.1:$P_DIRECT_TLS"]
tls = true
server_name = "localhost"
ca_file = "$WORK/cert.pem"
protocol = "http1"

$(cat "$WORK/limits.toml")
TOML
for conf in usher usher-upstream-tls; do
  "$USHER" check-config "$WORK/$conf.toml" >"$WORK/$conf-check.log" 2>&1 ||
    { cat "$WORK/$conf-check.log" >&2; exit 1; }
done
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
USHER_SECRET=$SECRET USHER_LOG=${USHER_LOG:-warn} start usher "$USHER" --config "$WORK/usher.toml"
USHER_SECRET=$SECRET USHER_LOG=${USHER_LOG:-warn} \
  start usher-upstream-tls "$USHER" --config "$WORK/usher-upstream-tls.toml"

# --- rows --------------------------------------------------------------------------------
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$P_USHER/room/" && break; sleep 0.1; done
cookie_from() { # URL KIND: the name=value usher sets for a newcomer (names are KIND_<room>)
  curl -s -D - -o /dev/null -H 'Accept: application/json' "$1" | tr -d '\r' |
    sed -n "s/^[Ss]et-[Cc]ookie: \($2_[^=]*=[^;]*\).*/\1/p" | head -n 1
}
PASS=$(cookie_from "http://127.0.0.1:$P_USHER/room/" usher_pass)
TICKET=$(cookie_from "http://127.0.0.1:$P_USHER/queue/" usher_ticket)
[ -n "$PASS" ] && [ -n "$TICKET" ] || { echo "compare.sh: usher gave no pass or ticket" >&2; exit 1; }
TARGETS=("direct=http://127.0.0.1:$P_DIRECT/" "nginx-proxy=http://127.0.0.1:$P_NGINX/"
  "nginx-limit=http://127.0.0.1:$P_LIMIT/" "bare-proxy=http://127.0.0.1:$P_BARE/"
  "bare-percore=http://127.0.0.1:$P_PERCORE/" "static-1k=http://127.0.0.1:$P_STATIC/"
  "usher=http://127.0.0.1:$P_USHER/"
  "nginx-proxy-https=https://127.0.0.1:$P_NGINX_TLS/" "usher-https=https://127.0.0.1:$P_USHER_TLS/"
  "usher-admitted=http://127.0.0.1:$P_USHER/room/::Cookie: $PASS"
  "usher-status=http://127.0.0.1:$P_USHER/.usher/status::Cookie: $TICKET"
  "usher-limited=http://127.0.0.1:$P_USHER/limited/"
  "direct-tls=https://127.0.0.1:$P_DIRECT_TLS/" "nginx-proxy-ssl=http://127.0.0.1:$P_NGINX_SSL/"
  "usher-upstream-tls=http://127.0.0.1:$P_USHER_UP_TLS/")
for t in "$@"; do
  t=${t//\{usher\}/http://127.0.0.1:$P_USHER}
  t=${t//\{admin\}/http://127.0.0.1:$P_ADMIN}
  [[ $t == ?*=http*://* ]] || { echo "compare.sh: not NAME=URL[::HEADER]: $t" >&2; exit 2; }
  TARGETS+=("$t")
done
row_name() { echo "${1%%=*}"; }
row_url() { local rest=${1#*=}; echo "${rest%%::*}"; }
row_header() { local rest=${1#*=}; if [[ $rest == *::* ]]; then echo "${rest#*::}"; fi; }

died() { # prints the name of a started process that exited, if any
  local i
  for i in "${!PIDS[@]}"; do kill -0 "${PIDS[$i]}" 2>/dev/null || { echo "${NAMES[$i]}"; return; }; done
}
wait_ready() { # name url header: until it answers 2xx, for 20 s
  local code args=(-s -k -o /dev/null -w '%{http_code}' --max-time 1)
  [ -n "$3" ] && args+=(-H "$3")
  for _ in $(seq 200); do
    code=$(curl "${args[@]}" "$2" || true)
    [[ $code == 2?? || ($1 == *limited && $code == 429) ]] && return 0
    local dead; dead=$(died)
    if [ -n "$dead" ]; then
      echo "compare.sh: $dead exited:" >&2
      tail -n 20 "$WORK/$dead.log" "$WORK/$dead.err" 2>/dev/null >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "compare.sh: $1 ($2) does not answer 2xx (last status: $code)" >&2
  exit 1
}
if [ -n "$EXTRA" ]; then
  setsid bash -c "$EXTRA" >"$WORK/extra.log" 2>&1 &
  GROUP=$!
fi
for t in "${TARGETS[@]}"; do wait_ready "$(row_name "$t")" "$(row_url "$t")" "$(row_header "$t")"; done

# --- measure -------------------------------------------------------------------------------
# CPU time is read from /proc in clock ticks. Per row: the CPU its server spent per request
# (with nginx, master and workers), a figure that noise moves far less than req/s. Per
# measurement: how much of the machine something other than this script (another build, a
# noisy neighbour, the hypervisor's steal) took meanwhile, to tell a clean run from a
# disturbed one.
HZ=$(getconf CLK_TCK)
declare -A PORT_PID=([$P_DIRECT]=${PID_OF[direct]} [$P_NGINX]=${PID_OF[nginx-proxy]}
  [$P_NGINX_TLS]=${PID_OF[nginx-proxy-https]} [$P_USHER_TLS]=${PID_OF[usher]}
  [$P_LIMIT]=${PID_OF[nginx-limit]} [$P_BARE]=${PID_OF[bare-proxy]} [$P_STATIC]=${PID_OF[static-1k]}
  [$P_PERCORE]=${PID_OF[bare-percore]} [$P_USHER]=${PID_OF[usher]}
  [$P_DIRECT_TLS]=${PID_OF[direct-tls]} [$P_NGINX_SSL]=${PID_OF[nginx-proxy-ssl]}
  [$P_USHER_UP_TLS]=${PID_OF[usher-upstream-tls]})
listener_pid() { # port -> the process listening on it (of several holders, the lowest pid)
  awk -v p="$(printf ':%04X' "$1")" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' \
    /proc/net/tcp /proc/net/tcp6 | while read -r inode; do
    find /proc/[0-9]*/fd -maxdepth 1 -lname "socket:\[$inode\]" 2>/dev/null
  done | cut -d/ -f3 | sort -n | head -n1
}
row_pid() { # the server behind a row's URL: a process this script started, else whoever
  # listens on the port, else the -x command's process group ("g" and its id), else 0
  local port pid; port=$(row_url "$1" | sed -n 's|^[a-z]*://[^/:]*:\([0-9]*\).*|\1|p')
  if [ -n "${PORT_PID[$port]:-}" ]; then echo "${PORT_PID[$port]}"; return; fi
  pid=$( [ -n "$port" ] && listener_pid "$port")
  if [ -n "$pid" ]; then echo "$pid"; elif [ -n "$GROUP" ]; then echo "g$GROUP"; else echo 0; fi
}
ticks() { # pid -> "ticks of pid and its children, ticks of everything this script started"
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$1" -v ours=" ${PIDS[*]} " -v g="${GROUP:-x}" '
    { pid = $1; sub(/^.*\) /, ""); t = $12 + $13 # utime + stime; $2 ppid, $3 process group
      if (pid == p || $2 == p || "g" $3 == p) mine += t
      if (index(ours, " " pid " ") || index(ours, " " $2 " ") || $3 == g) all += t }
    END { print mine + 0, all + 0 }'
}
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
child_ticks() { # CPU of this shell's finished children (here: wrk), from `times` in a file
  # (in a command substitution, `times` would see the substitution's children instead)
  times >"$WORK/times"
  awk -v hz="$HZ" 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); print int((u[1] * 60 + u[2] + s[1] * 60 + s[2]) * hz) }' "$WORK/times"
}
wrk_run() { # seconds url header pid -> "rps p50_ms p99_ms non2xx errors cpu_us_per_req other_%"
  local args=(-t"$THREADS" -c"$CONNS" -d"$1s" --latency) out b0 b1 m0 a0 m1 a1 w0 w1
  [ -n "$3" ] && args+=(-H "$3")
  child_ticks >"$WORK/w0"
  b0=$(busy)
  read -r m0 a0 <<<"$(ticks "$4")"
  out=$(wrk "${args[@]}" "$2")
  read -r m1 a1 <<<"$(ticks "$4")"
  b1=$(busy)
  child_ticks >"$WORK/w1"
  w0=$(<"$WORK/w0") w1=$(<"$WORK/w1")
  awk -v mine=$((m1 - m0)) -v pid="$4" -v other=$(((b1 - b0) - (a1 - a0) - (w1 - w0))) -v hz="$HZ" \
    -v cap=$(($1 * HZ * $(nproc))) '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    / requests in / { n = $1 } /Non-2xx/ { bad = $NF }
    /Socket errors/ { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
    END { cpu = (pid != "0" && n > 0) ? mine * 1e6 / hz / n : -1; o = other > 0 ? 100 * other / cap : 0
          printf "%d %.3f %.3f %d %d %.1f %.0f\n", rps, p50, p99, bad + 0, err + 0, cpu, o }' <<<"$out"
}

cores=$(nproc)
load=$(cut -d' ' -f1 /proc/loadavg)
echo "load average before: $load on $cores cores" >&2

echo "warming up ..." >&2
declare -A ROW_PID
for t in "${TARGETS[@]}"; do
  ROW_PID[$(row_name "$t")]=$(row_pid "$t")
  wrk_run 1 "$(row_url "$t")" "$(row_header "$t")" 0 >/dev/null
done

declare -A RES
n=${#TARGETS[@]}
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS ..." >&2
  for i in $(seq 0 $((n - 1))); do # the order rotates each round, so no row always goes first
    t=${TARGETS[$(((i + r - 1) % n))]}
    name=$(row_name "$t")
    RES[$name]+="$(wrk_run "$DUR" "$(row_url "$t")" "$(row_header "$t")" "${ROW_PID[$name]}");"
  done
  dead=$(died)
  [ -z "$dead" ] || { echo "compare.sh: $dead exited during the run" >&2; tail -n 20 "$WORK/$dead.log" >&2; exit 1; }
done

# --- report --------------------------------------------------------------------------------
declare -A RPS P50 P99 CPU
summary() { # name -> the median round by req/s, the spread of req/s over rounds in %, the
  # median CPU per request over rounds, and the most any round lost to other work
  tr ';' '\n' <<<"${RES[$1]}" | grep . | sort -n | awk '
    { a[NR] = $0; r[NR] = $1; c[NR] = $6; if ($7 > o) o = $7 }
    END { split(a[int((NR + 1) / 2)], f, " "); s = f[1] > 0 ? 100 * (r[NR] - r[1]) / f[1] : 0
          for (i = 1; i <= NR; i++) for (j = i + 1; j <= NR; j++) if (c[j] < c[i]) { x = c[i]; c[i] = c[j]; c[j] = x }
          print f[1], f[2], f[3], f[4], f[5], s, c[int((NR + 1) / 2)], o + 0 }'
}
printf "%-19s %9s %8s %8s %7s %7s %7s %8s %7s %8s\n" \
  row req/s p50_ms p99_ms non2xx errors spread% cpu_us/req other% ×direct
for t in "${TARGETS[@]}"; do
  name=$(row_name "$t")
  read -r rps p50 p99 bad err spread cpu other <<<"$(summary "$name")"
  RPS[$name]=$rps P50[$name]=$p50 P99[$name]=$p99 CPU[$name]=$cpu
  ratio=$(awk -v a="$rps" -v b="${RPS[direct]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
  cpu=$(awk -v c="$cpu" 'BEGIN { if (c < 0) print "-"; else printf "%.1f", c }')
  printf "%-19s %9d %8.3f %8.3f %7d %7d %7.1f %10s %7.0f %8s\n" \
    "$name" "$rps" "$p50" "$p99" "$bad" "$err" "$spread" "$cpu" "$other" "$ratio"
done
echo
pair() { # row peer: the row's ratios to the peer's
  awk -v n="$1 / $2" -v a="${RPS[$1]}" -v b="${RPS[$2]}" -v c="${P50[$1]}" -v d="${P50[$2]}" \
    -v e="${P99[$1]}" -v f="${P99[$2]}" -v g="${CPU[$1]}" -v h="${CPU[$2]}" \
    'function q(x, y) { return (x >= 0 && y > 0) ? sprintf("%.2f×", x / y) : "-" }
     BEGIN { printf "%-36s %8s %8s %8s %10s\n", n, q(a, b), q(c, d), q(e, f), q(g, h) }'
}
printf "%-36s %8s %8s %8s %10s\n" "usher / peer" req/s p50 p99 cpu/req
for peer in nginx-proxy nginx-limit bare-proxy bare-percore direct; do pair usher "$peer"; done
pair usher-https nginx-proxy-https
pair usher-upstream-tls nginx-proxy-ssl
awk -v a="${RPS[usher]}" -v b="${RPS[nginx-proxy]}" -v c="${P99[usher]}" -v d="${P99[nginx-proxy]}" 'BEGIN {
  printf "\ntarget (usher req/s >= nginx-proxy, p99 no worse): %s\n", (a >= b && c <= d) ? "met" : "missed" }'
echo "($ROUNDS rounds × ${DUR}s, $CONNS connections, wrk -t$THREADS, usher workers=$WORKERS (0 = per core)," \
  "$cores cores, load average before $load. Median round by req/s; cpu_us/req: the row's server" \
  "process(es), median over rounds; other%: the machine's CPU taken by anything else, worst round;" \
  "latency and cpu ratios: lower is better)"
