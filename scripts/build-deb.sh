#!/usr/bin/env bash
# Builds target/debian/certrot_<version>-1_<arch>.deb with cargo-deb (installed into
# target/tools when missing): the release binary without the stand-ins
# (--no-default-features, as the container image), the systemd units with
# ExecStart=/usr/bin/certrot, a sysusers.d entry for the `certrot` user, the man page and
# shell completions generated from the binary, the example configurations, the monitoring
# bundle and the docs under /usr/share/doc/certrot (what the units' Documentation= names).
#
#   scripts/build-deb.sh            # prints the path of the package
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$PWD/target/tools
if ! command -v cargo-deb >/dev/null && [ ! -x "$tools/bin/cargo-deb" ]; then
  echo "== installing cargo-deb into $tools" >&2
  cargo install --quiet --locked --root "$tools" cargo-deb --version 3.6.0 >&2
fi
export PATH=$tools/bin:$PATH
cargo build --release --quiet -p certrot --no-default-features --bin certrot >&2
bin=target/release/certrot
stage=target/deb-staging
rm -rf "$stage"
mkdir -p "$stage/units" "$stage/man" "$stage/completions"
for u in systemd/*; do
  sed -e 's|/usr/local/bin/certrot|/usr/bin/certrot|g' \
      -e 's|^# Install: /usr/bin/certrot|# Installed by the certrot package: /usr/bin/certrot|' "$u" >"$stage/units/$(basename "$u")"
done
"$bin" man | gzip -9n >"$stage/man/certrot.1.gz"
"$bin" completions bash >"$stage/completions/certrot"
"$bin" completions zsh >"$stage/completions/_certrot"
"$bin" completions fish >"$stage/completions/certrot.fish"
cargo deb --quiet -p certrot --no-build --output target/debian/ >&2
ls target/debian/certrot_*.deb | sort | tail -1
