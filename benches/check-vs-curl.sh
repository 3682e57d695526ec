#!/usr/bin/env bash
# One token check on loopback, as a whole process: `certrot check --validate` (inspect +
# fresh TLS handshake with the client certificate + token request + response judgement)
# beside `curl --cert --key` sending the same request to the same `certrot sandbox`.
# Median of N runs each (default 50), interleaved, release build.
#
#   benches/check-vs-curl.sh [N]
set -euo pipefail
N=${1:-50}
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { echo "curl not found (apt-get install curl)"; exit 1; }
cargo build --release --quiet --bin certrot
BIN=$PWD/target/release/certrot
WORK=$(mktemp -d)
OUT=$WORK/sandbox.out
"$BIN" sandbox --dir "$WORK/sbx" >"$OUT" 2>/dev/null &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do grep -qx ready "$OUT" 2>/dev/null && break; sleep 0.1; done
grep -qx ready "$OUT" || { echo "sandbox did not start"; cat "$OUT"; exit 1; }
URL=$(sed -n 's/^  token endpoint (mTLS): //p' "$OUT")
CLIENT=$(sed -n 's/^  registered client: *//p' "$OUT")
CFG=$WORK/sbx/certrot.toml
T=$WORK/sbx/targets/sandbox

now_ns() { date +%s%N; }
certrot_times=()
curl_times=()
for _ in $(seq "$N"); do
  t0=$(now_ns)
  "$BIN" --config "$CFG" -q check --validate >/dev/null
  certrot_times+=($(( $(now_ns) - t0 )))
  t0=$(now_ns)
  curl -sf --cert "$T/cert.pem" --key "$T/key.pem" --cacert "$WORK/sbx/ca.pem" \
    -d grant_type=client_credentials --data-urlencode "client_id=$CLIENT" "$URL" >/dev/null
  curl_times+=($(( $(now_ns) - t0 )))
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
c=$(printf '%s\n' "${certrot_times[@]}" | median)
b=$(printf '%s\n' "${curl_times[@]}" | median)
awk -v n="$N" -v c="$c" -v b="$b" -v v="$(curl --version | head -1 | cut -d' ' -f1-2)" 'BEGIN {
  printf "runs: %d each, interleaved\n", n
  printf "certrot check --validate (process): %7.2f ms median\n", c/1e6
  printf "%-34s %7.2f ms median\n", v " --cert --key:", b/1e6
  printf "ratio (curl / certrot):             %7.2fx\n", b/c
}'
