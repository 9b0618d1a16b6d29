# Sourced by load.sh and pgo.sh: a scratch directory, the background processes they start
# (stopped, and the directory removed, on exit), and waiting for a process's start-up line.
# Set SCRIPT (the name in messages) before sourcing.

WORK=$(mktemp -d "${TMPDIR:-/tmp}/compresh-$SCRIPT.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Wait (bounded) until FILE contains a line matching REGEX; print the first match.
wait_for_line() {
    local file=$1 regex=$2 what=$3
    for _ in $(seq 1 100); do
        if grep -Eo "$regex" "$file" 2>/dev/null | head -1 | grep .; then
            return 0
        fi
        sleep 0.1
    done
    echo "$SCRIPT.sh: $what did not start; its output:" >&2
    cat "$file" >&2 || true
    return 1
}
