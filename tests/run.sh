#!/usr/bin/env bash
# The one command that runs every check and test of usher, locally and in CI (.ci/run):
#
#   tests/run.sh
#
# On a fresh Debian with Rust it first installs what the tests need (as root, with apt-get;
# otherwise it prints what to install and exits 2), then: format check, clippy with warnings
# as errors, one build of every target, and the tests (cargo-nextest when present, else
# cargo test), doc tests included. It changes no source file.
set -euo pipefail
cd "$(dirname "$0")/.."

# Commands the tests use, as "command:debian-package". Tests that need one fail without it,
# they do not skip. promtool checks the alert rules and the live /metrics; chromium, node and
# npm run the queue page's browser tests (tests/browser.rs); redis-server (its package brings
# redis-cli) backs the Redis store's tests, redis-sentinel its failover test
# (tests/redis_sentinel.rs); lintian and systemd-analyze check the Debian package
# (tests/debian.rs).
NEEDED=(promtool:prometheus chromium:chromium node:nodejs npm:npm redis-server:redis-server redis-cli:redis-tools
  redis-sentinel:redis-sentinel lintian:lintian systemd-analyze:systemd)

# Installs the Debian package of every missing command; without root, names them and exits 2.
ensure_commands() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "tests/run.sh: the tests need these Debian packages: ${missing[*]}" >&2
    echo "install them with:  sudo apt-get install -y ${missing[*]}" >&2
    exit 2
  fi
}

# cargo, rustfmt and clippy come with the Rust toolchain, not from apt.
ensure_rust() {
  local missing=()
  command -v cargo >/dev/null 2>&1 || { echo "tests/run.sh: cargo is missing: install Rust (rustup)" >&2; exit 2; }
  cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
  cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "tests/run.sh: missing Rust components: ${missing[*]}  (rustup component add ${missing[*]})" >&2
    exit 2
  fi
}

# The browser tests' npm packages (playwright-core, axe-core), exactly as locked.
ensure_browser_packages() {
  [ -d tests/browser/node_modules/playwright-core ] && [ -d tests/browser/node_modules/axe-core ] && return 0
  echo "== npm ci (tests/browser)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
}

# cargo-deb builds the Debian package (debian/build.sh); pinned, so its output is what the
# test knows.
ensure_cargo_deb() {
  cargo deb --version 2>/dev/null | grep -q "^cargo-deb 3.8.0" && return 0
  echo "== cargo install cargo-deb 3.8.0"
  cargo install --locked --quiet cargo-deb --version 3.8.0
}

ensure_commands ${NEEDED[@]+"${NEEDED[@]}"}
ensure_rust
ensure_browser_packages
ensure_cargo_deb

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# A clean CI build needs no incremental cache; it would add 3 GB to the target directory.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo build (every target, once)"
cargo build --workspace --all-targets --locked

# Doc tests first, so the test runner's own summary closes the output.
if cargo metadata --format-version 1 --no-deps --offline 2>/dev/null | grep -q '"kind":\["lib"\]'; then
  echo "== doc tests"
  cargo test --workspace --doc --locked
fi

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --lib --bins --tests --locked --no-fail-fast
else
  cargo test --workspace --lib --bins --tests --locked --no-fail-fast
fi
