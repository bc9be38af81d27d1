#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, starting from the
# committed seeds in fuzz/seeds/<target>/.
#
#   scripts/fuzz.sh [seconds-per-target]     (default 60)
#
# Prints one line per target on stdout:
#   <target>: ran N s clean, X execs
#   <target>: CRASH after N s, X execs: <artifact path>
# and exits 1 if any target found a crash (panic, timeout, OOM, leak), 2 on a
# setup or build error, 0 when every target ran clean.
#
# Environment (all optional):
#   FUZZ_TARGET_DIR   cargo target dir for fuzz builds (default /var/tmp/switchboard-fuzz-target;
#                     kept apart from the workspace's own target dir so the two never lock each other)
#   FUZZ_TARGETS      space-separated targets to run (default: all, from `cargo fuzz list`)
#   FUZZ_SANITIZER    address (default) | none | leak | memory | thread
#   CARGO_BUILD_JOBS  parallel rustc jobs for the build (default 1; cargo-fuzz has no -j for builds)
#   SWITCHBOARD_FUZZ_FLOAT_ULPS
#                     read by the socketio_packet target: tolerated float drift, in ULPs, in
#                     its encode/parse round trip (default 0 = exact; see the target's header)
#
# Toolchain: cargo-fuzz passes nightly-only flags to rustc (-Zsanitizer=address,
# sancov passes). Only the stable toolchain is installed here, so the script sets
# RUSTC_BOOTSTRAP=1, which makes stable rustc/cargo accept them. Everything runs
# under `nice -n 19` so that it yields the (shared) CPU to other work.
#
# Working corpus: fuzz/corpus/<target>/ (grows across runs, git-ignored).
# Crash inputs:   fuzz/artifacts/<target>/ (git-ignored).  Logs: fuzz/logs/<target>.log.
# Reproduce a crash: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>
set -euo pipefail

die() {
    echo "fuzz.sh: error: $*" >&2
    exit 2
}

secs="${1:-60}"
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || die "seconds-per-target must be a positive integer, got '$secs'"
[[ $# -le 1 ]] || die "usage: $0 [seconds-per-target]"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/fuzz"
[[ -f "$fuzz_dir/Cargo.toml" ]] || die "no fuzz crate at $fuzz_dir"

target_dir="${FUZZ_TARGET_DIR:-/var/tmp/switchboard-fuzz-target}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
export CARGO_TARGET_DIR="$target_dir"
nice_=(nice -n 19)

command -v cargo >/dev/null || die "cargo not found on PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz missing, installing it (cargo install cargo-fuzz --locked)" >&2
    # Without CARGO_TARGET_DIR, cargo install builds in a temporary directory.
    env -u CARGO_TARGET_DIR "${nice_[@]}" cargo install cargo-fuzz --locked -j "$CARGO_BUILD_JOBS" \
        || die "cargo install cargo-fuzz failed"
    cargo fuzz --version >/dev/null 2>&1 || die "cargo-fuzz installed but 'cargo fuzz' still does not run"
fi
echo "fuzz.sh: $(cargo fuzz --version), $(rustc --version), target dir $target_dir" >&2

cd "$root"
fuzz_common=(--fuzz-dir "$fuzz_dir" --target-dir "$target_dir" --sanitizer "$sanitizer")

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir") || die "cargo fuzz list failed"
fi
[[ ${#targets[@]} -gt 0 ]] || die "no fuzz targets found in $fuzz_dir"

# Targets built like the server's release binary, without debug assertions:
# yrs debug-asserts that a Yjs client id fits in 53 bits, and a client chooses
# its id, so with debug assertions that assertion is all the fuzzer would find.
# Release builds (the server's) mask the id instead; the other targets keep
# debug assertions and overflow checks.
release_targets=" collab_message "
build_flags() {
    if [[ "$release_targets" == *" $1 "* ]]; then echo "-O"; fi
}
# yrs also reserves by the lengths an update declares, with `try_reserve`: a
# reservation the system cannot give fails with an error, and one it gives is
# not touched until entries are read, so it costs address space, not memory.
# For those targets libFuzzer's malloc-size limit is lifted and ASan returns
# null like the system does; the RSS limit (2 GB) still catches real growth.
run_flags() {
    if [[ "$release_targets" == *" $1 "* ]]; then echo "-malloc_limit_mb=1048576"; fi
}
asan_options() {
    if [[ "$release_targets" == *" $1 "* ]]; then echo "allocator_may_return_null=1"; fi
}

for t in "${targets[@]}"; do
    echo "fuzz.sh: building $t (sanitizer: $sanitizer) $(build_flags "$t")" >&2
    # shellcheck disable=SC2046
    "${nice_[@]}" cargo fuzz build "${fuzz_common[@]}" $(build_flags "$t") "$t" >&2 \
        || die "cargo fuzz build $t failed"
done

mkdir -p "$fuzz_dir/logs"
crashed=0
for t in "${targets[@]}"; do
    seeds="$fuzz_dir/seeds/$t"
    corpus="$fuzz_dir/corpus/$t"
    log="$fuzz_dir/logs/$t.log"
    [[ -d "$seeds" ]] || die "no seed directory $seeds"
    mkdir -p "$corpus"

    echo "fuzz.sh: running $t for $secs s (log: $log)" >&2
    start=$(date +%s)
    rc=0
    # libFuzzer writes new inputs only into the first corpus dir; seeds stay untouched.
    # shellcheck disable=SC2046
    ASAN_OPTIONS="$(asan_options "$t")" "${nice_[@]}" cargo fuzz run "${fuzz_common[@]}" $(build_flags "$t") "$t" "$corpus" "$seeds" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 $(run_flags "$t") >"$log" 2>&1 || rc=$?
    wall=$(($(date +%s) - start))

    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    fuzzed=$(sed -n 's/^Done [0-9][0-9]* runs in \([0-9][0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)

    if [[ -n "$artifact" ]]; then
        crashed=1
        echo "$t: CRASH after ${wall} s, ${execs:-?} execs: $artifact"
        # The panic message and location, plus how to reproduce it.
        { grep -m 1 -A 3 "panicked at" "$log" \
            || grep -m 1 -A 2 -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)" "$log"; } \
            | sed "s/^/  $t: /" >&2 || true
        echo "  $t: reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t $artifact   (log: $log)" >&2
    elif [[ $rc -ne 0 ]]; then
        tail -n 30 "$log" >&2
        die "$t: cargo fuzz run exited $rc without a crash artifact (see $log)"
    elif [[ -z "$execs" ]]; then
        tail -n 30 "$log" >&2
        die "$t: no libFuzzer final stats in $log"
    else
        echo "$t: ran ${fuzzed:-$wall} s clean, $execs execs"
    fi
done

exit "$crashed"
