#!/usr/bin/env bash
# Profile-guided release build of the gateway, written to target/pgo/compresh.
#
#   benches/pgo.sh           release profile (fat LTO): two full builds, ~10 minutes on 2 CPUs
#   benches/pgo.sh --smoke   the `pgo-smoke` profile (opt-level 1, no LTO): the same steps in
#                            ~4 minutes, so the pipeline cannot silently rot (for .ci/run)
#
# 1. build compresh instrumented (-Cprofile-generate);
# 2. train it: the load tool's OpenAI SDK requests, plain and streamed, at fixed rates and
#    closed-loop, from the mock provider, on the raw lane and on the hyper path
#    (`--no-raw-lane`), plus the CLI calls that set the run up;
# 3. merge the profile with the llvm-profdata of rustc's own LLVM version (installed from
#    Debian's packages when missing: llvm-N; or set LLVM_PROFDATA);
# 4. build compresh again with -Cprofile-use, and check the result serves requests.
#
# Why: at the request rates of a gateway, caches go cold between requests, and the profile
# lets LLVM lay out and inline the hot path by what actually runs (benches/RESULTS.md, twelfth
# pass). The training traffic is plain HTTP to the mock: code it does not reach (TLS to an
# https:// provider, the admin API, the dashboard) is laid out as cold, not left out.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "pgo.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

if [[ $SMOKE == 1 ]]; then
    PROFILE=pgo-smoke
    TOOLS_FLAGS=()
    TOOLS_DIR=target/debug
    SECONDS_PER_PHASE=0.5
else
    PROFILE=release
    TOOLS_FLAGS=(--release)
    TOOLS_DIR=target/release
    SECONDS_PER_PHASE=3
fi

RUSTC_VV=$(rustc -vV)
HOST=$(sed -n 's/^host: //p' <<<"$RUSTC_VV")
LLVM_MAJOR=$(sed -n 's/^LLVM version: \([0-9]*\).*/\1/p' <<<"$RUSTC_VV")
OUT=target/pgo
RAW=$PWD/$OUT/raw
PROFDATA_FILE=$PWD/$OUT/compresh.profdata

# A raw profile is readable only by llvm-profdata of the LLVM version that wrote it.
matching_profdata() {
    local candidate
    for candidate in "${LLVM_PROFDATA:-}" \
        "$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata" \
        "llvm-profdata-$LLVM_MAJOR" llvm-profdata; do
        [[ -n $candidate ]] || continue
        command -v "$candidate" >/dev/null || continue
        if "$candidate" --version 2>/dev/null | grep -Eq "LLVM version $LLVM_MAJOR\."; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}
if ! PROFDATA=$(matching_profdata); then
    echo "== installing llvm-$LLVM_MAJOR (llvm-profdata for rustc's LLVM $LLVM_MAJOR)" >&2
    (apt-get install -y "llvm-$LLVM_MAJOR" || (apt-get update && apt-get install -y "llvm-$LLVM_MAJOR")) >&2 || true
    PROFDATA=$(matching_profdata) || {
        echo "pgo.sh: no llvm-profdata of LLVM $LLVM_MAJOR (rustc's); install llvm-$LLVM_MAJOR," \
            "or \`rustup component add llvm-tools\`, or set LLVM_PROFDATA" >&2
        exit 2
    }
fi
echo "== llvm-profdata: $PROFDATA" >&2

# Each step has its own target directory: the two builds differ in RUSTFLAGS, and sharing one
# directory would rebuild everything each time. --target keeps the flags off build scripts.
build() {
    local target_dir=$1 flag=$2
    RUSTFLAGS="${RUSTFLAGS:-} $flag" CARGO_TARGET_DIR=$target_dir \
        cargo build --locked --profile "$PROFILE" --target "$HOST" -p compresh >&2
    echo "$target_dir/$HOST/$PROFILE/compresh"
}

echo "== build the load tool and the mock provider" >&2
cargo build --locked "${TOOLS_FLAGS[@]}" -p compresh-mock -p compresh-benches --bins >&2
MOCK=$TOOLS_DIR/mock-provider
LOADGEN=$TOOLS_DIR/loadgen

SCRIPT=pgo
# shellcheck source=benches/processes.sh
source benches/processes.sh

"$MOCK" --listen 127.0.0.1:0 >"$WORK/mock.out" 2>&1 &
PIDS+=($!)
MOCK_ADDR=$(wait_for_line "$WORK/mock.out" '127\.0\.0\.1:[0-9]+' "mock-provider")

# Serve the training (or checking) traffic with BIN on a fresh data dir: every phase must
# succeed, or the profile would describe error paths. Stops the gateway with SIGTERM, so an
# instrumented binary writes its profile on the way out.
drive() {
    local bin=$1 seconds=$2 data=$WORK/data.$RANDOM
    local phases=("--rate 1000" "--rate 4000" "--rate 500 --stream" "--max")
    "$bin" --data-dir "$data" serve --listen 127.0.0.1:0 >"$WORK/gw.out" 2>"$WORK/gw.log" &
    local lane=$!
    PIDS+=("$lane")
    local lane_addr
    lane_addr=$(wait_for_line "$WORK/gw.out" 'listening on http://127\.0\.0\.1:[0-9]+' "compresh" | sed 's|.*http://||')
    echo "sk-pgo-not-a-real-key" | "$bin" --data-dir "$data" providers set openai --kind openai \
        --base-url "http://$MOCK_ADDR/v1" >/dev/null
    LOADGEN_KEY=$("$bin" --data-dir "$data" keys create --name pgo --rpm 100000000 2>/dev/null)
    export LOADGEN_KEY
    "$bin" --data-dir "$data" serve --listen 127.0.0.1:0 --no-raw-lane >"$WORK/gwh.out" 2>"$WORK/gwh.log" &
    local hyper=$!
    PIDS+=("$hyper")
    local hyper_addr
    hyper_addr=$(wait_for_line "$WORK/gwh.out" 'listening on http://127\.0\.0\.1:[0-9]+' "compresh --no-raw-lane" | sed 's|.*http://||')
    # The running servers pick up the CLI's provider and key within a second.
    sleep 1.2
    local addr phase line failed=0
    for addr in "$lane_addr" "$hyper_addr"; do
        for phase in "${phases[@]}"; do
            # shellcheck disable=SC2086 # the phase is a list of flags
            line=$("$LOADGEN" --url "http://$addr/v1/chat/completions" --label "$addr" \
                --duration "$seconds" --warmup 0 $phase)
            echo "$line" >&2
            grep -Eq ' ok=[1-9][0-9]* errors=0 ' <<<"$line" || failed=1
        done
        # The hyper path is what https:// providers use; train it with a shorter share.
        seconds=$(python3 -c "print($seconds / 3)")
    done
    kill -TERM "$lane" "$hyper"
    # One `wait` per process: `wait A B` returns B's status only.
    wait "$lane" || failed=1
    wait "$hyper" || failed=1
    return $failed
}

rm -rf "$RAW"
mkdir -p "$OUT"
echo "== instrumented build ($PROFILE)" >&2
INSTRUMENTED=$(build "$OUT/gen" "-Cprofile-generate=$RAW")
echo "== training" >&2
drive "$INSTRUMENTED" "$SECONDS_PER_PHASE" || {
    echo "pgo.sh: the training run failed" >&2
    exit 1
}
"$PROFDATA" merge -o "$PROFDATA_FILE" "$RAW"
echo "== profile: $("$PROFDATA" show "$PROFDATA_FILE" | grep -E 'Total functions' || true)" >&2
echo "== optimised build ($PROFILE)" >&2
OPTIMISED=$(build "$OUT/use" "-Cprofile-use=$PROFDATA_FILE")
cp "$OPTIMISED" "$OUT/compresh"
echo "== check: the optimised binary serves the same traffic" >&2
drive "$OUT/compresh" 0.5 || {
    echo "pgo.sh: the optimised binary failed the check" >&2
    exit 1
}
if [[ $SMOKE == 1 ]]; then
    # A smoke run only checks the steps; its two target directories would hold a gigabyte.
    rm -rf "$OUT/gen" "$OUT/use" "$RAW"
fi
echo "pgo.sh: built $OUT/compresh" >&2
