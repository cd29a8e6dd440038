#!/usr/bin/env bash
# The fuzz targets of fuzz/ (docs/FUZZING.md).
#
#   tools/fuzz.sh replay              every corpus file through its target: stable Rust, no
#                                     libFuzzer, a few seconds once built (CI)
#   tools/fuzz.sh smoke [SECONDS]     each target under libFuzzer for SECONDS (default 15): CI
#   tools/fuzz.sh long SECONDS [T..]  each target (or the ones named) for SECONDS, one after
#                                     another at the lowest priority; prints execs, coverage and
#                                     findings per target, also kept in fuzz/work/long-*.log
#
# smoke and long need cargo-fuzz (`cargo install --locked cargo-fuzz`) and nightly Rust; without
# a nightly toolchain they use stable with RUSTC_BOOTSTRAP=1. New inputs go to fuzz/work/<target>
# (not committed); the seeds in fuzz/corpus/<target> are only read. A crash, leak, timeout or OOM
# leaves its input in fuzz/artifacts/<target>/ and fails the run: fix it, then add the input to
# fuzz/corpus/<target>/ as crash-<what> so replay keeps checking it.
set -euo pipefail
script=$(realpath "$0")
cd "$(dirname "$script")/../fuzz"

# A shared build directory is fine: fuzz/ is its own workspace with its own Cargo.lock.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
targets=(chunked_decrypt chunked_stream keyslot_unwrap blob_open cdc_chunker crypt15_prefix
    crypt15_decrypt opaque_messages recipient_decapsulate)
# Bounds for every run: a 2 GiB heap (a bomb is a finding, not a dead machine), 10 s an input.
libfuzzer_flags=(-rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
# AddressSanitizer by default (it also checks the C of aws-lc and zstd); SANITIZER=none runs
# several times more inputs a second, which long runs use. One build folder per sanitizer, so
# switching does not rebuild everything.
sanitizer="${SANITIZER:-address}"
fuzz_dir="$CARGO_TARGET_DIR/fuzz-$sanitizer"

fuzz() {
    if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        cargo +nightly fuzz "$@"
    else
        RUSTC_BOOTSTRAP=1 cargo fuzz "$@"
    fi
}

# Runs target $1 for $2 seconds; its libFuzzer output goes to $3.
run_one() {
    local target=$1 seconds=$2 log=$3
    mkdir -p "work/$target"
    fuzz run -s "$sanitizer" --target-dir "$fuzz_dir" "$target" "work/$target" "corpus/$target" -- \
        "${libfuzzer_flags[@]}" -max_total_time="$seconds" >"$log" 2>&1
}

# One line per run: execs, execs/s, coverage, features, corpus size, from libFuzzer's stats.
summary() {
    local target=$1 status=$2 log=$3
    local runs rate cov ft corp
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 | cut -d' ' -f2)
    printf '%-16s %-9s execs=%-10s exec/s=%-6s cov=%-6s ft=%-6s corpus=%s\n' \
        "$target" "$status" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}"
}

campaign() {
    local seconds=$1 tag=$2
    shift 2
    local failed=0 out="work/$tag-$(date -u +%Y%m%dT%H%M%SZ).log"
    mkdir -p work
    fuzz build -s "$sanitizer" --target-dir "$fuzz_dir"
    for target in "$@"; do
        local log="work/$target.$tag.log" status=ok
        run_one "$target" "$seconds" "$log" || status=FINDING
        [ "$status" = ok ] || failed=1
        summary "$target" "$status" "$log" | tee -a "$out"
        if [ "$status" != ok ]; then
            grep -E '^(==[0-9]+==|SUMMARY|thread .* panicked|artifact_prefix|Test unit written)' \
                "$log" | head -20 | tee -a "$out"
        fi
    done
    echo "summary: $out"
    return "$failed"
}

mode=${1:-}
case "$mode" in
    replay)
        cargo fmt --check
        cargo clippy --locked --no-default-features --all-targets -- -D warnings
        cargo test --locked --no-default-features --test replay -- --nocapture
        ;;
    smoke)
        campaign "${2:-15}" smoke "${targets[@]}"
        ;;
    long)
        [ $# -ge 2 ] || { echo "usage: $0 long SECONDS [TARGET...]" >&2; exit 2; }
        seconds=$2
        shift 2
        [ $# -gt 0 ] || set -- "${targets[@]}"
        nice -n 19 "$script" _campaign "$seconds" long "$@"
        ;;
    _campaign)
        shift
        campaign "$@"
        ;;
    *)
        echo "usage: $0 replay | smoke [SECONDS] | long SECONDS [TARGET...]" >&2
        exit 2
        ;;
esac
