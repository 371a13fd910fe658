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
#   -p  first loopback port (default 18080; 8 ports from it are used)
#   -x  a command started in the background once everything is up, stopped at the end
#
# It builds usher and bare-proxy (release) and starts on loopback, from BASE_PORT on:
#   +0 direct        nginx, 1 worker, serving a 1 KiB page: the upstream of every proxy row
#   +1 nginx-proxy   nginx reverse proxy to it with a keep-alive upstream pool
#   +2 nginx-limit   the same plus limit_req per client address (the limit is never reached)
#   +3 bare-proxy    loadtest's bare-proxy: a hyper proxy doing nothing else, one shared pool
#   +5 bare-percore  bare-proxy --per-core 0: the same in usher's shape (a runtime per core)
#   +4 static-1k     nginx serving a 1 KiB static file (peer of a small answer usher makes)
#   +6 usher         usher in front of +0, no rooms (admin on +7)
# then measures every row, plus each NAME=URL[::HEADER] given, in rounds (the order rotates
# each round) and prints the median round of each row and usher's ratios to its peers. In
# extra rows "{usher}" stands for usher's base URL and "{admin}" for its admin listener's:
#   loadtest/compare.sh "usher-status={usher}/.usher/status::Cookie: usher_ticket=..."
# A row counts only when its non-2xx and error columns are 0.
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

# --- tools -----------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
missing=()
have nginx || missing+=(nginx-light)
have wrk || missing+=(wrk)
have curl || missing+=(curl)
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
for p in $(seq "$BASE" "$P_ADMIN"); do
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

start() { # name command... ; output goes to $WORK/name.log
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!) NAMES+=("$name")
}

head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/page.html"
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
start bare-proxy "$BARE" "127.0.0.1:$P_BARE" "127.0.0.1:$P_DIRECT"
start bare-percore "$BARE" "127.0.0.1:$P_PERCORE" "127.0.0.1:$P_DIRECT" --per-core 0

cat >"$WORK/usher.toml" <<TOML
[listen]
http = "127.0.0.1:$P_USHER"
workers = $WORKERS

[admin]
listen = "127.0.0.1:$P_ADMIN"

[upstream]
addresses = ["127.0.0.1:$P_DIRECT"]
TOML
"$USHER" check-config "$WORK/usher.toml" >"$WORK/usher-check.log" 2>&1 ||
  { cat "$WORK/usher-check.log" >&2; exit 1; }
USHER_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') USHER_LOG=${USHER_LOG:-warn} \
  start usher "$USHER" --config "$WORK/usher.toml"

# --- rows --------------------------------------------------------------------------------
TARGETS=("direct=http://127.0.0.1:$P_DIRECT/" "nginx-proxy=http://127.0.0.1:$P_NGINX/"
  "nginx-limit=http://127.0.0.1:$P_LIMIT/" "bare-proxy=http://127.0.0.1:$P_BARE/"
  "bare-percore=http://127.0.0.1:$P_PERCORE/" "static-1k=http://127.0.0.1:$P_STATIC/"
  "usher=http://127.0.0.1:$P_USHER/")
for t in "$@"; do
  [[ $t == ?*=http*://* ]] || { echo "compare.sh: not NAME=URL[::HEADER]: $t" >&2; exit 2; }
  t=${t//\{usher\}/http://127.0.0.1:$P_USHER}
  TARGETS+=("${t//\{admin\}/http://127.0.0.1:$P_ADMIN}")
done
row_name() { echo "${1%%=*}"; }
row_url() { local rest=${1#*=}; echo "${rest%%::*}"; }
row_header() { local rest=${1#*=}; if [[ $rest == *::* ]]; then echo "${rest#*::}"; fi; }

died() { # prints the name of a started process that exited, if any
  local i
  for i in "${!PIDS[@]}"; do kill -0 "${PIDS[$i]}" 2>/dev/null || { echo "${NAMES[$i]}"; return; }; done
}
wait_ready() { # name url header: until it answers 2xx, for 20 s
  local code args=(-s -o /dev/null -w '%{http_code}' --max-time 1)
  [ -n "$3" ] && args+=(-H "$3")
  for _ in $(seq 200); do
    code=$(curl "${args[@]}" "$2" || true)
    [[ $code == 2?? ]] && return 0
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
for t in "${TARGETS[@]}"; do wait_ready "$(row_name "$t")" "$(row_url "$t")" "$(row_header "$t")"; done
if [ -n "$EXTRA" ]; then
  setsid bash -c "$EXTRA" >"$WORK/extra.log" 2>&1 &
  GROUP=$!
fi

# --- measure -------------------------------------------------------------------------------
wrk_run() { # seconds url header -> "rps p50_ms p99_ms non2xx errors"
  local args=(-t"$THREADS" -c"$CONNS" -d"$1s" --latency)
  [ -n "$3" ] && args+=(-H "$3")
  wrk "${args[@]}" "$2" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    /Non-2xx/ { bad = $NF }
    /Socket errors/ { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
    END { printf "%d %.3f %.3f %d %d\n", rps, p50, p99, bad + 0, err + 0 }'
}

cores=$(nproc)
load=$(cut -d' ' -f1 /proc/loadavg)
echo "load average before: $load on $cores cores" >&2
awk -v l="$load" -v c="$cores" 'BEGIN { exit !(l > c / 2) }' &&
  echo "warning: the machine is busy (load $load); figures will be noisier than usual" >&2

echo "warming up ..." >&2
for t in "${TARGETS[@]}"; do wrk_run 1 "$(row_url "$t")" "$(row_header "$t")" >/dev/null; done

declare -A RES
n=${#TARGETS[@]}
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS ..." >&2
  for i in $(seq 0 $((n - 1))); do # the order rotates each round, so no row always goes first
    t=${TARGETS[$(((i + r - 1) % n))]}
    RES[$(row_name "$t")]+="$(wrk_run "$DUR" "$(row_url "$t")" "$(row_header "$t")");"
  done
  dead=$(died)
  [ -z "$dead" ] || { echo "compare.sh: $dead exited during the run" >&2; tail -n 20 "$WORK/$dead.log" >&2; exit 1; }
done

# --- report --------------------------------------------------------------------------------
declare -A RPS P50 P99
median() { # name -> the median round by req/s, plus the spread of req/s over rounds in %
  tr ';' '\n' <<<"${RES[$1]}" | grep . | sort -n | awk '
    { a[NR] = $0; r[NR] = $1 }
    END { m = a[int((NR + 1) / 2)]; split(m, f, " "); s = f[1] > 0 ? 100 * (r[NR] - r[1]) / f[1] : 0; print m, s }'
}
printf "%-16s %9s %8s %8s %7s %7s %8s %8s\n" row req/s p50_ms p99_ms non2xx errors spread% ×direct
for t in "${TARGETS[@]}"; do
  name=$(row_name "$t")
  read -r rps p50 p99 bad err spread <<<"$(median "$name")"
  RPS[$name]=$rps P50[$name]=$p50 P99[$name]=$p99
  ratio=$(awk -v a="$rps" -v b="${RPS[direct]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
  printf "%-16s %9d %8.3f %8.3f %7d %7d %8.1f %8s\n" "$name" "$rps" "$p50" "$p99" "$bad" "$err" "$spread" "$ratio"
done
echo
printf "%-28s %8s %8s %8s\n" "usher / peer" req/s p50 p99
for peer in nginx-proxy nginx-limit bare-proxy bare-percore direct; do
  awk -v n="usher / $peer" -v a="${RPS[usher]}" -v b="${RPS[$peer]}" -v c="${P50[usher]}" -v d="${P50[$peer]}" \
    -v e="${P99[usher]}" -v f="${P99[$peer]}" \
    'function q(x, y) { return y > 0 ? sprintf("%.2f×", x / y) : "-" }
     BEGIN { printf "%-28s %8s %8s %8s\n", n, q(a, b), q(c, d), q(e, f) }'
done
awk -v a="${RPS[usher]}" -v b="${RPS[nginx-proxy]}" -v c="${P99[usher]}" -v d="${P99[nginx-proxy]}" 'BEGIN {
  ok = a >= b && c <= d
  printf "\ntarget (usher req/s >= nginx-proxy, p99 no worse): %s\n", ok ? "met" : "missed" }'
echo "($ROUNDS rounds × ${DUR}s, $CONNS connections, wrk -t$THREADS, usher workers=$WORKERS (0 = per core)," \
  "$cores cores, load before $load; median round by req/s; latency ratios: lower is better)"
