#!/usr/bin/env bash
# One million waiters (issue 16), run end to end on this machine. Run by hand, not in CI.
#
#   loadtest/million.sh [-n WAITERS] [-o SECONDS] [-h HOLD] [-a ADMIT_PER_MINUTE]
#                       [-r REDIS_WAITERS] [-g GATEWAY] [-s STAGES] [-p BASE_PORT] [-d OUT_DIR]
#
#   -n  waiters on one node (default 1010000: a million still in line at the end)
#   -o  seconds they arrive within (default 200)
#   -h  seconds the full line is held, polling, after the last arrival (default 300)
#   -a  the room's admit_per_minute (default 1000: the million's wait is hours, so nearly
#       everyone polls at usher's longest interval, as on the real morning)
#   -r  waiters on three nodes and one Redis (default 210000)
#   -g  the load balancer's keep-alive connections to each node (default 512)
#   -s  stages, comma-separated (default "one,opening,redis"):
#         one      one memory node, a spike of -n waiters held -h seconds
#         opening  one memory node, -n waiters pre-queued before opens_at, drawn at opening
#         redis    three nodes and one Redis, -r waiters held -h seconds
#   -p  first loopback port (default 18780; 10 ports from it are used, and must be free)
#   -d  where the results go (default: a new /tmp/usher-million.* directory)
#
# Waiters reach usher as they would on the day: through a load balancer (usher-loadtest's
# --gateway, -g keep-alive connections per node) that names each waiter's own address in
# X-Forwarded-For; usher trusts 127.0.0.1 as that proxy. Each waiter has its own address
# (127.1.0.1 onwards), so its own client key, limits and ticket; it polls at the interval
# usher suggests (×0.8–1.2), as usher's page does. What connections cost is measured on its
# own (loadtest/waitroom.sh); this run is about the line.
#
# Every 10 s usher is sampled: VmRSS, CPU (utime+stime), usher_waiting, status polls answered
# (usher_requests_total{route="usher"}) and the admitter's ticks (usher_tick_seconds). Per
# stage it prints: RSS per waiter (RSS at the end of the hold less RSS before the first
# arrival, over the waiters in line), polls/s, usher's CPU per poll and the mean and largest
# tick over the hold, and usher-loadtest's report (errors, latency, Kendall tau, overtakes).
# The opening stage prints the opening draw's tick (from usher's log) and the status
# latency around it. The redis stage adds Redis memory per waiter (used_memory after the
# arrivals less before, over the waiters) and Redis commands/s over the hold.
set -euo pipefail

N=1010000 OVER=200 HOLD=300 ADMIT=1000 RN=210000 GW=512 STAGES=one,opening,redis BASE=18780 OUT=""
while getopts "n:o:h:a:r:g:s:p:d:" o; do
  case $o in
    n) N=$OPTARG ;; o) OVER=$OPTARG ;; h) HOLD=$OPTARG ;; a) ADMIT=$OPTARG ;; r) RN=$OPTARG ;;
    g) GW=$OPTARG ;; s) STAGES=$OPTARG ;; p) BASE=$OPTARG ;; d) OUT=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
. "$(dirname "$0")/lib.sh"
lib_numbers "$N" "$OVER" "$HOLD" "$ADMIT" "$RN" "$GW" "$BASE"
lib_need curl
[[ $STAGES =~ redis ]] && lib_need redis-server redis-cli
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/usher-million.XXXXXX)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
P_UP=$BASE P_REDIS=$((BASE + 9))

lib_build usher-loadtest
COMMIT=$(cd "$LIB_ROOT" && git rev-parse --short HEAD)$(cd "$LIB_ROOT" && git diff --quiet HEAD -- src loadtest/src || echo "+changes")
lib_raise_open_files
lib_on_exit_stop_started
export USHER_SECRET=${USHER_SECRET:-$(lib_secret)}
lib_start_upstream "$P_UP" "$OUT/upstream.log"
echo "== usher $COMMIT; $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
  "load $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT"

# A node's configuration: one room on "/" whose outflow alone limits admission.
# node_config FILE HTTP_PORT ADMIN_PORT STORE [OPENS_AT]
node_config() {
  cat >"$1" <<TOML
[listen]
http = "127.0.0.1:$2"

[admin]
listen = "127.0.0.1:$3"

[upstream]
addresses = ["127.0.0.1:$P_UP"]

[client]
# usher-loadtest's gateway: the load balancer in front of the nodes.
trusted_proxies = ["127.0.0.1/32"]
real_ip_from = "x-forwarded-for"

[limits]
max_tracked_clients = 4000000

$([ "$4" = redis ] && printf '[store]\nkind = "redis"\nurl = "redis://127.0.0.1:%s"\n' "$P_REDIS")

[[room]]
name = "million"
paths = ["/"]
max_active = 100000000
admit_per_minute = $ADMIT
$([ -n "${5:-}" ] && echo "opens_at = \"$(date -u -d "@$5" +%Y-%m-%dT%H:%M:%SZ)\"")
TOML
  "$USHER" check-config "$1" >/dev/null
}

# Starts node I (0-based) of STAGE on STORE; NODE_PID[I], NODE_ADMIN[I] and NODE_HTTP[I] set.
NODE_PID=() NODE_ADMIN=() NODE_HTTP=()
start_node() { # stage i store [opens_at]
  local http=$((BASE + 1 + 2 * $2)) admin=$((BASE + 2 + 2 * $2))
  node_config "$OUT/$1-node$2.toml" "$http" "$admin" "$3" "${4:-}"
  USHER_LOG=info lib_start_usher "$OUT/$1-node$2.toml" "$OUT/$1-node$2.log" "$admin"
  NODE_PID[$2]=$USHER_PID NODE_ADMIN[$2]=$admin NODE_HTTP[$2]=$http
}

stop_nodes() {
  local p
  for p in "${NODE_PID[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${NODE_PID[@]}"; do wait "$p" 2>/dev/null || true; done
  NODE_PID=() NODE_ADMIN=() NODE_HTTP=()
}

# One metric's value (summed over its series) from an admin port.
metric() { # admin-port pattern
  curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v p="$2" 'index($0, p) == 1 { s += $NF } END { print s + 0 }'
}

# A sample line of the first node: t, rss_kib, cpu_ticks, waiting, polls, tick_sum, tick_count.
sample() { # t
  local pid=${NODE_PID[0]} a=${NODE_ADMIN[0]} rss cpu
  rss=$(sed -n 's/^VmRSS:\s*\([0-9]*\) kB/\1/p' "/proc/$pid/status")
  cpu=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  echo "$1,$rss,$cpu,$(metric "$a" 'usher_waiting{'),$(metric "$a" 'usher_requests_total{route="usher",code="200"}'),$(metric "$a" 'usher_tick_seconds_sum'),$(metric "$a" 'usher_tick_seconds_count')"
}

# Runs usher-loadtest against the stage's nodes while sampling node 0 every 10 s into
# STAGE.csv. run_visitors STAGE COUNT TIME_LIMIT [ARGS...]
run_visitors() {
  local stage=$1 count=$2 limit=$3 targets=() i loadgen start now next
  shift 3
  for i in "${!NODE_HTTP[@]}"; do targets+=(--target "127.0.0.1:${NODE_HTTP[$i]}"); done
  echo "t_s,rss_kib,cpu_ticks,waiting,polls,tick_sum,tick_count" >"$OUT/$stage.csv"
  sample 0 >>"$OUT/$stage.csv"
  "$LOADGEN" visitors "${targets[@]}" --gateway $((GW * ${#NODE_HTTP[@]})) --visitors "$count" \
    --profile spike --over "$OVER" --time-limit "$limit" --mailbox-requests 1 --think 0.2 \
    --json "$OUT/$stage.json" "$@" >"$OUT/$stage.txt" 2>&1 &
  loadgen=$! PIDS+=("$loadgen")
  start=$(date +%s) next=$((start + 10))
  while kill -0 "$loadgen" 2>/dev/null; do
    now=$(date +%s)
    if [ "$now" -ge "$next" ]; then
      sample $((now - start)) >>"$OUT/$stage.csv"
      awk -F, 'END { printf "  t=%4ss rss=%s KiB waiting=%s polls=%s\n", $1, $2, $4, $5 }' "$OUT/$stage.csv"
      next=$((next + 10))
    fi
    sleep 1
  done
  wait "$loadgen" || echo "!! usher-loadtest exited with $? (see $OUT/$stage.txt)"
}

# The figures of a held stage from its CSV: the hold is from the last arrival (+10 s) to the
# end of the samples.
held_figures() { # stage
  awk -F, -v from=$((OVER + 10)) -v hz="$(getconf CLK_TCK)" '
    NR == 2 { rss0 = $2 }
    NR > 1 && $1 >= from && !a { a = 1; t0 = $1; c0 = $3; p0 = $5; s0 = $6; n0 = $7 }
    NR > 1 { t = $1; rss = $2; c = $3; w = $4; p = $5; s = $6; n = $7 }
    END {
      if (!a || t == t0) { print "  (no sample in the hold)"; exit }
      printf "  waiting at the end %d; node 0 RSS %.1f MiB before the first arrival, %.1f MiB at the end: %.1f B per waiter\n", w, rss0 / 1024, rss / 1024, (rss - rss0) * 1024 / w
      printf "  over the hold (%d s): %.0f status polls/s, usher CPU %.1f us per poll (%.2f cores), ticks %.3f ms mean\n", t - t0, (p - p0) / (t - t0), (c - c0) / hz * 1e6 / (p - p0), (c - c0) / hz / (t - t0), (n > n0) ? (s - s0) * 1000 / (n - n0) : 0
    }' "$OUT/$1.csv"
  grep -E "^(visitors|errors|route|join|status|mailbox|fairness|outflow)" "$OUT/$1.txt" | sed 's/^/  /'
}

# Redis commands so far: all (those the scripts run included), and script calls (EVALSHA/EVAL:
# round trips of the nodes' polls, joins and ticks).
redis_calls() {
  redis-cli -p "$P_REDIS" INFO commandstats | awk -F'[:,=]' '/^cmdstat_/ { s += $3 } /^cmdstat_eval/ { e += $3 } END { print s + 0, e + 0 }'
}

# The largest tick bucket a stage's node 0 saw (upper bound of the slowest tick).
slowest_tick() {
  curl -sf "http://127.0.0.1:${NODE_ADMIN[0]}/metrics" | awk '/^usher_tick_seconds_bucket/ {
    match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); n = $NF + 0
    if (n > last) top = le; last = n } END { print "  slowest tick at most " top " s (" last " ticks)" }'
}

for stage in ${STAGES//,/ }; do
  case $stage in
    one)
      echo "== one: $N waiters on one memory node within ${OVER}s, held ${HOLD}s, admit_per_minute $ADMIT"
      start_node one 0 memory
      run_visitors one "$N" $((OVER + HOLD + 10)) --admin "127.0.0.1:${NODE_ADMIN[0]}"
      held_figures one | tee "$OUT/one-figures.txt"
      slowest_tick | tee -a "$OUT/one-figures.txt"
      stop_nodes
      ;;
    opening)
      opens_at=$(($(date +%s) + OVER + 30))
      echo "== opening: $N waiters pre-queued within ${OVER}s, opens_at $opens_at, then 60 s of the line"
      start_node opening 0 memory "$opens_at"
      run_visitors opening "$N" $((OVER + 90)) --admin "127.0.0.1:${NODE_ADMIN[0]}" --profile opening --opens-at "$opens_at"
      { sed 's/\x1b\[[0-9;]*m//g' "$OUT/opening-node0.log" | grep -o 'event opened.*' | sed 's/^/  /' || echo "  (no opening logged)"
        grep -E "^(visitors|errors|route|join|status|fairness)" "$OUT/opening.txt" | sed 's/^/  /'
        slowest_tick; } | tee "$OUT/opening-figures.txt"
      stop_nodes
      ;;
    redis)
      echo "== redis: $RN waiters on three nodes and one Redis within ${OVER}s, held ${HOLD}s"
      redis-server --port "$P_REDIS" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --pidfile "$OUT/redis.pid" --logfile "$OUT/redis.log" --dir "$OUT"
      sleep 0.5
      PIDS+=("$(cat "$OUT/redis.pid")")
      for i in 0 1 2; do start_node redis $i redis; done
      mem0=$(redis-cli -p "$P_REDIS" INFO memory | awk -F: '/^used_memory:/ { print $2 + 0 }')
      # The nodes' admitted counts are each their own: the outflow is checked against the
      # configured one.
      (sleep $((OVER + 10)); redis_calls >"$OUT/redis-cmds0"
        date +%s.%N >"$OUT/redis-t0"; redis-cli -p "$P_REDIS" INFO memory | awk -F: '/^used_memory:/ { print $2 + 0 }' >"$OUT/redis-mem1") &
      run_visitors redis "$RN" $((OVER + HOLD + 10)) --outflow "$ADMIT"
      read -r cmds1 evals1 < <(redis_calls)
      t1=$(date +%s.%N)
      waiting=$(metric "${NODE_ADMIN[0]}" 'usher_waiting{')
      { held_figures redis
        read -r cmds0 evals0 <"$OUT/redis-cmds0"
        awk -v m0="$mem0" -v m1="$(cat "$OUT/redis-mem1")" -v w="$RN" -v c0="$cmds0" -v c1="$cmds1" -v e0="$evals0" \
          -v e1="$evals1" -v t0="$(cat "$OUT/redis-t0")" -v t1="$t1" -v waiting="$waiting" 'BEGIN {
          printf "  Redis: used_memory %.1f MiB before, %.1f MiB after the arrivals: %.1f B per waiter\n", m0 / 1048576, m1 / 1048576, (m1 - m0) / w
          printf "  Redis over the hold: %.0f script calls/s (the nodes'"'"' round trips), %.0f commands/s counting those the scripts run; the line as node 0 saw it at the end: %d\n",
            (e1 - e0) / (t1 - t0), (c1 - c0) / (t1 - t0), waiting }'; } | tee "$OUT/redis-figures.txt"
      stop_nodes
      redis-cli -p "$P_REDIS" shutdown nosave >/dev/null 2>&1 || true
      ;;
    *) lib_die "unknown stage $stage (one, opening, redis)" ;;
  esac
done
