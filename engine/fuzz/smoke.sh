#!/usr/bin/env bash
# Fuzz smoke: runs every fuzz target of the engine for a few seconds, so that
# `make test` catches a decoder that panics on easy inputs and keeps the
# targets building. It is not a fuzzing campaign: for that, run a target
# by hand for hours (see README.md).
#
# Works on the stable toolchain alone: cargo-fuzz drives libFuzzer with
# `--sanitizer none` (the sanitizers would need nightly; the decoders are
# safe Rust, so panics and failed assertions are what we are after).
# Installs cargo-fuzz from crates.io when it is missing.
#
# Bounded: FUZZ_SMOKE_SECONDS (default 12) per target, via libFuzzer's
# -max_total_time; each run starts from the committed seeds in a throwaway
# corpus directory, so the work tree is left as it was.
# Exits non-zero if a target fails to build or finds a crash; libFuzzer then
# prints the input it saved under engine/fuzz/artifacts/<target>/.
set -euo pipefail

# cargo-fuzz works from the crate that owns the fuzz/ directory.
fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$fuzz_dir/.."

# The version smoke.sh was measured with; any installed cargo-fuzz is used
# as it is.
CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET=${FUZZ_SMOKE_SECONDS:-12}
# One input taking this long is a hang, reported as a failure.
INPUT_TIMEOUT_S=5

started=$(date +%s)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
cargo fuzz --version

# `--dev` with the fuzz package's [profile.dev]: only the code the targets
# run is optimised, which cuts the build (most of this script's time) by a
# third at the same executions per second as `--release`. Debug assertions
# stay on either way.
BUILD_FLAGS=(--sanitizer none --dev)

# Build every target once up front, so a build failure is reported as such
# and the timed runs below measure fuzzing, not compiling.
cargo fuzz build "${BUILD_FLAGS[@]}"

corpus_root=$(mktemp -d)
trap 'rm -rf "$corpus_root"' EXIT

targets=$(cargo fuzz list)
for target in $targets; do
    corpus="$corpus_root/$target"
    mkdir -p "$corpus"
    corpora=("$corpus")
    if [ -d "$fuzz_dir/seeds/$target" ]; then
        corpora+=("$fuzz_dir/seeds/$target")
    fi
    options=(
        "-max_total_time=$SECONDS_PER_TARGET"
        "-timeout=$INPUT_TIMEOUT_S"
        "-print_final_stats=1"
    )
    # No -max_len: libFuzzer then allows inputs as large as the largest
    # seed (at least 4 KiB), which is what each target needs: a segment
    # header and a record for record_decode, a whole image for index_load.
    if [ -f "$fuzz_dir/$target.dict" ]; then
        options+=("-dict=$fuzz_dir/$target.dict")
    fi
    echo "fuzz smoke: $target for ${SECONDS_PER_TARGET}s"
    if ! cargo fuzz run "${BUILD_FLAGS[@]}" "$target" "${corpora[@]}" -- "${options[@]}"; then
        echo "fuzz smoke: $target FAILED (reproducer under engine/fuzz/artifacts/$target/)" >&2
        exit 1
    fi
done

echo "fuzz smoke: $(echo "$targets" | wc -w) targets, no crash, $(($(date +%s) - started))s"
