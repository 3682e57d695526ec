#!/usr/bin/env bash
# `certrot check` over N credential directories (default 1000) against the shell baseline an
# operator would otherwise write: `openssl x509 -checkend` per certificate file.
# Both are timed by this script, best of R runs (default 5), release build.
#
#   benches/check-1000.sh [N] [RUNS]
set -euo pipefail
N=${1:-1000}
RUNS=${2:-5}
cd "$(dirname "$0")/.."
command -v openssl >/dev/null || { echo "openssl CLI not found (apt-get install openssl)"; exit 1; }
cargo build --release --quiet --bin certrot --example fixtures
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CFG=$(./target/release/examples/fixtures "$WORK" "$N" 2>/dev/null)

now_ns() { date +%s%N; }
best() { sort -n | head -1; }

certrot_times=()
for _ in $(seq "$RUNS"); do
  t0=$(now_ns)
  ./target/release/certrot --config "$CFG" -q check >/dev/null || true
  certrot_times+=($(( $(now_ns) - t0 )))
done
baseline_times=()
for _ in $(seq "$RUNS"); do
  t0=$(now_ns)
  for f in "$WORK"/targets/*/cert.pem; do
    openssl x509 -checkend 86400 -noout -in "$f" >/dev/null || true
  done
  baseline_times+=($(( $(now_ns) - t0 )))
done
c=$(printf '%s\n' "${certrot_times[@]}" | best)
b=$(printf '%s\n' "${baseline_times[@]}" | best)
awk -v n="$N" -v c="$c" -v b="$b" 'BEGIN {
  printf "credentials: %d\n", n
  printf "certrot check (one process):       %8.1f ms  (%.1f us per credential)\n", c/1e6, c/1e3/n
  printf "openssl x509 -checkend per file:   %8.1f ms  (%.1f us per credential)\n", b/1e6, b/1e3/n
  printf "ratio (baseline / certrot):        %8.1fx\n", b/c
}'
