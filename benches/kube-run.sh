#!/usr/bin/env bash
# The kubernetes-secret target as a CronJob run sees it, against `certrot sandbox --kube`
# (token endpoint, Service Manager and the Kubernetes API stand-in on 127.0.0.1, over TLS),
# release build, whole process each time, median of N runs (default 20):
#   1. `rotate --now` of a credential kept in a Secret (intent, binding, check, copy to
#      -previous, commit, state: 5-6 API writes), next to the same for a directory target;
#   2. `rotate --if-due` when nothing is due (what most CronJob runs do: one GET, no write),
#      next to the directory target; peak RSS of such a run.
#
#   benches/kube-run.sh [N]
set -euo pipefail
N=${1:-20}
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin certrot
BIN=$PWD/target/release/certrot
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }; rm -rf "$WORK"; }
trap cleanup EXIT

dir=$WORK/sb
"$BIN" sandbox --dir "$dir" --kube --credentials 2 --ecdsa-bindings >"$dir.out" 2>"$dir.err" &
PID=$!
for _ in $(seq 600); do grep -qx ready "$dir.out" 2>/dev/null && break; sleep 0.1; done
grep -qx ready "$dir.out" || { echo "sandbox did not start: $(cat "$dir.err")"; exit 1; }
CFG=$dir/certrot.toml
"$BIN" --config "$CFG" -q rotate --if-due >/dev/null   # app-0002's Secret is created

now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
measure() { # label, args…
  local label=$1; shift
  local times=()
  for _ in $(seq "$N"); do
    t0=$(now_ns)
    "$BIN" --config "$CFG" -q "$@" >/dev/null
    times+=($(( $(now_ns) - t0 )))
  done
  printf '%s\n' "${times[@]}" | median | awk -v l="$label" -v n="$N" \
    '{printf "%-44s %7.1f ms median of %d\n", l, $1/1e6, n}'
}

measure "rotate --now, Secret target (app-0002)" rotate --now app-0002
measure "rotate --now, directory target (sandbox)" rotate --now sandbox
measure "rotate --if-due, not due, Secret target" rotate --if-due app-0002
measure "rotate --if-due, not due, directory target" rotate --if-due sandbox
/usr/bin/time -f "%M" -o "$WORK/rss" "$BIN" --config "$CFG" -q rotate --if-due app-0002 >/dev/null
awk '{printf "peak RSS of a not-due run, Secret target: %.1f MiB\n", $1/1024}' "$WORK/rss"
