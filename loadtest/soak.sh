#!/usr/bin/env bash
# A soak (issue 15): usher (release) in front of usher-loadtest's 1 KiB upstream for a long
# run at a fixed share of the capacity measured first, with churn: visitors join, wait in
# line, are admitted, use the mailbox and leave, and some step away and come back. usher's
# resident memory (VmRSS) and open descriptors (/proc/PID/fd) are sampled every 10 s into a
# CSV; at the end it prints min/max/first/last of each and whether each stayed flat within
# ±5 % after the warm-up. Run by hand, not in CI.
#
#   loadtest/soak.sh [-m MINUTES] [-c CAPACITY] [-l PERCENT] [-s SHARE] [-w WARMUP]
#                    [-p BASE_PORT] [-d OUT_DIR]
#
#   -m  minutes of load (default 30)
#   -c  capacity in visitors per second (default: measured first, see below)
#   -l  the share of the capacity offered, in % (default 80)
#   -s  share of the queued visitors who step away (default 0.1): 1 s after joining, for
#       40 s (longer than waiter_ttl and claim_window: usher takes them for away, their turn
#       expires, and they get their place back on return)
#   -w  seconds of warm-up left out of the flatness verdict (default 120)
#   -p  first loopback port (default 18580; 3 ports from it are used, and must be free)
#   -d  where the results go (default: a new /tmp/usher-soak.* directory): samples.csv,
#       capacity.txt, one summary per minute of visitors (chunks/), usher.toml, the logs
#
# Capacity: steps of 10 s of steady arrivals (200 visitors a second, then ×1.5 a step), each
# visitor doing what the soak's do (join the line, poll, be admitted, three mailbox requests)
# without pauses (no think time, polls at a tenth of usher's suggested interval), through a
# room whose outflow never binds. The capacity is the last rate at which every visitor was
# admitted with no error and every route's p99 stayed under 1 s: what this machine (load
# generator, usher and upstream together) serves cleanly. The steps are coarse (×1.5), so
# the soak errs on the light side.
#
# The soak: a fresh usher, one room on "/" in `queue_all` (everyone waits in line at least
# one poll), `admit_per_minute` = 60 × capacity (the line never grows: visitors arrive at
# PERCENT of it), `session_idle` 1 min, `max_active` never binding. Visitors arrive steadily,
# each from its own loopback address; every minute a new `usher-loadtest visitors` process
# takes the next minute's arrivals (each bounded by --time-limit), so no process holds the
# whole run. Stops everything it started on exit.
set -euo pipefail

MINUTES=30 CAPACITY="" PERCENT=80 SHARE=0.1 WARMUP=120 BASE=18580 OUT=""
while getopts "m:c:l:s:w:p:d:h" o; do
  case $o in
    m) MINUTES=$OPTARG ;; c) CAPACITY=$OPTARG ;; l) PERCENT=$OPTARG ;; s) SHARE=$OPTARG ;;
    w) WARMUP=$OPTARG ;; p) BASE=$OPTARG ;; d) OUT=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
  esac
done
. "$(dirname "$0")/lib.sh"
lib_numbers "$MINUTES" "$PERCENT" "$WARMUP" "$BASE" ${CAPACITY:+"$CAPACITY"}
lib_need curl
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/usher-soak.XXXXXX)
mkdir -p "$OUT/chunks"
OUT=$(cd "$OUT" && pwd)
P_UP=$BASE P_USHER=$((BASE + 1)) P_ADMIN=$((BASE + 2))
SAMPLE_EVERY=10 CHUNK=60 AWAY_AFTER=1 AWAY_FOR=40
# A chunk's visitors arrive within CHUNK seconds; the last of them may step away, come back
# and use the mailbox after that: every chunk ends by this limit.
CHUNK_LIMIT=$((CHUNK + AWAY_FOR + 60))

lib_build usher-loadtest
# The commit of the binary just built (src/ edited after this does not change the run).
COMMIT=$(cd "$LIB_ROOT" && git rev-parse --short HEAD)$(cd "$LIB_ROOT" && git diff --quiet HEAD -- src || echo "+changes")
lib_raise_open_files
lib_on_exit_stop_started

# usher's configuration: one room on "/" in queue_all, with the outflow given.
write_config() { # file admit_per_minute
  cat >"$1" <<TOML
[listen]
http = "127.0.0.1:$P_USHER"
max_connections = 1000000

[admin]
listen = "127.0.0.1:$P_ADMIN"

[upstream]
addresses = ["127.0.0.1:$P_UP"]

[[room]]
name = "soak"
paths = ["/"]
mode = "queue_all"
max_active = 100000000
admit_per_minute = $2
session_idle = "1m"
TOML
  "$USHER" check-config "$1" >/dev/null
}

# The loopback address of visitor INDEX counted from 127.1.0.1, skipping the .0 and .255
# host bytes, as usher-loadtest numbers its sources: each chunk starts where the last ended,
# so no address comes back during the run (no per-client limit is ever near).
nth_addr() {
  local net=$(($1 / 254))
  echo "127.$((1 + net / 256)).$((net % 256)).$(($1 % 254 + 1))"
}

lib_start_upstream "$P_UP" "$OUT/upstream.log"

# One step of the capacity probe: RATE visitors a second for 10 s, without pauses; prints
# "ok" when every visitor was admitted with no error and every route's p99 stayed under 1 s.
probe_step() { # rate step
  "$LOADGEN" visitors --target "127.0.0.1:$P_USHER" --path /inbox --visitors $(($1 * 10)) --profile steady \
    --rate "$1" --think 0 --poll-scale 0.1 --time-limit 40 --source-from "127.$((200 + $2)).0.1" \
    >"$OUT/capacity-$1.txt" 2>&1 || true
  awk '/^visitors/ { for (i = 1; i < NF; i++) if ($(i + 1) == "not" && $(i + 2) == "admitted") missed = $i }
    /^errors/ { errors = $2 } $1 ~ /^(join|status|mailbox)$/ && $6 + 0 > 1000 { slow = 1 }
    END { print (missed == 0 && errors == 0 && !slow && NR > 3) ? "ok" : "over" }' "$OUT/capacity-$1.txt"
}

if [ -z "$CAPACITY" ]; then
  write_config "$OUT/probe.toml" 6000000
  lib_start_usher "$OUT/probe.toml" "$OUT/usher-probe.log" "$P_ADMIN"
  echo "== capacity: 10 s of steady arrivals, ×1.5 a step, until an error, a visitor not admitted or a p99 over 1 s" \
    "($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
  step=0 rate=200 CAPACITY=0
  while [ $step -lt 12 ]; do
    verdict=$(probe_step $rate $step)
    echo "$rate visitors/s: $verdict" | tee -a "$OUT/capacity.txt"
    [ "$verdict" = ok ] || break
    CAPACITY=$rate step=$((step + 1)) rate=$((rate * 3 / 2))
  done
  lib_stop_usher
  [ "$CAPACITY" -gt 0 ] || lib_die "not even $rate visitors/s were served cleanly (see $OUT/capacity-$rate.txt)"
  echo "== capacity: $CAPACITY visitors/s (the last clean step)" | tee -a "$OUT/capacity.txt"
fi
RATE=$((CAPACITY * PERCENT / 100))
[ "$RATE" -gt 0 ] || lib_die "the offered rate is 0 visitors/s (capacity $CAPACITY, $PERCENT %)"
write_config "$OUT/usher.toml" $((CAPACITY * 60))
lib_start_usher "$OUT/usher.toml" "$OUT/usher.log" "$P_ADMIN"

# One sample of usher: seconds since the start, VmRSS in KiB, open descriptors, and the room's
# line and live sessions (for telling a leak from a line that grew).
sample() { # t
  local rss fds metrics waiting active
  rss=$(sed -n 's/^VmRSS:\s*\([0-9]*\) kB/\1/p' "/proc/$USHER_PID/status" 2>/dev/null) || return 1
  fds=$(find "/proc/$USHER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  metrics=$(curl -sf --max-time 5 "http://127.0.0.1:$P_ADMIN/metrics" || true)
  waiting=$(awk '/^usher_waiting\{room="soak"\}/ { print $2 }' <<<"$metrics")
  active=$(awk '/^usher_active_sessions\{room="soak"\}/ { print $2 }' <<<"$metrics")
  echo "$1,${rss:-},$fds,${waiting:-},${active:-}"
}

echo "== soak: $MINUTES min at $RATE visitors/s ($PERCENT % of $CAPACITY/s), admit_per_minute $((CAPACITY * 60))," \
  "$SHARE of the waiters step away ${AWAY_AFTER}s after joining for ${AWAY_FOR}s; usher $COMMIT," \
  "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), open files limit $(ulimit -n)"
echo "t_s,rss_kib,fds,waiting,active" >"$OUT/samples.csv"
START=$(date +%s)
END=$((START + MINUTES * 60))
NEXT_SAMPLE=$START NEXT_CHUNK=$START CHUNKS=() index=0 n=0
while :; do
  now=$(date +%s)
  [ "$now" -lt "$END" ] || break
  kill -0 "$USHER_PID" 2>/dev/null || lib_die "usher exited during the soak (see $OUT/usher.log)"
  if [ "$now" -ge "$NEXT_CHUNK" ]; then
    span=$((END - now < CHUNK ? END - now : CHUNK))
    count=$((RATE * span))
    "$LOADGEN" visitors --target "127.0.0.1:$P_USHER" --path /inbox --visitors "$count" --profile steady \
      --rate "$RATE" --time-limit "$CHUNK_LIMIT" --source-from "$(nth_addr "$index")" --seed "$n" \
      --away-share "$SHARE" --away-after "$AWAY_AFTER" --away-for "$AWAY_FOR" --threads 1 \
      >"$OUT/chunks/$(printf %03d "$n").txt" 2>&1 &
    CHUNKS+=($!) PIDS+=($!)
    index=$((index + count)) n=$((n + 1)) NEXT_CHUNK=$((NEXT_CHUNK + CHUNK))
  fi
  if [ "$now" -ge "$NEXT_SAMPLE" ]; then
    sample $((now - START)) | tee -a "$OUT/samples.csv" | awk -F, '{ printf "t=%5ss rss=%s KiB fds=%s waiting=%s active=%s\n", $1, $2, $3, $4, $5 }'
    NEXT_SAMPLE=$((NEXT_SAMPLE + SAMPLE_EVERY))
  fi
  sleep 1
done
echo "== load ended; waiting for the last visitors (at most ${CHUNK_LIMIT}s)"
for p in "${CHUNKS[@]}"; do wait "$p" || true; done

# Every chunk's errors, summed (each summary has a line "errors N (kind n, ...)").
awk '/^visitors/ { for (i = 1; i < NF; i++) { if ($(i + 1) == "arrived,") arr += $i; if ($(i + 1) == "admitted") adm += $i } }
  /^errors/ { err += $2 } /^away/ { away += $2; lost += $NF }
  END { printf "visitors: %d arrived, %d admitted, %d errors; %d stepped away, places lost %d\n", arr, adm, err, away, lost }' \
  "$OUT"/chunks/*.txt | tee "$OUT/visitors.txt"
# A run over the machine's open-files limit measures the limit, not usher: say so.
refused=$(grep -c "Too many open files" "$OUT/usher.log" || true)
[ "$refused" = 0 ] || echo "!! usher refused $refused connections at the open-files limit ($(ulimit -n)): lower the load (-c/-l)"

# Per series: first, last, min, max over the run; after the warm-up, the median and how far
# the extremes stray from it, and the verdict (flat: every sample within ±5 % of the median).
summarise() { # column name
  local all after
  all=$(tail -n +2 "$OUT/samples.csv" | awk -F, -v c="$1" '$c != "" { print $1, $c }')
  after=$(awk -v w="$WARMUP" '$1 >= w { print $2 }' <<<"$all" | sort -n)
  awk -v name="$2" 'NR == 1 { first = $2; min = $2; max = $2 }
    { last = $2; if ($2 < min) min = $2; if ($2 > max) max = $2 }
    END { printf "%-8s first %d, last %d, min %d, max %d; ", name, first, last, min, max }' <<<"$all"
  awk 'NF { v[++m] = $1 }
    END { if (m == 0) { print "no sample after the warm-up"; exit }
      med = (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
      lo = 100 * (v[1] - med) / med; hi = 100 * (v[m] - med) / med
      printf "after warm-up (%d samples) median %.0f, %+.1f %% .. %+.1f %%: %s\n", m, med, lo, hi,
        (lo >= -5 && hi <= 5) ? "FLAT" : "NOT FLAT" }' <<<"$after"
}
echo "== usher (pid $USHER_PID) every $SAMPLE_EVERY s; flat = every sample after ${WARMUP}s within ±5 % of their median"
{ summarise 2 rss_kib; summarise 3 fds; } | tee "$OUT/verdict.txt"
# The table for BENCHMARKS.md: the first sample of every fifth minute, and the last.
echo "| minute | VmRSS (MiB) | open fds | waiting | active sessions |"
echo "| ---: | ---: | ---: | ---: | ---: |"
tail -n +2 "$OUT/samples.csv" | awk -F, 'function row() { printf "| %.1f | %.1f | %d | %s | %s |\n", t / 60, r / 1024, f, w, a }
  { t = $1; r = $2; f = $3; w = $4; a = $5; if (t >= due) { row(); due += 300; shown = t } }
  END { if (NR > 0 && shown != t) row() }'
echo "results in $OUT"
