#!/usr/bin/env bash
# fuzz.sh - builds rstunnel's fuzz targets (fuzz/, issue 8 "Hostile input") and runs each
# one for a bounded time, seeded from the committed corpus; fails if any target panics,
# crashes, hangs or runs out of memory.
#
# How it builds: with plain `cargo build` and the flags cargo-fuzz itself passes to rustc
# (the sancov pass with 8-bit counters, PC table, compare tracing and stack depth;
# `--cfg fuzzing`; `--target` so build scripts stay uninstrumented), plus debug
# assertions and overflow checks (what `cargo fuzz run -a` adds: an arithmetic overflow
# on hostile input is a panic here). No sanitizer: this works on the stable toolchain
# alone, and `cargo install cargo-fuzz` (measured: see below) is not needed. libFuzzer
# itself comes from the libfuzzer-sys crate, which compiles it with the system C++
# compiler (g++). The binaries are then run directly as libFuzzer programs.
# Measured here (2 cores, load 5 from other builds): `cargo install --locked cargo-fuzz`
# 3 min 26 s, more than the build it would drive; this script's cold build 4 min 9 s
# (about 2.5 min of CPU), warm a few seconds.
#
# Each target runs FUZZ_SECONDS (default 20) on a scratch copy of fuzz/corpus/TARGET
# (new inputs never grow the committed corpus), first replaying every input kept under
# fuzz/regressions/TARGET. A crash leaves its input under $FUZZ_WORK/artifacts/TARGET/
# and the path is printed. The last lines are one per target, for the summary script:
#   summary: fuzz <target> | runs=<N> | seconds=<S> | crashes=<C>
#
# Needs root: the targets that make rstunnel resolve or connect (config `local =`,
# SOCKS) move into an empty network namespace with unshare(2) so no packet leaves.
#
# Usage: scripts/fuzz.sh [TARGET...]        (default: every target in fuzz/Cargo.toml)
# Environment: FUZZ_SECONDS (per target, default 20), FUZZ_WORK (scratch dir, default
# fuzz/target/fuzz-work), FUZZ_TIMEOUT (seconds one input may take, default 10),
# FUZZ_RSS_MB (default 2048).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-20}
per_input_timeout=${FUZZ_TIMEOUT:-10}
rss_mb=${FUZZ_RSS_MB:-2048}
work=${FUZZ_WORK:-$root/fuzz/target/fuzz-work}
triple=$(rustc -vV | sed -n 's/^host: //p')

if ! command -v c++ >/dev/null 2>&1; then
    echo "fuzz.sh: no C++ compiler (libfuzzer-sys compiles libFuzzer): apt-get install g++" >&2
    exit 1
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(awk '/^\[\[bin\]\]/ { bin = 1; next } /^\[/ { bin = 0 }
        bin && /^name = / { gsub(/"/, "", $3); print $3 }' fuzz/Cargo.toml)
fi

# The flags of cargo-fuzz 0.13's `exec_build` for `-s none -a`, without its
# `-Ccodegen-units=1` (a slower build for somewhat faster runs; not worth it for 20 s).
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cllvm-args=-sanitizer-coverage-stack-depth \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# The main crate's CARGO_TARGET_DIR (if any) would mix instrumented and plain builds.
unset CARGO_TARGET_DIR

build_start=$(date +%s)
bin_args=()
for t in "${targets[@]}"; do bin_args+=(--bin "$t"); done
echo "== fuzz.sh: building ${targets[*]} for $triple"
cargo build --manifest-path fuzz/Cargo.toml --release --target "$triple" "${bin_args[@]}"
echo "== fuzz.sh: build took $(( $(date +%s) - build_start )) s"
bindir=$root/fuzz/target/$triple/release

failed=0
summaries=()
for t in "${targets[@]}"; do
    bin=$bindir/$t
    corpus=$work/corpus/$t
    artifacts=$work/artifacts/$t
    log=$work/logs/$t.log
    rm -rf "$corpus"
    mkdir -p "$corpus" "$artifacts" "$work/logs"
    if [ -d "fuzz/corpus/$t" ]; then
        cp -a "fuzz/corpus/$t/." "$corpus/"
    fi
    crashes=0

    # Known reproducers first: each must now run clean.
    if [ -d "fuzz/regressions/$t" ] && [ -n "$(ls -A "fuzz/regressions/$t")" ]; then
        echo "== fuzz.sh: $t: replaying fuzz/regressions/$t"
        if ! "$bin" -timeout="$per_input_timeout" -rss_limit_mb="$rss_mb" \
            "fuzz/regressions/$t"/* >"$work/logs/$t.regressions.log" 2>&1; then
            echo "fuzz.sh: $t: a kept reproducer fails again; see $work/logs/$t.regressions.log" >&2
            tail -n 30 "$work/logs/$t.regressions.log" >&2
            crashes=$((crashes + 1))
        fi
    fi

    echo "== fuzz.sh: $t: fuzzing for $seconds s"
    started=$(date +%s)
    status=0
    "$bin" "$corpus" \
        -max_total_time="$seconds" \
        -timeout="$per_input_timeout" \
        -rss_limit_mb="$rss_mb" \
        -max_len=65536 \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" \
        >"$log" 2>&1 || status=$?
    elapsed=$(( $(date +%s) - started ))
    # The final `#N DONE` line, else the last `#N ...` status line (a crash stops early).
    runs=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -n 1)
    stat_runs=$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*\([0-9]*\)/\1/p' "$log" | tail -n 1)
    runs=${stat_runs:-${runs:-0}}
    if [ "$status" -ne 0 ]; then
        crashes=$((crashes + 1))
        echo "fuzz.sh: $t: libFuzzer exited $status; last lines of $log:" >&2
        grep -E '^(==[0-9]+==|SUMMARY|thread .* panicked|Test unit written to|ERROR: libFuzzer)' "$log" >&2 || true
        tail -n 40 "$log" >&2
        for crash in "$artifacts"/*; do
            [ -e "$crash" ] && echo "fuzz.sh: $t: crashing input: $crash" >&2
        done
    fi
    [ "$crashes" -eq 0 ] || failed=1
    echo "   $t: $runs runs in $elapsed s, $(find "$corpus" -type f | wc -l) inputs in the scratch corpus"
    summaries+=("summary: fuzz $t | runs=$runs | seconds=$elapsed | crashes=$crashes")
done

printf '%s\n' "${summaries[@]}"
exit "$failed"
