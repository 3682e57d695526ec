#!/usr/bin/env bash
# Fan-out: one credential written to K directory targets (the primary and K-1 replicas)
# against one credential with a single target, release build, `certrot sandbox` on
# 127.0.0.1 (ECDSA binding keys). For each configuration, medians of N whole processes:
#   - `rotate --now`: issue once, token-check once, commit to the primary, copy to every
#     replica, retire nothing (retire_after 1h);
#   - `rotate --if-due` when nothing is due: inspect the primary and re-read every replica
#     (what the daemon and a timer do between renewals);
#   - `status`: the table with one row per replica.
# Prints each median, the ratio K targets / 1 target, and the per-replica cost.
#
#   benches/fan-out.sh [N=20] [K=10]
set -euo pipefail
N=${1:-20}
K=${2:-10}
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin certrot
BIN=$PWD/target/release/certrot
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN" sandbox --dir "$WORK/s" --ecdsa-bindings >"$WORK/s.out" 2>"$WORK/s.err" &
PIDS+=($!)
for _ in $(seq 600); do grep -qx ready "$WORK/s.out" 2>/dev/null && break; sleep 0.1; done
grep -qx ready "$WORK/s.out" || { echo "sandbox did not start: $(cat "$WORK/s.err")"; exit 1; }

one=$WORK/s/certrot.toml
# The same credential with K targets: `target.path` becomes K [[credential.target]] tables.
path=$(sed -n 's/^target.path = "\(.*\)"$/\1/p' "$one")
many=$WORK/many.toml
{
  sed -e '/^target.path = /d' -e "s|^state_dir = .*|state_dir = \"$WORK/many-state\"|" "$one"
  for i in $(seq 0 $((K - 1))); do printf '[[credential.target]]\npath = "%s-fan-%d"\n' "$path" "$i"; done
} >"$many"
"$BIN" --config "$many" config check >/dev/null

now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# median_ms CONFIG ARGS…: median wall time of N runs, in ms.
median_ms() {
  local cfg=$1; shift
  local times=()
  for _ in $(seq "$N"); do
    t0=$(now_ns)
    "$BIN" --config "$cfg" -q "$@" >/dev/null
    times+=($(( $(now_ns) - t0 )))
  done
  printf '%s\n' "${times[@]}" | median | awk '{printf "%.2f", $1/1e6}'
}

"$BIN" --config "$one" -q rotate --now >/dev/null
"$BIN" --config "$many" -q rotate --now >/dev/null
for t in $(seq 0 $((K - 1))); do
  cmp -s "$path-fan-0/cert.pem" "$path-fan-$t/cert.pem" || { echo "target $t does not serve the generation"; exit 1; }
done

printf '%-34s %10s %10s %8s %14s\n' "median of $N processes" "1 target" "$K targets" ratio "per replica"
for op in "rotate --now" "rotate --if-due" "status"; do
  # shellcheck disable=SC2086
  a=$(median_ms "$one" $op)
  # shellcheck disable=SC2086
  b=$(median_ms "$many" $op)
  awk -v op="$op" -v a="$a" -v b="$b" -v k="$K" 'BEGIN {
    printf "%-34s %8.2f ms %8.2f ms %7.2fx %11.2f ms\n", op, a, b, b / a, (b - a) / (k - 1) }'
done
