#!/usr/bin/env bash
# Official-SDK compatibility: a venv with `openai` and `anthropic`, the Rust mock provider and the
# real gateway binary on loopback, then sdk_compat.py against them. Needs a built workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check openai anthropic

"$target/mock-provider" --listen 127.0.0.1:0 > "$work/mock.out" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/mock.out" && break; sleep 0.1; done
mock=$(sed -n 's/^listening on //p' "$work/mock.out")

data="$work/data"
OPENAI_API_KEY=sk-sdk-test-openai "$target/compresh" --data-dir "$data" serve --listen 127.0.0.1:0 \
  > "$work/gw.out" 2> "$work/gw.err" &
pids+=($!)
for _ in $(seq 100); do grep -q "compresh listening" "$work/gw.out" && break; sleep 0.1; done
gateway=$(sed -n 's/^compresh listening on //p' "$work/gw.out")
key=$(grep -o 'comp_[0-9A-Za-z]\{27\}' "$work/gw.out" | head -n1)

echo sk-sdk-test-openai | "$target/compresh" --data-dir "$data" providers set openai --base-url "$mock/v1"
echo sk-sdk-test-anthropic | "$target/compresh" --data-dir "$data" providers set anthropic --base-url "$mock"
sleep 1.2  # a running server picks up CLI changes within a second

.venv/bin/python sdk-tests/sdk_compat.py "$gateway" "$key"
