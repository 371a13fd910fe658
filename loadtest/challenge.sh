#!/usr/bin/env bash
# The proof of work's cost per ticket (issue 18): to an attacker with a native solver, and to
# a person's browser. Run by hand, not in CI; the table is in BENCHMARKS.md.
#
#   loadtest/challenge.sh [-p PORT]
#
#   -p  a free loopback port for usher (default 18990; the next one is its admin port)
#
# 1. `cargo bench --bench challenge`: ring's SHA-256 on one core and on every core, and the
#    expected CPU-seconds per ticket at each difficulty.
# 2. usher's own worker (/.usher/challenge.js) in headless Chromium at 1×, 4× (Lighthouse's
#    mid-range phone) and 6× CPU throttling (loadtest/challenge.mjs), against a usher
#    started here in front of the demo mailbox. Needs node and the browser tests' npm
#    packages (tests/run.sh installs both) and Debian's chromium.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PORT=18990
while getopts "p:h" opt; do
  case $opt in
    p) PORT=$OPTARG ;;
    *) lib_usage; exit 0 ;;
  esac
done
lib_numbers "$PORT"
lib_need node curl
[[ -d "$LIB_ROOT/tests/browser/node_modules/playwright-core" ]] ||
  lib_die "needs the browser tests' packages: (cd tests/browser && npm ci)"
lib_on_exit_stop_started

echo "== the attacker: a native solver"
(cd "$LIB_ROOT" && cargo bench --locked -q --bench challenge 2>/dev/null)

echo "== the person: usher's worker in headless Chromium"
(cd "$LIB_ROOT" && cargo build --release --locked -q -p usher --bin usher)
target=$(cd "$LIB_ROOT" && cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
log=$(mktemp /tmp/usher-challenge.XXXXXX.log)
"$target/release/usher" demo --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$((PORT + 1))" >"$log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$((PORT + 1))/readyz" && break
  sleep 0.1
done
node "$LIB_ROOT/loadtest/challenge.mjs" "http://127.0.0.1:$PORT"
