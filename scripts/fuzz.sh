#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS_PER_TARGET seconds (default 60) and
# prints, per target, the executions and whether it crashed. Exits non-zero if any target
# crashed (or timed out, or ran out of memory): the input is in fuzz/artifacts/TARGET/.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# The committed seeds (fuzz/corpus/TARGET/seed-*) are only read; what libFuzzer finds goes to
# a temporary directory, or to $FUZZ_WORK_DIR/TARGET when that is set (to keep a corpus
# between runs). cargo-fuzz needs a nightly toolchain: without one this fails, unless
# FUZZ_OPTIONAL=1, when it says so and exits 0. FUZZ_TARGETS="a b" runs only those targets.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi
cd "$(dirname "$0")/../fuzz"
read -r -a targets <<<"${FUZZ_TARGETS:-topic_validate_match rules_compile certificate cases_file}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain, which cargo-fuzz needs (rustup toolchain install nightly)" >&2
    if [[ "${FUZZ_OPTIONAL:-}" == 1 ]]; then
        echo "fuzz.sh: FUZZ_OPTIONAL=1, so skipping the fuzz targets" >&2
        exit 0
    fi
    exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [[ -n "${FUZZ_WORK_DIR:-}" ]]; then
    work="$FUZZ_WORK_DIR"
    mkdir -p "$work"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi

# Build first, so that a build failure is not reported as a crash.
for target in "${targets[@]}"; do
    if ! cargo +nightly fuzz build "$target"; then
        echo "fuzz.sh: building the fuzz target $target failed" >&2
        exit 1
    fi
done
failed=0
for target in "${targets[@]}"; do
    mkdir -p "$work/$target"
    args=(-max_total_time="$seconds" -print_final_stats=1)
    if [[ -f "dicts/$target.dict" ]]; then
        args+=(-dict="dicts/$target.dict")
    fi
    # New inputs go to the first corpus directory; the seeds are only read.
    corpora=("$work/$target")
    if [[ -d "corpus/$target" ]]; then
        corpora+=("corpus/$target")
    fi
    log="$work/$target.log"
    echo "== $target: ${seconds}s" >&2
    # TMPDIR: the cases_file target writes each input to a file there.
    if TMPDIR="$work" cargo +nightly fuzz run "$target" "${corpora[@]}" -- "${args[@]}" >"$log" 2>&1; then
        result="no crash"
    elif grep -q "Test unit written to" "$log"; then
        # crash-, timeout-, oom- or leak-: the file name says which.
        result="CRASH ($(sed -n 's|.*Test unit written to .*/\([a-z]*\)-.*|\1|p' "$log" | head -n 1))"
        failed=1
    else
        result="FAILED to run"
        failed=1
    fi
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    printf '%-22s %12s executions   %s\n' "$target" "${execs:-?}" "$result"
    if [[ "$result" != "no crash" ]]; then
        # The panic (with its message) or sanitizer report, and where the input went.
        grep -E -A3 "panicked at" "$log" | head -n 8 | sed 's/^/    /'
        grep -E "ERROR: |SUMMARY: |Test unit written to|No such file|^Error: " "$log" | head -n 8 | sed 's/^/    /'
        if [[ -z "${FUZZ_WORK_DIR:-}" ]]; then
            mkdir -p artifacts
            cp "$log" "artifacts/$target.log"
            log="fuzz/artifacts/$target.log"
        fi
        echo "    log: $log"
        echo "    minimize (in fuzz/): cargo +nightly fuzz tmin $target artifacts/$target/<file>"
    fi
done
exit "$failed"
