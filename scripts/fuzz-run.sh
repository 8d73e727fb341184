#!/usr/bin/env bash
# Run every libFuzzer target in DIR for SECONDS each on its seed corpus
# (tests/fuzz/corpus/<name>/, copied so the run does not grow the repo's).
#   scripts/fuzz-run.sh build/fuzz 20
# Longer runs: make fuzz-run FUZZ_SECONDS=3600
set -euo pipefail
dir=${1:-build/fuzz}
secs=${2:-20}
fail=0
for bin in "$dir"/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    corpus=tests/fuzz/corpus/${name#fuzz_}
    work=$(mktemp -d)
    [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/
    echo "== $name for ${secs}s"
    if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 "$work" >"$work.log" 2>&1; then
        tail -50 "$work.log"
        echo "FUZZ FAILURE: $name" >&2
        fail=1
    else
        grep -E "stat::number_of_executed_units|Done" "$work.log" | head -2
    fi
    rm -rf "$work" "$work.log"
done
exit $fail
