#!/usr/bin/env bash
# Proxy-overhead benchmark, in one run on one machine, with one load tool (benches/src/bin/loadgen.rs)
# against one mock provider (tests/mock, `mock-provider`):
#   (a) client -> mock                       (direct)
#   (b) client -> compresh -> mock           (real key, auth, rate-limit headers, usage recording)
#   (b') client -> compresh --no-raw-lane -> mock  (the same gateway serving every request with
#                                             hyper: what the raw HTTP/1.1 lane buys)
#   (b'') client -> compresh --upstream-poll-us -> mock  (the same gateway polling for the
#                                             mock's answers instead of sleeping; POLL_US)
#   (c) client -> nginx proxy_pass -> mock   (reference reverse proxy)
#   (h) client -> hyper-proxy -> mock        (the floor: hyper server + pooled client, no work;
#                                             benches/src/bin/hyper-proxy.rs)
#   (r) client -> raw-proxy -> mock          (the raw floor: tokio sockets + httparse, no hyper;
#                                             benches/src/bin/raw-proxy.rs)
# at fixed open-loop rates and at max throughput, plus stream time-to-first-byte and the
# gateway's RSS idle and under load. Writes the measured block of benches/RESULTS.md.
#
#   benches/load.sh            full run (release build, ~14 minutes), updates benches/RESULTS.md
#   benches/load.sh --smoke    a few seconds at one low rate (debug build; nginx only if installed);
#                              fails on any error; writes nothing into the tree (for .ci/run)
#   benches/load.sh --pin      the load tool and the mock on the first half of the CPUs, the proxy
#                              under test on the other half (taskset; nginx gets one worker per
#                              CPU of its half), so the proxy no longer competes with the client
#                              for a core. Writes its own block of benches/RESULTS.md. Combines
#                              with --smoke.
#   benches/load.sh --pgo      also measure the profile-guided build (benches/pgo.sh, built first;
#                              ~10 more minutes) as `compresh-pgo`, on the same data dir and key.
#                              Combines with --smoke (pgo.sh --smoke) and --pin.
#
# Environment: RATES="500 1000 2000 4000", ROUNDS=3, DURATION=5, WARMUP=2, CONNECTIONS=32,
# POLL_US=200 (compresh-poll's --upstream-poll-us),
# NO_NGINX=1, ONLY="direct compresh nginx" (measure only these targets: more rounds of the goal's
# comparison in the same time). Every cell is measured ROUNDS times, DURATION seconds each, the
# targets interleaved round by round; the report gives the median over the rounds and each
# round's p99.
# Everything listens on 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
PIN=0
PGO=0
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        --pin) PIN=1 ;;
        --pgo) PGO=1 ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        *) echo "load.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

if [[ $SMOKE == 1 ]]; then
    PROFILE_DIR=target/debug
    BUILD_FLAGS=()
    RATES=${RATES:-200}
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-1}
    WARMUP=${WARMUP:-0.25}
    MAX_DURATION=${MAX_DURATION:-1}
    STREAM_RATE=${STREAM_RATE:-100}
else
    PROFILE_DIR=target/release
    BUILD_FLAGS=(--release)
    RATES=${RATES:-500 1000 2000 4000}
    # Several short rounds instead of one long run per cell: a burst of host steal (this
    # machine's other tenants) then spoils one round of one target, not the target's only
    # number. p99 of identical single runs moved by 20-50 % here.
    ROUNDS=${ROUNDS:-3}
    DURATION=${DURATION:-5}
    WARMUP=${WARMUP:-2}
    MAX_DURATION=${MAX_DURATION:-5}
    STREAM_RATE=${STREAM_RATE:-500}
fi
CONNECTIONS=${CONNECTIONS:-32}
POLL_US=${POLL_US:-200}

# Pinned: the client side (load tool, mock provider) and the proxy side (the proxy under test)
# each get half of the CPUs. Each command is prefixed with its side's `taskset`; unpinned, the
# prefixes are empty and everything shares every CPU.
CLIENT_SIDE=()
PROXY_SIDE=()
NGINX_WORKERS=auto
PINNING=""
if [[ $PIN == 1 ]]; then
    CPUS=$(nproc)
    if ((CPUS < 2)); then
        echo "load.sh: --pin needs at least 2 CPUs, this machine has $CPUS" >&2
        exit 2
    fi
    HALF=$((CPUS / 2))
    cpu_range() { if (($1 == $2)); then echo "$1"; else echo "$1-$2"; fi; }
    CLIENT_CPUS=$(cpu_range 0 $((HALF - 1)))
    PROXY_CPUS=$(cpu_range "$HALF" $((CPUS - 1)))
    CLIENT_SIDE=(taskset -c "$CLIENT_CPUS")
    PROXY_SIDE=(taskset -c "$PROXY_CPUS")
    # nginx 1.22 counts every online CPU for `auto`, not the ones it may run on.
    NGINX_WORKERS=$((CPUS - HALF))
    PINNING="load tool and mock provider on CPU $CLIENT_CPUS, the proxy under test on CPU $PROXY_CPUS ($NGINX_WORKERS nginx worker(s))"
fi
export PINNING

echo "== build (${BUILD_FLAGS[*]:-debug})" >&2
cargo build --locked "${BUILD_FLAGS[@]}" -p compresh -p compresh-mock -p compresh-benches --bins >&2
COMPRESH=$PROFILE_DIR/compresh
MOCK=$PROFILE_DIR/mock-provider
LOADGEN=$PROFILE_DIR/loadgen
HYPER_PROXY=$PROFILE_DIR/hyper-proxy
RAW_PROXY=$PROFILE_DIR/raw-proxy
if [[ $PGO == 1 ]]; then
    echo "== profile-guided build (benches/pgo.sh)" >&2
    if [[ $SMOKE == 1 ]]; then bash benches/pgo.sh --smoke; else bash benches/pgo.sh; fi
    COMPRESH_PGO=target/pgo/compresh
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
export LOAD_START
SCRIPT=load
# shellcheck source=benches/processes.sh
source benches/processes.sh

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# CPU time (user + system, clock ticks) of the given processes, all their threads included.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local total=0 pid fields
    for pid in "$@"; do
        # Fields 14 and 15 of /proc/PID/stat; the command name (field 2) has no spaces here.
        read -r -a fields <"/proc/$pid/stat" || continue
        total=$((total + fields[13] + fields[14]))
    done
    echo "$total"
}
# The process doing the proxying (or, for direct, the serving) on each path.
serving_pids() {
    case $1 in
        direct) echo "$MOCK_PID" ;;
        compresh) echo "$GATEWAY_PID" ;;
        compresh-pgo) echo "$PGO_PID" ;;
        compresh-poll) echo "$POLL_PID" ;;
        compresh-hyper) echo "$HYPER_PATH_PID" ;;
        hyper) echo "$HYPER_PID" ;;
        raw) echo "$RAW_PID" ;;
        nginx) echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true) ;;
    esac
}

# "steal total" jiffies of all CPUs from /proc/stat: steal is time the hypervisor gave this
# machine's CPUs to other guests, which shows up as latency no proxy caused.
host_steal() {
    awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat
}

rss_kb() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}
hwm_kb() {
    awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}

# --- mock provider
"${CLIENT_SIDE[@]}" "$MOCK" --listen 127.0.0.1:0 >"$WORK/mock.out" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
MOCK_ADDR=$(wait_for_line "$WORK/mock.out" '127\.0\.0\.1:[0-9]+' "mock-provider")
echo "mock-provider on $MOCK_ADDR" >&2

# --- compresh, fresh data dir; the first-start banner's key is not used (plan limit 2,000/min)
DATA=$WORK/data
"${PROXY_SIDE[@]}" "$COMPRESH" --data-dir "$DATA" serve --listen 127.0.0.1:0 >"$WORK/compresh.out" 2>"$WORK/compresh.log" &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
GATEWAY_ADDR=$(wait_for_line "$WORK/compresh.out" 'listening on http://127\.0\.0\.1:[0-9]+' "compresh" | sed 's|.*http://||')
echo "compresh on $GATEWAY_ADDR (pid $GATEWAY_PID)" >&2
echo "sk-bench-not-a-real-key" | "$COMPRESH" --data-dir "$DATA" providers set openai --kind openai \
    --base-url "http://$MOCK_ADDR/v1" >&2
KEY=$("$COMPRESH" --data-dir "$DATA" keys create --name bench --rpm 100000000 2>/dev/null)
export LOADGEN_KEY=$KEY # read by loadgen (--key), so the key is not on any command line
# The running server picks up CLI changes within a second.
sleep 1.2

# --- the profile-guided build of the same gateway, sharing the data dir
if [[ $PGO == 1 ]]; then
    "${PROXY_SIDE[@]}" "$COMPRESH_PGO" --data-dir "$DATA" serve --listen 127.0.0.1:0 \
        >"$WORK/compresh-pgo.out" 2>"$WORK/compresh-pgo.log" &
    PGO_PID=$!
    PIDS+=("$PGO_PID")
    PGO_ADDR=$(wait_for_line "$WORK/compresh-pgo.out" 'listening on http://127\.0\.0\.1:[0-9]+' "compresh (PGO build)" | sed 's|.*http://||')
    echo "compresh (PGO build) on $PGO_ADDR (pid $PGO_PID)" >&2
fi

# --- the same gateway polling for the mock's answers instead of sleeping (--upstream-poll-us)
"${PROXY_SIDE[@]}" "$COMPRESH" --data-dir "$DATA" serve --listen 127.0.0.1:0 --upstream-poll-us "$POLL_US" \
    >"$WORK/compresh-poll.out" 2>"$WORK/compresh-poll.log" &
POLL_PID=$!
PIDS+=("$POLL_PID")
POLL_ADDR=$(wait_for_line "$WORK/compresh-poll.out" 'listening on http://127\.0\.0\.1:[0-9]+' "compresh --upstream-poll-us" | sed 's|.*http://||')
echo "compresh --upstream-poll-us $POLL_US on $POLL_ADDR (pid $POLL_PID)" >&2

# --- the same gateway on its hyper path, sharing the data dir (and so the key and provider)
"${PROXY_SIDE[@]}" "$COMPRESH" --data-dir "$DATA" serve --listen 127.0.0.1:0 --no-raw-lane \
    >"$WORK/compresh-hyper.out" 2>"$WORK/compresh-hyper.log" &
HYPER_PATH_PID=$!
PIDS+=("$HYPER_PATH_PID")
HYPER_PATH_ADDR=$(wait_for_line "$WORK/compresh-hyper.out" 'listening on http://127\.0\.0\.1:[0-9]+' "compresh --no-raw-lane" | sed 's|.*http://||')
echo "compresh --no-raw-lane on $HYPER_PATH_ADDR (pid $HYPER_PATH_PID)" >&2

# --- the hyper floor: same server and client parts as compresh, none of its work
"${PROXY_SIDE[@]}" "$HYPER_PROXY" --upstream "$MOCK_ADDR" >"$WORK/hyper.out" 2>&1 &
HYPER_PID=$!
PIDS+=("$HYPER_PID")
HYPER_ADDR=$(wait_for_line "$WORK/hyper.out" 'listening on http://127\.0\.0\.1:[0-9]+' "hyper-proxy" | sed 's|.*http://||')
echo "hyper-proxy on $HYPER_ADDR" >&2

# --- the raw floor: the same proxying on tokio's sockets without hyper
"${PROXY_SIDE[@]}" "$RAW_PROXY" --upstream "$MOCK_ADDR" >"$WORK/raw.out" 2>&1 &
RAW_PID=$!
PIDS+=("$RAW_PID")
RAW_ADDR=$(wait_for_line "$WORK/raw.out" 'listening on http://127\.0\.0\.1:[0-9]+' "raw-proxy" | sed 's|.*http://||')
echo "raw-proxy on $RAW_ADDR" >&2

# --- nginx (installed from Debian's packages when missing; NO_NGINX=1 leaves it out)
NGINX_ADDR=""
if [[ ${NO_NGINX:-0} != 1 ]]; then
    if ! command -v nginx >/dev/null; then
        echo "== installing nginx-light" >&2
        (apt-get install -y nginx-light || (apt-get update && apt-get install -y nginx-light)) >&2 \
            || echo "load.sh: cannot install nginx; running without (c)" >&2
    fi
    if command -v nginx >/dev/null; then
        NGINX_DIR=$WORK/nginx
        mkdir -p "$NGINX_DIR/logs"
        NGINX_PORT=$(free_port)
        cat >"$NGINX_DIR/nginx.conf" <<EOF
daemon off;
worker_processes $NGINX_WORKERS;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $NGINX_DIR/body;
    proxy_temp_path $NGINX_DIR/proxy;
    fastcgi_temp_path $NGINX_DIR/fastcgi;
    uwsgi_temp_path $NGINX_DIR/uwsgi;
    scgi_temp_path $NGINX_DIR/scgi;
    upstream mock {
        server $MOCK_ADDR;
        keepalive 64;
        # Reuse upstream connections as long as the gateway's pool does (default: 1000).
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # What LLM deployments use so SSE streams are not held back.
            proxy_buffering off;
        }
    }
}
EOF
        "${PROXY_SIDE[@]}" nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" >"$WORK/nginx.out" 2>&1 &
        NGINX_PID=$!
        PIDS+=("$NGINX_PID")
        for _ in $(seq 1 50); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null; then
                NGINX_ADDR=127.0.0.1:$NGINX_PORT
                break
            fi
            sleep 0.1
        done
        [[ -n $NGINX_ADDR ]] || { echo "load.sh: nginx did not start" >&2; cat "$WORK/nginx.out" "$NGINX_DIR/logs/error.log" >&2; exit 1; }
        echo "nginx on $NGINX_ADDR" >&2
    fi
fi

TARGETS=(direct compresh)
[[ $PGO == 1 ]] && TARGETS+=(compresh-pgo)
TARGETS+=(compresh-poll compresh-hyper hyper raw)
[[ -n $NGINX_ADDR ]] && TARGETS+=(nginx)
if [[ -n ${ONLY:-} ]]; then
    CHOSEN=()
    for target in "${TARGETS[@]}"; do
        [[ " $ONLY " == *" $target "* ]] && CHOSEN+=("$target")
    done
    ((${#CHOSEN[@]} > 0)) || { echo "load.sh: ONLY=\"$ONLY\" names none of: ${TARGETS[*]}" >&2; exit 2; }
    TARGETS=("${CHOSEN[@]}")
fi
url_of() {
    case $1 in
        direct) echo "http://$MOCK_ADDR/v1/chat/completions" ;;
        compresh) echo "http://$GATEWAY_ADDR/v1/chat/completions" ;;
        compresh-pgo) echo "http://$PGO_ADDR/v1/chat/completions" ;;
        compresh-poll) echo "http://$POLL_ADDR/v1/chat/completions" ;;
        compresh-hyper) echo "http://$HYPER_PATH_ADDR/v1/chat/completions" ;;
        hyper) echo "http://$HYPER_ADDR/v1/chat/completions" ;;
        raw) echo "http://$RAW_ADDR/v1/chat/completions" ;;
        nginx) echo "http://$NGINX_ADDR/v1/chat/completions" ;;
    esac
}

RESULTS=$WORK/results.txt
: >"$RESULTS"
# One loadgen run; its result line goes to $RESULTS with the gateway's peak RSS when the target is compresh.
run() {
    local target=$1 mode=$2 round=$3
    shift 3
    local peak=0
    # Peak RSS comes from the kernel's high-water mark (VmHWM), reset before the run, not from
    # polling: a shell loop forking `awk` and `sleep` four times a second ran only during the
    # gateway's cells and, on 2 CPUs, alone put its p99 at ~1.1 ms (benches/RESULTS.md).
    if [[ $target == compresh ]]; then
        # "5" resets the peak to the current RSS (Linux >= 4.0); if refused, VmHWM is the
        # peak since start, still an upper bound of the peak under load.
        echo 5 >"/proc/$GATEWAY_PID/clear_refs" 2>/dev/null || true
    fi
    local line pids cpu_before cpu_after steal_before steal_after
    pids=$(serving_pids "$target")
    # shellcheck disable=SC2086 # a list of pids
    cpu_before=$(cpu_ticks $pids)
    steal_before=$(host_steal)
    line=$("${CLIENT_SIDE[@]}" "$LOADGEN" --url "$(url_of "$target")" --label "$target" --connections "$CONNECTIONS" "$@")
    # shellcheck disable=SC2086
    cpu_after=$(cpu_ticks $pids)
    steal_after=$(host_steal)
    if [[ $target == compresh ]]; then
        peak=$(hwm_kb "$GATEWAY_PID")
    fi
    local cpu_ms=$(((cpu_after - cpu_before) * 1000 / CLK_TCK))
    local steal_pct
    # shellcheck disable=SC2086 # two numbers each
    steal_pct=$(echo $steal_before $steal_after | awk '{d = $4 - $2; printf "%.1f", (d > 0 ? 100 * ($3 - $1) / d : 0)}')
    echo "$mode $line round=$round rss_kb=$peak cpu_ms=$cpu_ms steal_pct=$steal_pct warmup=$WARMUP duration=$DURATION" | tee -a "$RESULTS" >&2
}

# One request through the gateway so that idle RSS is measured with the key, the provider and the
# upstream pool initialised (the state it idles in between bursts).
"${CLIENT_SIDE[@]}" "$LOADGEN" --url "$(url_of compresh)" --rate 10 --duration 0.5 --warmup 0 --connections 1 >/dev/null
sleep 0.5
IDLE_RSS=$(rss_kb "$GATEWAY_PID")

# Interleave the targets in every round at each rate, so drift on the shared machine hits all
# of them alike. Each fixed-rate run also leaves a trace (every request's send time and latency)
# for the report's stall counts; they stay in target/load-traces for `benches/stalls.py`.
TRACES=target/load-traces
[[ $PIN == 1 ]] && TRACES=target/load-traces-pinned
rm -rf "$TRACES"
mkdir -p "$TRACES"
for rate in $RATES; do
    for round in $(seq 1 "$ROUNDS"); do
        for target in "${TARGETS[@]}"; do
            run "$target" rate "$round" --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" \
                --trace "$TRACES/$rate.$target.$round"
        done
    done
done
for round in $(seq 1 "$ROUNDS"); do
    for target in "${TARGETS[@]}"; do
        run "$target" max "$round" --max --duration "$MAX_DURATION" --warmup "$WARMUP"
    done
done
for round in $(seq 1 "$ROUNDS"); do
    for target in "${TARGETS[@]}"; do
        run "$target" stream "$round" --rate "$STREAM_RATE" --stream --duration "$DURATION" --warmup "$WARMUP"
    done
done
LOADED_RSS=$(rss_kb "$GATEWAY_PID")

if [[ $SMOKE == 1 ]]; then
    OUT=$WORK/RESULTS.md
else
    OUT=benches/RESULTS.md
fi
python3 benches/report.py "$RESULTS" "$OUT" "$IDLE_RSS" "$RATES" "$SMOKE" "$TRACES"
if [[ $SMOKE == 1 ]]; then
    cat "$OUT"
    # Fail loudly if anything errored or nothing got through: the smoke run exists so this
    # benchmark cannot silently rot.
    if grep -Eq 'errors=[1-9]|ok=0 ' "$RESULTS"; then
        echo "load.sh --smoke: FAILED: requests errored (see lines above)" >&2
        exit 1
    fi
    echo "load.sh --smoke: ok" >&2
else
    echo "wrote $OUT (gateway RSS now ${LOADED_RSS} kB)" >&2
fi
