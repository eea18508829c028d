#!/usr/bin/env bash
# Runs courier's fuzz targets, one after the other, one job each, for
# SECONDS seconds each (default 60), and prints one line per target:
#
#   figures: suite=fuzz target=NAME execs=N crashes=N seconds=S corpus=N slow_units=N
#
# (slow_units: inputs that took over 10 s, which libFuzzer saves as
# fuzz/artifacts/NAME/slow-unit-*; a hang beyond 30 s is a crash.)
# (also appended to the file $COURIER_FIGURES names, if set). Exits 1 if
# any target crashed; the crashing input is in fuzz/artifacts/NAME/.
#
# usage: fuzz/run.sh [SECONDS] [TARGET...]
#   FUZZ_TOOLCHAIN  toolchain for cargo-fuzz (default: nightly)
#   FUZZ_ARGS       extra libFuzzer flags (e.g. "-seed=1")
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
seconds=${1:-60}
if [ $# -gt 0 ]; then shift; fi
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=(frame_decode fd_table handshake pipe_framing)
fi
toolchain=${FUZZ_TOOLCHAIN:-nightly}
cd "$root"

for t in "${targets[@]}"; do
    cargo "+$toolchain" fuzz build "$t"
done

logs="$here/target/run-logs"
mkdir -p "$logs"
failed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    # libFuzzer's failures: crash-, leak-, timeout- and oom- files (a
    # slow-unit- file is an input that took over 10 s, counted apart).
    failures() { find "fuzz/artifacts/$t" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l; }
    slow_units() { find "fuzz/artifacts/$t" -type f -name 'slow-unit-*' | wc -l; }
    before=$(failures)
    slow_before=$(slow_units)
    log="$logs/$t.log"
    status=0
    # libFuzzer bounds each input (-timeout) and the run; the outer
    # timeout only guards against the fuzzer itself wedging.
    # shellcheck disable=SC2086
    timeout $((seconds + 600)) cargo "+$toolchain" fuzz run "$t" \
        "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=1024 \
        -malloc_limit_mb=64 -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    if [ -z "$execs" ]; then
        execs=$(grep -o '^Done [0-9]* runs' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
    fi
    crashes=$(($(failures) - before))
    slow=$(($(slow_units) - slow_before))
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1 # failed without an artifact: count it, show why
    fi
    if [ "$crashes" -ne 0 ]; then
        failed=1
        echo "== $t failed (exit $status); the end of $log:" >&2
        tail -40 "$log" >&2
    fi
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    line="figures: suite=fuzz target=$t execs=$execs crashes=$crashes seconds=$seconds corpus=$corpus slow_units=$slow"
    echo "$line"
    if [ -n "${COURIER_FIGURES:-}" ]; then
        echo "$line" >>"$COURIER_FIGURES"
    fi
done
exit "$failed"
