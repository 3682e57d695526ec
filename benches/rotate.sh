#!/usr/bin/env bash
# `certrot rotate --now` end to end against `certrot sandbox` (token endpoint + Service
# Manager API on 127.0.0.1), release build:
#   1. one credential, whole process, median of N runs (default 20), with ECDSA P-256 binding
#      keys and with RSA-2048 binding keys (the sandbox draws RSA keys from a pre-generated
#      pool so the figure measures certrot, not the stand-in's key generation);
#   2. M credentials (default 1000) rotated by one `rotate --now --parallel P` (default 8):
#      wall time and peak RSS, first run (every credential missing → created) and second
#      run (every credential replaced, old binding queued for retirement).
#
#   benches/rotate.sh [N] [M] [P]
set -euo pipefail
N=${1:-20}
M=${2:-1000}
P=${3:-8}
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin certrot
BIN=$PWD/target/release/certrot
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

start_sandbox() { # dir, extra args…
  local dir=$1; shift
  "$BIN" sandbox --dir "$dir" "$@" >"$dir.out" 2>"$dir.err" &
  PIDS+=($!)
  for _ in $(seq 600); do grep -qx ready "$dir.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "sandbox did not start: $(cat "$dir.err")"; exit 1
}
now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

one() { # label, sandbox args…
  local label=$1; shift
  local dir=$WORK/one-$label
  start_sandbox "$dir" "$@"
  local times=()
  for _ in $(seq "$N"); do
    t0=$(now_ns)
    "$BIN" --config "$dir/certrot.toml" -q rotate --now sandbox >/dev/null
    times+=($(( $(now_ns) - t0 )))
  done
  printf '%s\n' "${times[@]}" | median | awk -v l="$label" -v n="$N" \
    '{printf "one credential, %-9s rotate --now (process): %7.1f ms median of %d\n", l, $1/1e6, n}'
}

one ecdsa --ecdsa-bindings
one rsa-2048 --rsa-pool 8

dir=$WORK/many
start_sandbox "$dir" --credentials "$M" --ecdsa-bindings
for run in first second; do
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$BIN" --config "$dir/certrot.toml" -q \
    rotate --now --parallel "$P" >"$WORK/many.out" 2>"$WORK/many.err" || { echo "rotate failed:"; grep -v rotated "$WORK/many.out" | head; exit 1; }
  rotated=$(grep -c ': rotated' "$WORK/many.out" || true)
  read -r secs kb <"$WORK/time"
  awk -v r="$run" -v m="$M" -v n="$rotated" -v s="$secs" -v k="$kb" -v p="$P" 'BEGIN {
    printf "%d credentials, --parallel %d, %-6s run: %d rotated in %.1f s wall, peak RSS %.1f MiB\n", m, p, r, n, s, k/1024 }'
done
