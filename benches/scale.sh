#!/usr/bin/env bash
# How certrot scales with the fleet, every figure beside its baseline in the same run.
#
# 1. Read-only commands over N credentials (directory targets with real generations, made
#    by examples/fixtures): `config check`, `check` and `status` against `cat` of the same
#    files (the configuration and every target's cert.pem and key.pem), and `check` against
#    a loop of `openssl x509 -checkend` over the same certificates (one run: it is slow).
#    min / median / max of R whole-process runs, the ratio of the medians, peak RSS of `check`.
# 2. Against `certrot sandbox --credentials M` (token endpoint and Service Manager on
#    127.0.0.1): one token check, `certrot check --validate` of one credential against
#    `curl --cert --key` with the same request (R runs each); one warm `rotate --now` of one
#    credential (R runs) and the sync calls it makes (strace, when installed); the whole
#    fleet in one `rotate --now` (wall time, peak RSS, the CPU time of certrot and of the
#    stand-ins, which share the cores); the idle daemon (`certrot run`):
#    resident memory, wake-ups (context switches of all its threads) over W seconds with
#    nothing due, and the median of R `/metrics` scrapes with curl.
#
#   benches/scale.sh [R=5] [SIZES="100 1000"] [FLEETS="100"] [W=10]   # CI size, < 2 minutes
#   benches/scale.sh 5 "100 1000 10000" "100 1000" 30                 # docs/performance.md
#
# Everything it writes (fixtures, sandbox, targets, state) goes under `mktemp -d`: give it a
# TMPDIR on another filesystem to measure there (docs/performance.md, "Disk work off the
# runtime's workers").
set -euo pipefail
R=${1:-5}
SIZES=${2:-"100 1000"}
FLEETS=${3:-"100"}
W=${4:-10}
cd "$(dirname "$0")/.."
# The stand-ins and the fixtures come from the default build; every measured command runs
# the product as it ships (without the stand-ins, as the package and the image build it),
# built into its own directory so the two builds do not replace each other.
cargo build --release --quiet --bin certrot --example fixtures
cargo build --release --quiet --bin certrot --no-default-features --target-dir target/production
SANDBOX=$PWD/target/release/certrot
BIN=$PWD/target/production/release/certrot
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The shell's own clock (bash 5's EPOCHREALTIME, in microseconds): no process is started
# to read it, so the interval holds the measured command alone (`date +%s%N` added about
# a millisecond of its own start and exit to every figure).
now_ns() { echo $(( 10#${EPOCHREALTIME//[!0-9]/} * 1000 )); }
# stats LABEL N BASE_MEDIAN_NS CMD…: min/median/max over R runs, ratio to BASE (0: none),
# a baseline named $BL.
BL=cat
stats() {
  local label=$1 n=$2 base=$3; shift 3
  local times=()
  for _ in $(seq "$R"); do
    t0=${EPOCHREALTIME//[!0-9]/}; "$@" >/dev/null 2>&1 || true
    times+=($(( (${EPOCHREALTIME//[!0-9]/} - t0) * 1000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v l="$label" -v n="$n" -v b="$base" -v bl="$BL" '
    {a[NR]=$1} END {
      med = (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)
      printf "%7d  %-14s %9.1f %9.1f %9.1f ms", n, l, a[1]/1e6, med/1e6, a[NR]/1e6
      if (b > 0) printf "   %5.2fx %s", med/b, bl
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
  check_median=$(awk '{print $1}' "$WORK/median")
  /usr/bin/time -f "%M" -o "$WORK/rss" "$BIN" --config "$cfg" -q check >/dev/null 2>&1 || true
  tail -1 "$WORK/rss" | awk -v n="$n" '{printf "%7d  peak RSS of check: %.1f MiB\n", n, $1/1024}'
  if command -v openssl >/dev/null; then
    t0=$(now_ns)
    for f in "$dir"/targets/*/cert.pem; do openssl x509 -checkend 86400 -noout -in "$f" >/dev/null || true; done
    t=$(( $(now_ns) - t0 ))
    awk -v n="$n" -v t="$t" -v c="$check_median" 'BEGIN {
      printf "%7d  openssl -checkend loop: %.1f ms (one run): certrot check is %.0fx faster\n", n, t/1e6, t/c }'
  fi
done

# --- 2. Against the sandbox ---
start_sandbox() { # dir, extra args…
  local dir=$1; shift
  "$SANDBOX" sandbox --dir "$dir" "$@" >"$dir.out" 2>"$dir.err" &
  PIDS+=($!)
  for _ in $(seq 3000); do grep -qx ready "$dir.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "sandbox did not start: $(cat "$dir.err")"; exit 1
}
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
for m in $FLEETS; do
  sbx=$WORK/sbx$m
  start_sandbox "$sbx" --credentials "$m" --ecdsa-bindings
  cfg=$sbx/certrot.toml
  url=$(sed -n 's/^  token endpoint (mTLS): //p' "$sbx.out")
  client=$(sed -n 's/^  registered client: *//p' "$sbx.out")
  t=$sbx/targets/sandbox
  if command -v curl >/dev/null; then
    stats "curl --cert" "$m" 0 curl -sf --cert "$t/cert.pem" --key "$t/key.pem" --cacert "$sbx/ca.pem" \
      -d grant_type=client_credentials --data-urlencode "client_id=$client" "$url"
    base=$(cat "$WORK/median")
    BL=curl
    one=$WORK/one$m.toml
    # The configuration of the one credential `sandbox` (the sandbox writes it first).
    awk '/^\[\[credential\]\]/ {n++} n < 2' "$cfg" >"$one"
    stats "check --validate 1" "$m" "$base" "$BIN" --config "$one" -q check --validate
  fi
  "$BIN" --config "$cfg" -q rotate --now sandbox >/dev/null   # warm: its binding exists
  stats "rotate --now 1" "$m" 0 "$BIN" --config "$cfg" -q rotate --now sandbox
  if command -v strace >/dev/null; then
    strace -f -qq -e trace=fsync,fdatasync -o "$WORK/sync" "$BIN" --config "$cfg" -q rotate --now sandbox >/dev/null
    printf '%7d  sync calls of one rotation: %d\n' "$m" "$(grep -c 'sync(' "$WORK/sync")"
  fi
  # CPU time of the stand-ins (their process's user + system ticks) beside certrot's own.
  ticks() { awk '{print $14 + $15}' "/proc/${PIDS[-1]}/stat"; }
  # What earlier commands left unwritten (an earlier run's removed directory, pruned
  # generations) is written back first: ext4 without a journal scans the inodes freed in
  # the last seconds on every allocation, and the figure is of this run alone.
  sync
  t0=$(ticks)
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time" "$BIN" --config "$cfg" -q rotate --now --parallel 8 >/dev/null 2>&1 || true
  t1=$(ticks)
  read -r secs kb user sys <"$WORK/time"
  printf '%7d  rotate --now of all: %.2f s wall, peak RSS %.1f MiB; CPU: certrot %.2f s user + %.2f s system, the stand-ins %.2f s\n' \
    "$m" "$secs" "$(awk -v k="$kb" 'BEGIN {print k/1024}')" "$user" "$sys" \
    "$(awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" 'BEGIN {print t/hz}')"
  sed -i 's/^listen = ""/listen = "127.0.0.1:0"/' "$cfg"
  "$BIN" --config "$cfg" -q run >"$WORK/run.out" 2>"$WORK/run.err" &
  dpid=$!
  PIDS+=($dpid)
  for _ in $(seq 600); do grep -q "metrics at" "$WORK/run.out" && break; sleep 0.1; done
  murl=$(sed -n 's/^certrot run: metrics at //p' "$WORK/run.out")
  # The first inspection and probe of every credential, then nothing is due for hours.
  sleep $(( 3 + m / 200 ))
  # Context switches per thread (a thread that ended in between counts from 0 to its end
  # as seen; one that began, from 0): every wake-up of the daemon is one or more.
  switches() {
    for t in /proc/"$dpid"/task/*; do
      awk -v t="${t##*/}" '/ctxt_switches/ {s += $2} END {print t, s}' "$t/status" 2>/dev/null || true
    done | sort
  }
  s0=$(switches); sleep "$W"; s1=$(switches)
  woke=$(join -a 2 -e 0 -o 0,1.2,2.2 <(echo "$s0") <(echo "$s1") | awk '{d += $3 - $2} END {print d + 0}')
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$dpid/status")
  printf '%7d  idle daemon: %.1f MiB resident, %d context switches in %d s with nothing due\n' \
    "$m" "$(awk -v k="$rss" 'BEGIN {print k/1024}')" "$woke" "$W"
  if command -v curl >/dev/null && [ -n "$murl" ]; then
    # The scrape as curl times it (request to last byte), not curl's own start-up.
    for _ in $(seq "$R"); do curl -sf -o /dev/null -w '%{time_total} %{size_download}\n' "$murl"; done |
      sort -n | awk -v n="$m" '{t[NR] = $1; b = $2} END {
        printf "%7d  /metrics (%d bytes): %.2f / %.2f / %.2f ms (min / median / max)\n", n, b, t[1]*1e3, t[int((NR+1)/2)]*1e3, t[NR]*1e3 }'
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$dpid/status")
    printf '%7d  idle daemon after the scrapes: %.1f MiB resident\n' "$m" "$(awk -v k="$rss" 'BEGIN {print k/1024}')"
  fi
  kill "$dpid"; wait "$dpid" 2>/dev/null || true
done
