#!/usr/bin/env bash
# The dashboard in a real browser: Debian's headless Chromium driven by playwright-core, against
# the real gateway binary (COMPRESH_SIGNUP=open) and the Rust mock provider, both on loopback.
# Screenshots of every page land in dashboard-tests/output/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}/debug

if [ ! -x /usr/bin/chromium ]; then
  apt-get update && apt-get install -y chromium
fi
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
if [ ! -x "$target/compresh" ] || [ ! -x "$target/mock-provider" ] || [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$root" && cargo build --locked -p compresh -p compresh-mock --bins)
fi

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$target/mock-provider" --listen 127.0.0.1:0 > "$work/mock.out" &
pids+=($!)
for _ in $(seq 100); do grep -qs listening "$work/mock.out" && break; sleep 0.1; done
mock=$(sed -n 's/^listening on //p' "$work/mock.out")

COMPRESH_SIGNUP=open "$target/compresh" --data-dir "$work/data" serve --listen 127.0.0.1:0 \
  > "$work/gw.out" 2> "$work/gw.err" &
pids+=($!)
for _ in $(seq 100); do grep -qs "compresh listening" "$work/gw.out" && break; sleep 0.1; done
gateway=$(sed -n 's/^compresh listening on //p' "$work/gw.out")
if [ -z "$gateway" ] || [ -z "$mock" ]; then
  echo "gateway or mock did not start"; cat "$work/gw.err"; exit 1
fi

mkdir -p "$here/output"
status=0
GATEWAY_URL="$gateway" MOCK_URL="$mock" OUTPUT_DIR="$here/output" \
  node --test "$here/journey.test.mjs" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- gateway log"; tail -n 50 "$work/gw.err"
fi
exit "$status"
