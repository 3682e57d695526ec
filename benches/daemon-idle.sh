#!/usr/bin/env bash
# An idle `certrot run` with N credentials (default 100) against `certrot sandbox`: resident
# memory and CPU over S seconds (default 60) once the first inspection and probe are done,
# and the latency of a /metrics scrape (median of 200), release build.
#
#   benches/daemon-idle.sh [N] [S]
set -euo pipefail
N=${1:-100}
S=${2:-60}
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { echo "curl not found (apt-get install curl)"; exit 1; }
cargo build --release --quiet --bin certrot
BIN=$PWD/target/release/certrot
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
"$BIN" sandbox --dir "$WORK/s" --credentials "$N" --ecdsa-bindings >"$WORK/sandbox.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do grep -qx ready "$WORK/sandbox.out" && break; sleep 0.1; done
CFG=$WORK/s/certrot.toml
sed -i 's/^listen = ""/listen = "127.0.0.1:0"/' "$CFG"
"$BIN" --config "$CFG" -q rotate --now >/dev/null     # every credential gets a 7-day generation
"$BIN" --config "$CFG" -q run >"$WORK/run.out" 2>"$WORK/run.err" &
DPID=$!
PIDS+=($DPID)
for _ in $(seq 100); do grep -q "metrics at" "$WORK/run.out" && break; sleep 0.1; done
URL=$(sed -n 's/^certrot run: metrics at //p' "$WORK/run.out")
sleep 5   # first inspection and probe of every credential
ticks() { awk '{print $14 + $15}' "/proc/$DPID/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); sleep "$S"; t1=$(ticks)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$DPID/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$DPID/status")
times=()
for _ in $(seq 200); do times+=($(curl -s -o /dev/null -w '%{time_total}' "$URL")); done
bytes=$(curl -s "$URL" | wc -c)
med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
awk -v n="$N" -v s="$S" -v d="$((t1 - t0))" -v hz="$hz" -v rss="$rss" -v hwm="$hwm" -v med="$med" -v b="$bytes" 'BEGIN {
  printf "idle daemon, %d credentials, %d s: CPU %.3f%% (%d ticks of 1/%d s)\n", n, s, 100*d/hz/s, d, hz
  printf "resident memory: %.1f MiB now, %.1f MiB peak\n", rss/1024, hwm/1024
  printf "/metrics scrape (%d bytes): %.2f ms median of 200 (curl, loopback)\n", b, med*1000 }'
