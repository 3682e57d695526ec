#!/usr/bin/env bash
# How certrot's read-only commands scale with the fleet: `config check`, `check` and
# `status` over N credentials (directory targets with real generations, made by
# examples/fixtures), each against the baseline of reading the same files with `cat`
# (the configuration and every target's cert.pem and key.pem). For each size: min / median
# / max of R whole-process runs, the ratio of the medians to the baseline, and the peak RSS
# of one `check`. Release build.
#
#   benches/scale.sh [R=5] [SIZES="100 1000"]          # CI size, under 2 minutes
#   benches/scale.sh 5 "100 1000 10000"                # the figures in docs/performance.md
set -euo pipefail
R=${1:-5}
SIZES=${2:-"100 1000"}
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin certrot --example fixtures
BIN=$PWD/target/release/certrot
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
now_ns() { date +%s%N; }
# stats LABEL N BASE_MEDIAN_NS CMD…: min/median/max over R runs, ratio to BASE (0: none).
stats() {
  local label=$1 n=$2 base=$3; shift 3
  local times=()
  for _ in $(seq "$R"); do
    t0=$(now_ns); "$@" >/dev/null 2>&1 || true; times+=($(( $(now_ns) - t0 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v l="$label" -v n="$n" -v b="$base" '
    {a[NR]=$1} END {
      med = (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)
      printf "%7d  %-14s %9.1f %9.1f %9.1f ms", n, l, a[1]/1e6, med/1e6, a[NR]/1e6
      if (b > 0) printf "   %5.2fx cat", med/b
      printf "\n"
      print med > m
    }' m="$WORK/median"
}
printf '%7s  %-14s %9s %9s %9s\n' credentials command min median max
for n in $SIZES; do
  dir=$WORK/n$n
  mkdir -p "$dir"
  cfg=$(./target/release/examples/fixtures "$dir" "$n" 2>/dev/null)
  files=("$cfg" "$dir"/targets/*/cert.pem "$dir"/targets/*/key.pem)
  stats "cat (baseline)" "$n" 0 cat "${files[@]}"
  base=$(cat "$WORK/median")
  for cmd in "config check" "check" "status"; do
    # shellcheck disable=SC2086
    stats "$cmd" "$n" "$base" "$BIN" --config "$cfg" -q $cmd
  done
  /usr/bin/time -f "%M" -o "$WORK/rss" "$BIN" --config "$cfg" -q check >/dev/null 2>&1 || true
  tail -1 "$WORK/rss" | awk -v n="$n" '{printf "%7d  peak RSS of check: %.1f MiB\n", n, $1/1024}'
done
