#!/usr/bin/env bash
# Builds usher's Debian package: target/debian/usher_VERSION-1_ARCH.deb.
#
#   debian/build.sh            a release build, then the package
#   debian/build.sh --dev      package the debug build already made (tests/debian.rs, CI)
#
# Needs cargo-deb (cargo install --locked cargo-deb). The package holds the binary, the
# configuration as a conffile (/etc/usher/usher.toml), the hardened systemd unit, the README,
# PRIVACY.md, SECURITY.md and `usher --help` as text in /usr/share/doc/usher.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null 2>&1 || { echo "debian/build.sh needs cargo-deb: cargo install --locked cargo-deb" >&2; exit 2; }

profile=release
[ "${1:-}" = --dev ] && profile=dev
bin=${CARGO_TARGET_DIR:-target}/$([ $profile = dev ] && echo debug || echo release)/usher
if [ $profile = release ]; then
  cargo build --release --locked -p usher
fi
# The help text, from the binary that is packaged.
mkdir -p target/debian
{
  echo "usher --help"; echo; "$bin" --help
  for sub in run check-config demo admin; do
    echo; echo "usher $sub --help"; echo; "$bin" "$sub" --help
  done
} >target/debian/usher-help.txt
if [ $profile = dev ]; then
  cargo deb --locked --no-build --profile dev --output target/debian/
else
  cargo deb --locked --no-build --output target/debian/
fi
