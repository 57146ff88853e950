#!/usr/bin/env bash
# proxy_bench.sh: what does agentgwd's proxy cost, next to nginx doing the same job?
#
# Runs wrk against three targets that all end at one upstream (nginx on 127.0.0.1), and
# measures a fourth, which is not a proxy:
#   direct    the upstream itself;
#   nginx     nginx as a credential-injecting reverse proxy (session check, Bearer
#             injection, keep-alive pool, no buffering);
#   agentgwd  agentgwd's /api/bench/... with a session from POST /login, its
#             authentication, rate limiting and audit all on;
#   floor     not a proxy: bench/upstream_floor, agentgwd's own upstream client (libcurl's
#             multi-socket interface on an Asio loop) alone, straight to the upstream with
#             as many exchanges in flight as wrk has connections, on the servers' core. Its
#             CPU time per request is a floor under agentgwd's: the cost of the upstream
#             side with nothing of the agent side.
# Workloads: small GET at 1, 32 and 256 connections, a 4 KiB POST at 32, a 1 MiB
# response at 32; and, on the two proxies only, a small answer each makes itself (GET
# /healthz, no upstream) at 32: what serving the agent's side of HTTP alone costs. wrk runs
# on one core, every server on the other. The targets alternate within each round; the
# report gives medians over the rounds as Markdown tables.
#
# Usage: bench/proxy_bench.sh [--rounds N] [--duration S] [--bin-dir DIR] [--out FILE]
#        (see --help). Everything runs in a temp dir that is removed at exit.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
readonly SCRIPT_DIR REPO_DIR

# ---------------------------------------------------------------------------- settings

ROUNDS=3
DURATION=10
WARMUP=1
BIN_DIR=$REPO_DIR/build
OUT=""
TARGET_LIST="direct,nginx,agentgwd,floor"
LOG_LEVEL=info
WRK_CPU=0
SERVER_CPU=1
KEEP_TMP=0

readonly SECRET="sk-bench-secret"
readonly SERVICE="bench"
readonly AGENT_NAME="bench-agent"
readonly SMALL_JSON='{"id":"bench-0001","created":1700000000,"model":"bench-small","status":"ok","choices":[{"index":0,"text":"The quick brown fox jumps over the lazy dog."}],"usage":{"prompt_tokens":12,"completion_tokens":9}}'
readonly LARGE_BYTES=1048576
readonly POST_BYTES=4096
readonly ALL_WORKLOADS="small-c1,small-c32,small-c256,post4k-c32,large-c32,local-c32"
WORKLOAD_LIST=$ALL_WORKLOADS

# Filled in at run time.
WORK=""              # temp dir
PIDS=()              # servers this script started, stopped by cleanup()
WRK_PID=""           # the measured run in progress (wrk or upstream_floor), if any
TARGETS=()
WORKLOADS=()
UP_PORT="" NGX_PORT="" AGW_PORT=""
UP_PID="" NGX_PID="" AGW_PID=""
NGX_SESSION="" AGW_SESSION=""
NGINX="" AGW_DAEMON="" AGW_CLI="" AGW_SOCKET="" FLOOR=""
CLK_TCK=100

usage() {
    cat <<EOF
Usage: $(basename "$0") [OPTIONS]

Benchmark agentgwd's proxy against nginx doing the same job, and against the upstream.

Options:
  --rounds N          rounds; each runs every workload on every target (default $ROUNDS)
  --duration S        seconds per wrk run (default $DURATION)
  --warmup S          seconds of warm-up per workload and target before round 1
                      (default $WARMUP; 0 skips it)
  --bin-dir DIR       build tree holding daemon/agentgwd, cli/agentgw and
                      bench/upstream_floor (default $REPO_DIR/build)
  --targets LIST      comma-separated subset of direct,nginx,agentgwd,floor (default all)
  --workloads LIST    comma-separated subset of $ALL_WORKLOADS
                      (default all)
  --out FILE          also write the report to FILE
  --log-level LEVEL   agentgwd's --log-level (default $LOG_LEVEL)
  --wrk-cpu N         core for wrk (default $WRK_CPU)
  --server-cpu N      core for nginx and agentgwd (default $SERVER_CPU)
  --keep-tmp          keep the temp dir (configs, logs, raw wrk output)
  -h, --help          show this help
EOF
}

die() {
    echo "proxy_bench: error: $*" >&2
    exit 1
}

log() {
    echo "proxy_bench: $*" >&2
}

is_uint() {
    [[ $1 =~ ^[0-9]+$ ]]
}

is_positive() {
    [[ $1 =~ ^[1-9][0-9]*$ ]]
}

parse_args() {
    while (($#)); do
        case $1 in
            --rounds) ROUNDS=${2:?--rounds needs a value}; shift ;;
            --duration) DURATION=${2:?--duration needs a value}; shift ;;
            --warmup) WARMUP=${2:?--warmup needs a value}; shift ;;
            --bin-dir) BIN_DIR=${2:?--bin-dir needs a value}; shift ;;
            --targets) TARGET_LIST=${2:?--targets needs a value}; shift ;;
            --workloads) WORKLOAD_LIST=${2:?--workloads needs a value}; shift ;;
            --out) OUT=${2:?--out needs a value}; shift ;;
            --log-level) LOG_LEVEL=${2:?--log-level needs a value}; shift ;;
            --wrk-cpu) WRK_CPU=${2:?--wrk-cpu needs a value}; shift ;;
            --server-cpu) SERVER_CPU=${2:?--server-cpu needs a value}; shift ;;
            --keep-tmp) KEEP_TMP=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
        shift
    done
    is_positive "$ROUNDS" || die "--rounds must be a positive integer"
    is_positive "$DURATION" || die "--duration must be a positive integer"
    is_uint "$WARMUP" || die "--warmup must be a non-negative integer"
    is_uint "$WRK_CPU" || die "--wrk-cpu must be a core number"
    is_uint "$SERVER_CPU" || die "--server-cpu must be a core number"

    local t
    IFS=, read -r -a TARGETS <<<"$TARGET_LIST"
    ((${#TARGETS[@]})) || die "--targets is empty"
    for t in "${TARGETS[@]}"; do
        case $t in
            direct | nginx | agentgwd | floor) ;;
            *) die "unknown target '$t' (direct, nginx, agentgwd, floor)" ;;
        esac
    done
    IFS=, read -r -a WORKLOADS <<<"$WORKLOAD_LIST"
    ((${#WORKLOADS[@]})) || die "--workloads is empty"
    for t in "${WORKLOADS[@]}"; do
        [[ ,$ALL_WORKLOADS, == *",$t,"* ]] || die "unknown workload '$t' ($ALL_WORKLOADS)"
    done
}

has_target() {
    local t
    for t in "${TARGETS[@]}"; do
        [[ $t == "$1" ]] && return 0
    done
    return 1
}

# ---------------------------------------------------------------------------- tools

# Installs what is missing with apt-get when run as root; otherwise names it and stops.
ensure_tools() {
    local -A package_of=([wrk]=wrk [nginx]=nginx [curl]=curl [python3]=python3
        [taskset]=util-linux [pgrep]=procps [getconf]=libc-bin)
    local tool missing=()
    for tool in "${!package_of[@]}"; do
        if ! command -v "$tool" >/dev/null && ! [[ $tool == nginx && -x /usr/sbin/nginx ]]; then
            missing+=("${package_of[$tool]}")
        fi
    done
    if ((${#missing[@]})); then
        if ((EUID != 0)); then
            die "missing packages: ${missing[*]} (run as root to install them, or apt-get install them)"
        fi
        log "installing ${missing[*]}"
        # Debian's nginx package may start the system nginx on installation (unless
        # policy-rc.d forbids it); this script never uses or stops that one.
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    CLK_TCK=$(getconf CLK_TCK)

    if has_target agentgwd; then
        AGW_DAEMON=$BIN_DIR/daemon/agentgwd
        AGW_CLI=$BIN_DIR/cli/agentgw
        [[ -x $AGW_DAEMON ]] || die "no agentgwd at $AGW_DAEMON (build it, or pass --bin-dir)"
        [[ -x $AGW_CLI ]] || die "no agentgw at $AGW_CLI (build it, or pass --bin-dir)"
        if [[ $(agw_build_type) == Debug ]]; then
            log "warning: $BIN_DIR is a Debug build: agentgwd's numbers will be far from a release build's"
        fi
    fi
    if has_target floor; then
        FLOOR=$BIN_DIR/bench/upstream_floor
        [[ -x $FLOOR ]] || die "no upstream_floor at $FLOOR (build it, or pass --bin-dir)"
    fi

    local cpus
    cpus=$(nproc)
    if ((cpus < 2)); then
        log "warning: only $cpus core: wrk and the servers share it"
        WRK_CPU=0 SERVER_CPU=0
    fi
    ((WRK_CPU < cpus && SERVER_CPU < cpus)) || die "cores are 0..$((cpus - 1))"
}

# ---------------------------------------------------------------------------- processes

# Stops exactly the processes this script started, then removes the temp dir.
cleanup() {
    local pid i
    trap - EXIT INT TERM
    if [[ -n $WRK_PID ]]; then
        kill -TERM "$WRK_PID" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}" $WRK_PID; do
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not stop in 10 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $WORK && -d $WORK ]]; then
        if ((KEEP_TMP)); then
            log "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
}

# start_server NAME LOG CMD...: runs CMD on the server core in the background; sets LAST_PID.
start_server() {
    local name=$1 logfile=$2
    shift 2
    taskset -c "$SERVER_CPU" "$@" >"$logfile" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    log "started $name (pid $LAST_PID)"
}

# wait_http NAME PID URL LOG: waits up to 10 s until URL answers anything over HTTP.
wait_http() {
    local name=$1 pid=$2 url=$3 logfile=$4 i code
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up; its log:"$'\n'"$(cat "$logfile")"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code != 000 ]] && return 0
        sleep 0.1
    done
    die "$name does not answer on $url after 10 s; its log:"$'\n'"$(cat "$logfile")"
}

# free_ports N: N distinct ports that are free on 127.0.0.1 right now.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# render TEMPLATE OUT NAME=VALUE...: replaces @NAME@ by VALUE (values must not hold '|').
render() {
    local template=$1 out=$2 pair
    shift 2
    local args=()
    for pair in "$@"; do
        args+=(-e "s|@${pair%%=*}@|${pair#*=}|g")
    done
    sed "${args[@]}" "$template" >"$out"
    ! grep -q '@[A-Z_]*@' "$out" || die "unfilled placeholder in $out"
}

# The `user` directive only matters (and is only allowed quietly) as root: workers then run
# as root too, so they can read the temp dir, which is private to us.
nginx_user_line() {
    if ((EUID == 0)); then
        echo "user root;"
    else
        echo "# (not root: workers run as the current user)"
    fi
}

start_nginx() { # NAME DIR TEMPLATE PORT [NAME=VALUE...]
    local name=$1 dir=$2 template=$3 port=$4
    shift 4
    mkdir -p "$dir"
    render "$template" "$dir/nginx.conf" "DIR=$dir" "PORT=$port" "USER_LINE=$(nginx_user_line)" "$@"
    "$NGINX" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
        || die "$name: nginx -t rejected $dir/nginx.conf"
    start_server "$name" "$dir/stderr.log" \
        "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
}

start_upstream() {
    local dir=$WORK/upstream
    mkdir -p "$dir/www"
    head -c "$LARGE_BYTES" /dev/urandom >"$dir/www/large.bin"
    chmod 644 "$dir/www/large.bin"
    start_nginx upstream "$dir" "$SCRIPT_DIR/nginx-upstream.conf.in" "$UP_PORT" \
        "SMALL_JSON=$SMALL_JSON" "SECRET=$SECRET"
    UP_PID=$LAST_PID
    wait_http upstream "$UP_PID" "http://127.0.0.1:$UP_PORT/small" "$dir/error.log"
}

start_nginx_proxy() {
    NGX_SESSION="nginx-bench-session-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    start_nginx nginx-proxy "$WORK/nginx" "$SCRIPT_DIR/nginx-proxy.conf.in" "$NGX_PORT" \
        "UPSTREAM_PORT=$UP_PORT" "SESSION=$NGX_SESSION" "SECRET=$SECRET"
    NGX_PID=$LAST_PID
    wait_http nginx-proxy "$NGX_PID" "http://127.0.0.1:$NGX_PORT/" "$WORK/nginx/error.log"
}

# CMAKE_BUILD_TYPE of the --bin-dir build tree, when it is one; a Debug build's numbers
# say little about agentgwd's real cost.
agw_build_type() {
    if [[ -f $BIN_DIR/CMakeCache.txt ]]; then
        sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BIN_DIR/CMakeCache.txt"
    fi
}

# agentgw CLI against our daemon.
agw() {
    "$AGW_CLI" --socket "$AGW_SOCKET" "$@"
}

json_field() { # FIELD < JSON
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# agentgwd with its own state dir, socket, config and services file; then a user, an
# agent granted the bench service with a rate limit it never reaches, the service
# credential, and a session from POST /login.
start_agentgwd() {
    local dir=$WORK/agentgwd i
    mkdir -p "$dir"
    mkdir -m 0750 "$dir/run"
    AGW_SOCKET=$dir/run/agentgw.sock
    : >"$dir/agentgwd.conf" # an empty config, so no /etc/agentgw/agentgwd.conf is read
    # The service's rate limit is the highest the services file accepts, per second.
    cat >"$dir/services.json" <<EOF
{"services": [
  {"id": "$SERVICE", "name": "Bench upstream", "description": "nginx on 127.0.0.1 (proxy_bench.sh)",
   "base_url": "http://127.0.0.1:$UP_PORT",
   "auth": {"type": "bearer"},
   "rate_limit": {"requests": 1000000, "window_secs": 1},
   "timeout_secs": 60}
]}
EOF
    # No AGENTGWD_* variable of the caller's may change the set-up.
    local var
    for var in "${!AGENTGWD_@}"; do
        unset "$var"
    done
    start_server agentgwd "$dir/agentgwd.log" "$AGW_DAEMON" \
        --config "$dir/agentgwd.conf" --state-dir "$dir/state" --socket "$AGW_SOCKET" \
        --listen "127.0.0.1:$AGW_PORT" --services "$dir/services.json" \
        --session-ttl 86400 --log-level "$LOG_LEVEL"
    AGW_PID=$LAST_PID
    for ((i = 0; i < 100; i++)); do
        kill -0 "$AGW_PID" 2>/dev/null || die "agentgwd exited during start-up; its log:"$'\n'"$(cat "$dir/agentgwd.log")"
        agw status >/dev/null 2>&1 && break
        sleep 0.1
    done
    agw status >/dev/null || die "agentgwd's control socket does not answer after 10 s"
    wait_http agentgwd "$AGW_PID" "http://127.0.0.1:$AGW_PORT/healthz" "$dir/agentgwd.log"

    local key
    agw user add bench --email bench@example.com >/dev/null || die "agentgw user add failed"
    key=$(agw --json agent create --user bench --name "$AGENT_NAME" --service "$SERVICE" \
        | json_field api_key) || die "agentgw agent create failed"
    # The highest agent limit the CLI accepts, per second: never reached here.
    agw agent limit "$AGENT_NAME" --requests 1000000 --window 1 >/dev/null \
        || die "agentgw agent limit failed"
    printf '%s' "$SECRET" | agw credential set "$SERVICE" >/dev/null \
        || die "agentgw credential set failed"

    local resp code body
    resp=$(curl -sS --max-time 10 -X POST -H "x-api-key: $key" -H "username: $AGENT_NAME" \
        -w $'\n%{http_code}' "http://127.0.0.1:$AGW_PORT/login") || die "POST /login failed"
    code=${resp##*$'\n'}
    body=${resp%$'\n'*}
    [[ $code == 200 ]] || die "agentgwd: POST /login answered HTTP $code: $body"
    AGW_SESSION=$(json_field token <<<"$body")
    log "agentgwd session from POST /login"
}

# ---------------------------------------------------------------------------- targets

target_origin() { # TARGET: the server's own URL, no path
    case $1 in
        direct) echo "http://127.0.0.1:$UP_PORT" ;;
        nginx) echo "http://127.0.0.1:$NGX_PORT" ;;
        agentgwd) echo "http://127.0.0.1:$AGW_PORT" ;;
    esac
}

target_url() { # TARGET: base URL; the workload's upstream path is appended
    case $1 in
        direct) target_origin direct ;;
        nginx | agentgwd) echo "$(target_origin "$1")/api/$SERVICE" ;;
    esac
}

# runs_on TARGET WORKLOAD: whether the workload is measured on the target. local-c32 asks
# a proxy for an answer it makes itself, which the upstream and the floor have no part in.
runs_on() {
    [[ $2 != local-* || $1 == nginx || $1 == agentgwd ]]
}

target_header() { # TARGET: the session header, or nothing
    case $1 in
        nginx) echo "X-Session-ID: $NGX_SESSION" ;;
        agentgwd) echo "X-Session-ID: $AGW_SESSION" ;;
    esac
}

target_pids() { # TARGET: the proxy's processes (nginx: master and workers), none for direct
    case $1 in
        nginx) echo "$NGX_PID" "$(pgrep -P "$NGX_PID" | tr '\n' ' ')" ;;
        agentgwd) echo "$AGW_PID" ;;
    esac
}

# user+system CPU ticks of the given processes (all their threads), from /proc/PID/stat.
cpu_ticks() {
    (($#)) || { echo 0; return; }
    local files=() pid
    for pid in "$@"; do
        files+=("/proc/$pid/stat")
    done
    # Fields after "(comm) ": $1 is field 3 (state), so utime (14) is $12, stime (15) $13.
    awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }' "${files[@]}"
}

rss_kib() { # resident set of the given processes as "total:anonymous", KiB
    # The anonymous part is what a process holds itself; the rest is mapped files, for
    # agentgwd mostly the pages of its LMDB vault that the audit log has touched.
    local files=() pid
    for pid in "$@"; do
        files+=("/proc/$pid/status")
    done
    awk '/^VmRSS:/ { s += $2 } /^RssAnon:/ { a += $2 } END { print s + 0 ":" a + 0 }' "${files[@]}"
}

# curl_check TARGET DESC WANT_STATUS PATH [curl args...]: fails the run unless PATH on
# TARGET answers WANT_STATUS; prints curl's -w output (status, then size).
curl_check() {
    local target=$1 desc=$2 want=$3 path=$4
    shift 4
    local got
    got=$(curl -sS -o "$WORK/check.body" -D "$WORK/check.headers" --max-time 10 \
        -w '%{http_code} %{size_download}' "$@" "$(target_url "$target")$path") || got="000 0"
    if [[ ${got%% *} != "$want" ]]; then
        die "sanity check failed for target '$target': $desc: expected HTTP $want, got ${got%% *}:"$'\n'"$(head -c 500 "$WORK/check.body" 2>/dev/null)"
    fi
    echo "$got"
}

# Before measuring: every target answers 2xx on every workload's path, the 1 MiB body and
# the 4 KiB POST arrive whole, and the proxies inject the credential and check the session.
sanity_check() {
    local target=$1 hdr got
    if [[ $target == floor ]]; then
        sanity_check_floor
        return
    fi
    local -a auth=()
    hdr=$(target_header "$target")
    [[ -n $hdr ]] && auth=(-H "$hdr")

    curl_check "$target" "small GET" 200 /small "${auth[@]}" >/dev/null
    got=$(curl_check "$target" "1 MiB GET" 200 /large "${auth[@]}")
    [[ ${got#* } == "$LARGE_BYTES" ]] \
        || die "sanity check failed for target '$target': /large sent ${got#* } bytes, not $LARGE_BYTES"
    head -c "$POST_BYTES" /dev/zero | tr '\0' a >"$WORK/post.body"
    curl_check "$target" "4 KiB POST" 200 /post "${auth[@]}" \
        -H 'Content-Type: application/json' --data-binary "@$WORK/post.body" >/dev/null
    grep -qi "^X-Received-Length: $POST_BYTES"$'\r'"\?$" "$WORK/check.headers" \
        || die "sanity check failed for target '$target': the upstream did not receive the 4 KiB POST body"

    case $target in
        direct)
            # The check itself must discriminate.
            curl_check "$target" "auth-check without credential" 403 /auth-check >/dev/null
            curl_check "$target" "auth-check with credential" 200 /auth-check \
                -H "Authorization: Bearer $SECRET" >/dev/null
            ;;
        *)
            curl_check "$target" "credential injected (upstream /auth-check)" 200 /auth-check \
                "${auth[@]}" >/dev/null
            curl_check "$target" "request without a session refused" 401 /small >/dev/null
            got=$(curl -sS -o /dev/null --max-time 10 -w '%{http_code}' \
                "$(target_origin "$target")/healthz") || got=000
            [[ $got == 200 ]] \
                || die "sanity check failed for target '$target': its own /healthz answered HTTP $got"
            ;;
    esac
    log "sanity check passed: $target"
}

# The floor's client reaches the upstream, and sends the credential: /auth-check answers
# 2xx only then, and upstream_floor fails unless every exchange got a 2xx.
sanity_check_floor() {
    local out=$WORK/wrk/floor-check.txt
    taskset -c "$SERVER_CPU" "$FLOOR" --url "http://127.0.0.1:$UP_PORT/auth-check" \
        --connections 1 --duration 1 --warmup 0 --header "Authorization: Bearer $SECRET" \
        >"$out" 2>&1 || die "sanity check failed for target 'floor':"$'\n'"$(cat "$out")"
    grep -q 'errors 0 ' "$out" || die "sanity check failed for target 'floor':"$'\n'"$(cat "$out")"
    log "sanity check passed: floor"
}

# ---------------------------------------------------------------------------- measuring

workload_spec() { # WORKLOAD: sets W_PATH, W_CONNS, W_LUA, W_LOCAL
    W_LUA="" W_LOCAL=0
    case $1 in
        small-c1) W_PATH=/small W_CONNS=1 ;;
        small-c32) W_PATH=/small W_CONNS=32 ;;
        small-c256) W_PATH=/small W_CONNS=256 ;;
        post4k-c32) W_PATH=/post W_CONNS=32 W_LUA=$SCRIPT_DIR/post4k.lua ;;
        large-c32) W_PATH=/large W_CONNS=32 ;;
        local-c32) W_PATH=/healthz W_CONNS=32 W_LOCAL=1 ;;
        *) die "unknown workload $1" ;;
    esac
}

# run_wrk TARGET WORKLOAD SECONDS OUTFILE: one bounded wrk run on the wrk core.
run_wrk() {
    local target=$1 workload=$2 seconds=$3 out=$4 hdr url
    workload_spec "$workload"
    if ((W_LOCAL)); then
        url=$(target_origin "$target")$W_PATH
    else
        url=$(target_url "$target")$W_PATH
    fi
    local args=(-t1 -c "$W_CONNS" -d "${seconds}s" --latency --timeout 10s)
    [[ -n $W_LUA ]] && args+=(-s "$W_LUA")
    hdr=$(target_header "$target")
    [[ -n $hdr ]] && args+=(-H "$hdr")
    run_measured "$WRK_CPU" "wrk on $target $workload" "$out" \
        wrk "${args[@]}" "$url"
}

# run_measured CPU WHAT OUTFILE CMD...: runs CMD on core CPU, its output in OUTFILE, as the
# run in progress (cleanup() stops it on Ctrl-C); stops the script, naming WHAT, if it fails.
run_measured() {
    local cpu=$1 what=$2 out=$3
    shift 3
    taskset -c "$cpu" "$@" >"$out" 2>&1 &
    WRK_PID=$!
    if ! wait "$WRK_PID"; then
        WRK_PID=""
        die "$what failed:"$'\n'"$(cat "$out")"
    fi
    WRK_PID=""
}

# run_floor WORKLOAD SECONDS OUTFILE: one bounded upstream_floor run on the servers' core,
# the workload's request straight to the upstream with the credential the proxies inject.
run_floor() {
    local workload=$1 seconds=$2 out=$3
    workload_spec "$workload"
    local args=(--url "http://127.0.0.1:$UP_PORT$W_PATH" --connections "$W_CONNS"
        --duration "$seconds" --warmup 0 --header "Authorization: Bearer $SECRET")
    if [[ $workload == post4k-* ]]; then
        args+=(--post-bytes "$POST_BYTES" --header 'Content-Type: application/json')
    fi
    run_measured "$SERVER_CPU" "upstream_floor on $workload" "$out" "$FLOOR" "${args[@]}"
}

# parse_floor FILE: prints "req/s requests errors MiB/s cpu_us" from upstream_floor's line.
parse_floor() {
    awk '$1 == "requests" {
            for (i = 1; i < NF; i += 2) v[$i] = $(i + 1)
            printf "%s %s %s %s %s\n", v["rps"], v["requests"], v["errors"], v["mib_per_s"], v["cpu_us_per_req"]
            found = 1
        }
        END { if (!found) exit 1 }' "$1"
}

# parse_wrk FILE: prints "req/s p50_us p99_us requests errors MiB/s".
# errors = non-2xx/3xx answers + socket errors. wrk's units are binary (KB = 1024 B).
parse_wrk() {
    awk '
        function num_unit(v, units,   n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u); return n * units[u] }
        BEGIN {
            us["us"] = 1; us["ms"] = 1e3; us["s"] = 1e6; us["m"] = 6e7; us["h"] = 3.6e9
            mib["B"] = 1 / 1048576; mib["KB"] = 1 / 1024; mib["MB"] = 1; mib["GB"] = 1024; mib["TB"] = 1048576
        }
        /^ +50% / { p50 = num_unit($2, us) }
        /^ +99% / { p99 = num_unit($2, us) }
        / requests in / { reqs = $1 }
        /Non-2xx or 3xx responses:/ { errs += $NF }
        /Socket errors:/ { gsub(/,/, ""); errs += $4 + $6 + $8 + $10 }
        /^Requests\/sec:/ { rps = $2 }
        /^Transfer\/sec:/ { rate = num_unit($2, mib) }
        END {
            if (rps == "" || reqs == "" || p99 == "") exit 1
            printf "%.1f %.0f %.0f %d %d %.1f\n", rps, p50, p99, reqs, errs, rate
        }' "$1"
}

# measure ROUND TARGET WORKLOAD: one wrk run with the proxy's CPU time read around it;
# appends a line to the results file.
measure() {
    local round=$1 target=$2 workload=$3
    local out=$WORK/wrk/r$round-$target-$workload.txt pids ticks0 ticks1
    local rps p50 p99 reqs errs rate cpu_us="-" rss="-" parsed
    if [[ $target == floor ]]; then
        # The client is the measured process; it reads its own CPU time (getrusage).
        run_floor "$workload" "$DURATION" "$out"
        parsed=$(parse_floor "$out") || die "cannot parse upstream_floor output $out:"$'\n'"$(cat "$out")"
        read -r rps reqs errs rate cpu_us <<<"$parsed"
        p50="-" p99="-"
        pids=()
    else
        read -r -a pids <<<"$(target_pids "$target")"
        ticks0=$(cpu_ticks "${pids[@]}")
        run_wrk "$target" "$workload" "$DURATION" "$out"
        ticks1=$(cpu_ticks "${pids[@]}")
        parsed=$(parse_wrk "$out") || die "cannot parse wrk output $out:"$'\n'"$(cat "$out")"
        read -r rps p50 p99 reqs errs rate <<<"$parsed"
    fi
    if ((${#pids[@]})) && ((reqs > 0)); then
        cpu_us=$(awk -v d=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="$reqs" \
            'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
        [[ $workload == small-c256 ]] && rss=$(rss_kib "${pids[@]}")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$round" "$target" "$workload" "$rps" "$p50" "$p99" "$cpu_us" "$reqs" "$errs" "$rate" "$rss" \
        >>"$WORK/results.tsv"
    log "$(printf 'round %d %-9s %-11s %10s req/s  p50 %6s us  p99 %7s us  cpu %6s us/req  %7s MiB/s%s' \
        "$round" "$target" "$workload" "$rps" "$p50" "$p99" "$cpu_us" "$rate" \
        "$( ((errs)) && echo "  ERRORS $errs")")"
    # nginx's access log would otherwise grow by every request of the whole bench.
    if [[ $target == nginx ]]; then
        : >"$WORK/nginx/access.log"
    fi
}

warm_up() {
    ((WARMUP > 0)) || return 0
    local target workload
    log "warming up (${WARMUP} s per workload and target)"
    for target in "${TARGETS[@]}"; do
        for workload in "${WORKLOADS[@]}"; do
            runs_on "$target" "$workload" || continue
            if [[ $target == floor ]]; then
                run_floor "$workload" "$WARMUP" "$WORK/wrk/warmup-$target-$workload.txt"
            else
                run_wrk "$target" "$workload" "$WARMUP" "$WORK/wrk/warmup-$target-$workload.txt"
            fi
        done
        if [[ $target == nginx ]]; then
            : >"$WORK/nginx/access.log"
        fi
    done
}

# Round r starts with target (r-1) mod n, so no target is always first after another.
run_rounds() {
    local round workload target i n=${#TARGETS[@]} first
    for ((round = 1; round <= ROUNDS; round++)); do
        first=$(((round - 1) % n))
        for workload in "${WORKLOADS[@]}"; do
            for ((i = 0; i < n; i++)); do
                target=${TARGETS[(first + i) % n]}
                if runs_on "$target" "$workload"; then
                    measure "$round" "$target" "$workload"
                fi
            done
        done
    done
}

# ---------------------------------------------------------------------------- report

report() {
    local agw_version="-" build_type
    if [[ -n $AGW_DAEMON ]]; then
        agw_version="agentgwd $("$AGW_DAEMON" --version 2>&1 | head -n1)"
        build_type=$(agw_build_type)
        agw_version+=" (${build_type:-unknown} build, $BIN_DIR)"
    fi
    python3 - "$WORK/results.tsv" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        "$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)" "$(nproc)" \
        "$("$NGINX" -v 2>&1 | sed 's|^nginx version: nginx/||')" "$(wrk -v 2>&1 | head -n1 | awk '{ print $2 }')" \
        "$agw_version" "$ROUNDS" "$DURATION" "$WRK_CPU" "$SERVER_CPU" "$LOG_LEVEL" <<'PY'
import statistics
import sys

(path, when, cpu_model, ncpu, nginx_v, wrk_v, agw_v,
 rounds, duration, wrk_cpu, server_cpu, log_level) = sys.argv[1:]

TARGETS = ["direct", "nginx", "agentgwd", "floor"]
WORKLOADS = [
    ("small-c1", "small GET, 1 conn"),
    ("small-c32", "small GET, 32 conns"),
    ("small-c256", "small GET, 256 conns"),
    ("post4k-c32", "4 KiB POST, 32 conns"),
    ("large-c32", "1 MiB GET, 32 conns"),
    ("local-c32", "own /healthz answer, 32 conns"),
]

runs = {}
for line in open(path):
    rnd, target, workload, rps, p50, p99, cpu, reqs, errs, rate, rss = line.rstrip("\n").split("\t")
    runs.setdefault((workload, target), []).append(
        dict(rps=float(rps), p50=None if p50 == "-" else float(p50),
             p99=None if p99 == "-" else float(p99),
             cpu=None if cpu == "-" else float(cpu), errs=int(errs), rate=float(rate),
             rss=None if rss == "-" else int(rss.split(":")[0]),
             anon=None if rss == "-" else int(rss.split(":")[1])))


def med(workload, target, key):
    values = [r[key] for r in runs.get((workload, target), []) if r[key] is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    return "–" if v is None else f"{v:,.{digits}f}"


def ratio(a, b):
    return "–" if a is None or b in (None, 0) else f"{a / b:.2f}×"


def cpu_ratio_table(title, target):
    """Starts a table of `target` against nginx with its CPU-per-request rows."""
    out.append(f"### {title}")
    out.append("")
    out.append(f"| metric | nginx | {target} | {target} / nginx |")
    out.append("| --- | ---: | ---: | ---: |")
    for workload, label in WORKLOADS:
        t, n = med(workload, target, "cpu"), med(workload, "nginx", "cpu")
        if t is None:
            continue
        out.append(f"| CPU µs/req, {label} | {fmt(n, 1)} | {fmt(t, 1)} | {ratio(t, n)} |")


present = [t for t in TARGETS if any(k[1] == t for k in runs)]
out = []
out.append(f"## agentgwd proxy benchmark ({when})")
out.append("")
out.append(f"- Machine: {cpu_model}, {ncpu} cores; wrk -t1 on core {wrk_cpu}, every server "
           f"(upstream nginx, nginx proxy, agentgwd) and upstream_floor on core {server_cpu}.")
agw_part = "" if agw_v == "-" else f", {agw_v}, --log-level {log_level}"
out.append(f"- nginx {nginx_v} (worker_processes 1 each), wrk {wrk_v}{agw_part}.")
out.append(f"- {rounds} round(s) of {duration} s per run, targets alternating within each round; "
           "medians over the rounds. CPU µs/req: user+system time of the proxy's processes "
           "(nginx: master+worker; floor: upstream_floor itself, which has no latency figures) "
           "over the run / requests served. MB/s: wrk's Transfer/sec "
           "(MiB/s). Errors: non-2xx answers + socket errors, summed over the rounds.")
out.append("")
out.append("| workload | target | req/s | p50 µs | p99 µs | CPU µs/req | MB/s | errors |")
out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for workload, label in WORKLOADS:
    for t in present:
        if (workload, t) not in runs:
            continue
        errors = sum(r["errs"] for r in runs[(workload, t)])
        rate = med(workload, t, "rate") if workload == "large-c32" else None
        out.append(f"| {label} | {t} | {fmt(med(workload, t, 'rps'))} | {fmt(med(workload, t, 'p50'))} "
                   f"| {fmt(med(workload, t, 'p99'))} | {fmt(med(workload, t, 'cpu'), 1)} "
                   f"| {fmt(rate, 1)} | {errors} |")
out.append("")

if "nginx" in present and "agentgwd" in present:
    cpu_ratio_table("agentgwd / nginx", "agentgwd")
    for workload, label in [("small-c32", "small GET, 32 conns"), ("small-c256", "small GET, 256 conns")]:
        a, n = med(workload, "agentgwd", "p99"), med(workload, "nginx", "p99")
        out.append(f"| p99 µs, {label} | {fmt(n)} | {fmt(a)} | {ratio(a, n)} |")
    a, n = med("large-c32", "agentgwd", "rate"), med("large-c32", "nginx", "rate")
    out.append(f"| 1 MiB streaming MB/s, 32 conns | {fmt(n, 1)} | {fmt(a, 1)} | {ratio(a, n)} |")
    a, n = med("small-c256", "agentgwd", "rss"), med("small-c256", "nginx", "rss")
    a = None if a is None else a / 1024
    n = None if n is None else n / 1024
    out.append(f"| RSS MiB after the 256-conn run | {fmt(n, 1)} | {fmt(a, 1)} | {ratio(a, n)} |")
    a, n = med("small-c256", "agentgwd", "anon"), med("small-c256", "nginx", "anon")
    a = None if a is None else a / 1024
    n = None if n is None else n / 1024
    out.append(f"| anonymous RSS MiB (excludes mapped files) | {fmt(n, 1)} | {fmt(a, 1)} | {ratio(a, n)} |")
    out.append("")
else:
    for t in ("nginx", "agentgwd"):
        v = med("small-c256", t, "rss")
        if v is not None:
            out.append(f"- RSS of {t} after the 256-conn run: {v / 1024:.1f} MiB")
    out.append("")
if "nginx" in present and "floor" in present:
    cpu_ratio_table("agentgwd's upstream client alone (floor) / nginx's whole proxy", "floor")
    out.append("")

# The proxied small GET taken apart: the agent's side of HTTP alone (an answer the server
# makes itself), and for agentgwd its upstream client alone (the floor).
n_local, a_local = med("local-c32", "nginx", "cpu"), med("local-c32", "agentgwd", "cpu")
n_small, a_small = med("small-c32", "nginx", "cpu"), med("small-c32", "agentgwd", "cpu")
floor_small = med("small-c32", "floor", "cpu")
if None not in (n_local, a_local, n_small, a_small):
    both_alone = None if floor_small is None else a_local + floor_small
    out.append("### The small GET at 32 conns, taken apart (CPU µs/req)")
    out.append("")
    out.append("| part | nginx | agentgwd |")
    out.append("| --- | ---: | ---: |")
    out.append(f"| the server's own answer, no upstream (`local-c32`) | {fmt(n_local, 1)} | {fmt(a_local, 1)} |")
    out.append(f"| the proxied small GET (`small-c32`) | {fmt(n_small, 1)} | {fmt(a_small, 1)} |")
    out.append(f"| difference: upstream side and proxy work | {fmt(n_small - n_local, 1)} "
               f"| {fmt(a_small - a_local, 1)} |")
    out.append(f"| upstream client alone (`floor`, `small-c32`) | – | {fmt(floor_small, 1)} |")
    out.append(f"| own answer + upstream client alone | – | {fmt(both_alone, 1)} |")
    out.append(f"| 1.5 × nginx's proxied small GET | – | {fmt(1.5 * n_small, 1)} |")
    out.append("")

print("\n".join(out))
PY
}

# ---------------------------------------------------------------------------- main

main() {
    parse_args "$@"
    ensure_tools

    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    WORK=$(mktemp -d /tmp/proxy-bench.XXXXXX)
    chmod 700 "$WORK"
    mkdir "$WORK/wrk"
    : >"$WORK/results.tsv"

    read -r UP_PORT NGX_PORT AGW_PORT <<<"$(free_ports 3)"
    log "ports: upstream $UP_PORT, nginx proxy $NGX_PORT, agentgwd $AGW_PORT; temp dir $WORK"

    start_upstream
    if has_target nginx; then
        start_nginx_proxy
    fi
    if has_target agentgwd; then
        start_agentgwd
    fi

    local target
    for target in "${TARGETS[@]}"; do
        sanity_check "$target"
    done

    warm_up
    local runs=0 workload
    for target in "${TARGETS[@]}"; do
        for workload in "${WORKLOADS[@]}"; do
            runs_on "$target" "$workload" && runs=$((runs + ROUNDS))
        done
    done
    log "measuring: $runs runs of $DURATION s (about $((runs * (DURATION + 1) / 60 + 1)) min)"
    run_rounds

    local table
    table=$(report)
    printf '%s\n' "$table"
    if [[ -n $OUT ]]; then
        printf '%s\n' "$table" >"$OUT"
        log "report written to $OUT"
    fi
}

main "$@"
