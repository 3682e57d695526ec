#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, through the libfuzzer-sys crate) of every parser of
# outside input: the entries of certrot::inputs, one fuzz target each (fuzz/fuzz_targets/).
# Built with the stable toolchain: sanitizer coverage instrumentation, no sanitizer (certrot
# has no unsafe code of its own; what is looked for is a panic, an overflow, a hang or
# unbounded memory). A crash fails the run and leaves its input in target/fuzz/artifacts/.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   default: 12 s for each of the 8 targets (about 2 minutes in all; what CI runs)
#   long run: FUZZ_RUNS=10000000 scripts/fuzz.sh   (10 M executions per target, no time
#   limit; figures in docs/reliability.md)
# The corpus grows in target/fuzz/corpus/<target> and is reused by the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-12}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(pem_chain_and_key service_key configuration state_file token_response
    service_manager_answer servicebinding_metadata kubernetes_annotations)
fi
out=target/fuzz
echo "== seeds"
cargo run --quiet --example fuzz_seeds -- "$out/seeds"
echo "== building the fuzz targets (instrumented, release)"
host=$(rustc -vV | sed -n 's/^host: //p')
# --target: the flags reach the targets' code only, not build scripts or proc macros.
CARGO_TARGET_DIR=$out/build RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks" \
  cargo build --quiet --release --manifest-path fuzz/Cargo.toml --target "$host" --bins
printf '%-26s %8s %12s %10s %8s\n' target seconds executions "exec/s" corpus
failed=0
for t in "${targets[@]}"; do
  corpus=$out/corpus/$t
  mkdir -p "$corpus" "$out/artifacts/$t"
  log=$out/$t.log
  if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-runs="$FUZZ_RUNS"); else limit=(-max_total_time="$secs"); fi
  if ! "$out/build/$host/release/$t" "${limit[@]}" -timeout=10 -rss_limit_mb=1024 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/$t/" "$corpus" "$out/seeds/$t" \
    >"$log" 2>&1; then
    echo "!! $t: crashed — input in $out/artifacts/$t/; log $log:"
    tail -n 40 "$log"
    failed=1
    continue
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")
  took=${took:-$secs}
  printf '%-26s %8s %12s %10s %8s\n' "$t" "$took" "$execs" "$((execs / (took > 0 ? took : 1)))" \
    "$(ls "$corpus" | wc -l)"
done
exit $failed
