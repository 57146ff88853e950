#!/usr/bin/env bash
# hub_bench.sh: how fast is agentgwd's hub (SPEC §3.3), and does it hold up with many blobs
# and while many expire at once?
#
# Targets, each its own process with its own state:
#   publish         POST /secure/agent/publish on agentgwd (durable: each answer comes after
#                   the group commit's fsync);
#   retrieve        GET /secure/retrieve/{token} of reusable blobs, on an agentgwd holding
#                   only those (--reusable, default 1000);
#   nginx           nginx answering a static 200 of the same size as a retrieve answer: the
#                   HTTP floor;
#   retrieve-full   the same retrieve load on an agentgwd holding --fill (1,000,000) live
#                   blobs, put there by hub_fill with the daemon stopped;
#   retrieve-expiry the same retrieve load on an agentgwd where --expire (100,000) blobs,
#                   published by hub_fill just before, expire together a few seconds into the
#                   run, so the daemon's sweeper removes them while wrk runs.
# wrk runs on one core, every server on the other. The targets alternate within each round;
# the report gives medians over the rounds as a Markdown table, and the ratios against the
# hub's targets.
#
# Usage: bench/hub_bench.sh [--rounds N] [--duration S] [--fill N] [--bin-dir DIR] [--out FILE]
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
FILL=1000000
EXPIRE=100000
REUSABLE=1000
BYTES=256
CONNS=64
EXPIRE_AT=""     # seconds into the retrieve-expiry run; default DURATION / 3, at least 1
LOG_LEVEL=info
WRK_CPU=0
SERVER_CPU=1
KEEP_TMP=0

readonly AGENT_NAME="bench-hub"
readonly BLOB_TTL=864000 # the reusable and the --fill blobs: 10 days, never expire here
readonly PUBLISH_TTL=3600
readonly SAMPLE=1000 # tokens sampled from a fill for the retrieve load
readonly ALL_TARGETS="publish retrieve nginx retrieve-full retrieve-expiry"
readonly DAEMONS="pub empty full expiry"

# Filled in at run time.
WORK=""     # temp dir
PIDS=()     # processes this script started and has not stopped yet, stopped by cleanup()
WRK_PID=""  # the wrk run in progress, if any
NGINX="" AGW_DAEMON="" AGW_CLI="" HUB_FILL=""
NGX_PORT="" NGX_PID=""
declare -A PORT=() PID=() KEY=() SESSION=() AGENT_ID=()
FILL_RATE=""   # blobs/s of the --fill run (hub_fill)
FILL_SECS=""
FULL_BYTES=""  # size of the full daemon's vault file after the fill
RESP_BYTES=""  # body size of a retrieve answer
CLK_TCK=100
LAST_PID=""

usage() {
    cat <<EOF
Usage: $(basename "$0") [OPTIONS]

Benchmark agentgwd's hub: durable publishes, retrieves next to an nginx floor, retrieves
with many live blobs, and retrieves while many blobs expire at once.

Options:
  --rounds N          rounds; each runs every target once (default $ROUNDS)
  --duration S        seconds per wrk run (default $DURATION)
  --warmup S          seconds of warm-up per target before round 1 (default $WARMUP; 0 skips it)
  --fill N            live blobs for retrieve-full (default $FILL)
  --expire N          blobs that expire together in retrieve-expiry (default $EXPIRE)
  --reusable N        reusable blobs the retrieve targets hold and read (default $REUSABLE)
  --bytes B           bytes of data per blob, published and retrieved (default $BYTES)
  --connections N     wrk connections for every target (default $CONNS)
  --expire-at S       when the --expire blobs expire, in seconds into the retrieve-expiry
                      run (default a third of --duration, at least 1)
  --bin-dir DIR       build tree holding daemon/agentgwd, cli/agentgw and bench/hub_fill
                      (default $REPO_DIR/build)
  --out FILE          also write the report to FILE
  --log-level LEVEL   agentgwd's --log-level (default $LOG_LEVEL)
  --wrk-cpu N         core for wrk (default $WRK_CPU)
  --server-cpu N      core for nginx and the agentgwd instances (default $SERVER_CPU)
  --keep-tmp          keep the temp dir (state dirs, logs, raw wrk output)
  -h, --help          show this help
EOF
}

die() {
    echo "hub_bench: error: $*" >&2
    exit 1
}

log() {
    echo "hub_bench: $*" >&2
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
            --fill) FILL=${2:?--fill needs a value}; shift ;;
            --expire) EXPIRE=${2:?--expire needs a value}; shift ;;
            --reusable) REUSABLE=${2:?--reusable needs a value}; shift ;;
            --bytes) BYTES=${2:?--bytes needs a value}; shift ;;
            --connections) CONNS=${2:?--connections needs a value}; shift ;;
            --expire-at) EXPIRE_AT=${2:?--expire-at needs a value}; shift ;;
            --bin-dir) BIN_DIR=${2:?--bin-dir needs a value}; shift ;;
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
    is_positive "$FILL" || die "--fill must be a positive integer"
    is_positive "$EXPIRE" || die "--expire must be a positive integer"
    is_positive "$REUSABLE" || die "--reusable must be a positive integer"
    is_positive "$BYTES" || die "--bytes must be a positive integer"
    ((BYTES <= 1048576)) || die "--bytes must be at most 1048576 (the daemon's default hub_max_data)"
    is_positive "$CONNS" || die "--connections must be a positive integer"
    is_uint "$WRK_CPU" || die "--wrk-cpu must be a core number"
    is_uint "$SERVER_CPU" || die "--server-cpu must be a core number"
    if [[ -z $EXPIRE_AT ]]; then
        EXPIRE_AT=$((DURATION / 3))
        ((EXPIRE_AT >= 1)) || EXPIRE_AT=1
    fi
    is_uint "$EXPIRE_AT" || die "--expire-at must be a non-negative integer"
    ((EXPIRE_AT < DURATION)) || die "--expire-at must be less than --duration"
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

    AGW_DAEMON=$BIN_DIR/daemon/agentgwd
    AGW_CLI=$BIN_DIR/cli/agentgw
    HUB_FILL=$BIN_DIR/bench/hub_fill
    [[ -x $AGW_DAEMON ]] || die "no agentgwd at $AGW_DAEMON (build it, or pass --bin-dir)"
    [[ -x $AGW_CLI ]] || die "no agentgw at $AGW_CLI (build it, or pass --bin-dir)"
    [[ -x $HUB_FILL ]] || die "no hub_fill at $HUB_FILL (build the hub_fill target, or pass --bin-dir)"
    if [[ $(agw_build_type) == Debug ]]; then
        log "warning: $BIN_DIR is a Debug build: agentgwd's numbers will be far from a release build's"
    fi

    local cpus
    cpus=$(nproc)
    if ((cpus < 2)); then
        log "warning: only $cpus core: wrk and the servers share it"
        WRK_CPU=0 SERVER_CPU=0
    fi
    ((WRK_CPU < cpus && SERVER_CPU < cpus)) || die "cores are 0..$((cpus - 1))"
}

# CMAKE_BUILD_TYPE of the --bin-dir build tree, when it is one.
agw_build_type() {
    if [[ -f $BIN_DIR/CMakeCache.txt ]]; then
        sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BIN_DIR/CMakeCache.txt"
    fi
}

# ---------------------------------------------------------------------------- processes

# stop_pid PID NAME: SIGTERM, up to 15 s to exit, then SIGKILL; forgets the pid.
stop_pid() {
    local pid=$1 name=$2 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "warning: $name (pid $pid) did not stop 15 s after SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    local kept=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$pid" ]] || kept+=("$p")
    done
    PIDS=("${kept[@]}")
}

# Stops exactly the processes this script started, then removes the temp dir.
cleanup() {
    local pid
    trap - EXIT INT TERM
    if [[ -n $WRK_PID ]]; then
        kill -TERM "$WRK_PID" 2>/dev/null || true
        wait "$WRK_PID" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid" "pid $pid"
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
    taskset -c "$SERVER_CPU" "$@" >>"$logfile" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    log "started $name (pid $LAST_PID)"
}

# wait_http NAME PID URL LOG: waits up to 10 s until URL answers anything over HTTP.
wait_http() {
    local name=$1 pid=$2 url=$3 logfile=$4 i code
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up; its log:"$'\n'"$(tail -n 20 "$logfile")"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code != 000 ]] && return 0
        sleep 0.1
    done
    die "$name does not answer on $url after 10 s; its log:"$'\n'"$(tail -n 20 "$logfile")"
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

# nginx serving the saved retrieve answer ($WORK/nginx/www/blob.json) for any path.
start_nginx_floor() {
    local dir=$WORK/nginx
    render "$SCRIPT_DIR/nginx-hub-floor.conf.in" "$dir/nginx.conf" \
        "DIR=$dir" "PORT=$NGX_PORT" "USER_LINE=$(nginx_user_line)"
    "$NGINX" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
        || die "nginx -t rejected $dir/nginx.conf"
    start_server nginx "$dir/stderr.log" \
        "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
    NGX_PID=$LAST_PID
    wait_http nginx "$NGX_PID" "http://127.0.0.1:$NGX_PORT/" "$dir/error.log"
}

now_ms() {
    date +%s%3N
}

json_field() { # FIELD < JSON
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# ---------------------------------------------------------------------------- agentgwd

# agw NAME ARGS...: the agentgw CLI against daemon NAME.
agw() {
    local name=$1
    shift
    "$AGW_CLI" --socket "$WORK/$name/run/agentgw.sock" "$@"
}

# start_daemon NAME: agentgwd with its own state dir, socket, empty config file and port.
# The hub quotas are lifted so the publish target never meets them.
start_daemon() {
    local name=$1 dir=$WORK/$1 i
    local logfile=$dir/agentgwd.log
    start_server "agentgwd ($name)" "$logfile" "$AGW_DAEMON" \
        --config "$dir/agentgwd.conf" --state-dir "$dir/state" --socket "$dir/run/agentgw.sock" \
        --listen "127.0.0.1:${PORT[$name]}" --session-ttl 86400 --log-level "$LOG_LEVEL" \
        --hub-quota-blobs 100000000 --hub-quota-bytes 1099511627776
    PID[$name]=$LAST_PID
    for ((i = 0; i < 100; i++)); do
        kill -0 "${PID[$name]}" 2>/dev/null || die "agentgwd ($name) exited during start-up; its log:"$'\n'"$(tail -n 20 "$logfile")"
        agw "$name" status >/dev/null 2>&1 && break
        sleep 0.1
    done
    agw "$name" status >/dev/null || die "agentgwd ($name): the control socket does not answer after 10 s"
    wait_http "agentgwd ($name)" "${PID[$name]}" "http://127.0.0.1:${PORT[$name]}/healthz" "$logfile"
}

stop_daemon() { # NAME
    stop_pid "${PID[$1]}" "agentgwd ($1)"
    PID[$1]=""
}

# setup_daemon NAME: a new agentgwd, a user, an agent whose rate limit is far above the
# load, and a session from POST /login; the hub needs the agent key and the session both.
setup_daemon() {
    local name=$1 dir=$WORK/$1
    mkdir -p "$dir"
    mkdir -m 0750 "$dir/run"
    : >"$dir/agentgwd.conf" # an empty config, so no /etc/agentgw/agentgwd.conf is read
    start_daemon "$name"

    local created
    agw "$name" user add bench --email bench@example.com >/dev/null || die "agentgw user add failed"
    created=$(agw "$name" --json agent create --user bench --name "$AGENT_NAME") \
        || die "agentgw agent create failed"
    KEY[$name]=$(json_field api_key <<<"$created")
    AGENT_ID[$name]=$(json_field agent_id <<<"$created")
    # The highest agent limit the CLI accepts, per second: never reached here.
    agw "$name" agent limit "$AGENT_NAME" --requests 1000000 --window 1 >/dev/null \
        || die "agentgw agent limit failed"

    local resp code body
    resp=$(curl -sS --max-time 10 -X POST -H "x-api-key: ${KEY[$name]}" -H "username: $AGENT_NAME" \
        -w $'\n%{http_code}' "http://127.0.0.1:${PORT[$name]}/login") || die "POST /login failed"
    code=${resp##*$'\n'}
    body=${resp%$'\n'*}
    [[ $code == 200 ]] || die "agentgwd ($name): POST /login answered HTTP $code: $body"
    SESSION[$name]=$(json_field token <<<"$body")
    log "agentgwd ($name): agent $AGENT_NAME (${AGENT_ID[$name]}), session from POST /login"
}

# fill NAME COUNT TTL TOKENS_FILE SAMPLE: hub_fill into daemon NAME's state (it must be
# stopped); its summary goes to the log and stays in FILL_OUT.
FILL_OUT=""
fill() {
    local name=$1 count=$2 ttl=$3 tokens=$4 sample=$5
    log "hub_fill: $count blobs of $BYTES bytes (ttl $ttl s) into agentgwd ($name)"
    FILL_OUT=$("$HUB_FILL" --state-dir "$WORK/$name/state" --agent-id "${AGENT_ID[$name]}" \
        --agent-name "$AGENT_NAME" --count "$count" --bytes "$BYTES" --ttl "$ttl" \
        --tokens-out "$tokens" --sample "$sample" 2>>"$WORK/$name/hub_fill.log") \
        || die "hub_fill into $name failed:"$'\n'"$(tail -n 5 "$WORK/$name/hub_fill.log")"
    printf '%s\n' "$FILL_OUT" >>"$WORK/$name/hub_fill.log"
    log "hub_fill: $(head -n1 <<<"$FILL_OUT")"
}

# blobs_live NAME: agentgw_hub_blobs_live from daemon NAME's /metrics.
blobs_live() {
    curl -sS --max-time 5 "http://127.0.0.1:${PORT[$1]}/metrics" \
        | awk '/^agentgw_hub_blobs_live / { printf "%d\n", $2 }'
}

# ---------------------------------------------------------------------------- checks

# retrieve NAME TOKEN [curl args...]: prints "status size" of GET /secure/retrieve/TOKEN.
retrieve() {
    local name=$1 token=$2
    shift 2
    curl -sS -o "$WORK/check.body" --max-time 10 -w '%{http_code} %{size_download}' \
        -H "x-api-key: ${KEY[$name]}" -H "Authorization: Bearer ${SESSION[$name]}" "$@" \
        "http://127.0.0.1:${PORT[$name]}/secure/retrieve/$token" || echo "000 0"
}

expect_retrieve() { # NAME TOKEN WANT_STATUS WHAT
    local got
    got=$(retrieve "$1" "$2")
    [[ ${got%% *} == "$3" ]] \
        || die "sanity check failed on agentgwd ($1): $4: expected HTTP $3, got ${got%% *}:"$'\n'"$(head -c 300 "$WORK/check.body")"
    echo "$got"
}

# Before measuring: a publish is answered with a token that retrieves; every retrieve target
# answers its tokens with a body of the same size as nginx's; refusals are refusals.
sanity_check() {
    local name got token
    got=$(curl -sS -o "$WORK/check.body" --max-time 10 -w '%{http_code}' -X POST \
        -H "x-api-key: ${KEY[pub]}" -H "Authorization: Bearer ${SESSION[pub]}" \
        -H 'Content-Type: application/json' \
        --data "{\"name\":\"check\",\"data\":\"hello\",\"ttl\":$PUBLISH_TTL}" \
        "http://127.0.0.1:${PORT[pub]}/secure/agent/publish") || got=000
    [[ $got == 200 ]] || die "sanity check failed: publish answered HTTP $got:"$'\n'"$(head -c 300 "$WORK/check.body")"
    token=$(json_field token <"$WORK/check.body")
    expect_retrieve pub "$token" 200 "retrieving a blob just published" >/dev/null
    got=$(curl -sS -o /dev/null --max-time 10 -w '%{http_code}' -X POST \
        -H "Authorization: Bearer ${SESSION[pub]}" -H 'Content-Type: application/json' \
        --data '{"name":"check","data":"hello"}' \
        "http://127.0.0.1:${PORT[pub]}/secure/agent/publish") || got=000
    [[ $got == 401 ]] || die "sanity check failed: a publish without x-api-key answered HTTP $got, not 401"

    for name in empty full expiry; do
        token=$(head -n1 "$WORK/tokens-$name.txt")
        got=$(expect_retrieve "$name" "$token" 200 "retrieving a reusable blob")
        [[ ${got#* } == "$RESP_BYTES" ]] \
            || die "sanity check failed on agentgwd ($name): a retrieve answer of ${got#* } bytes, not $RESP_BYTES like the others"
        expect_retrieve "$name" "$(tail -n1 "$WORK/tokens-$name.txt")" 200 "retrieving a reusable blob" >/dev/null
        expect_retrieve "$name" "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" 404 "retrieving an unknown token" >/dev/null
    done
    got=$(curl -sS -o /dev/null --max-time 10 -w '%{http_code} %{size_download}' \
        "http://127.0.0.1:$NGX_PORT/secure/retrieve/$token") || got="000 0"
    [[ $got == "200 $RESP_BYTES" ]] || die "sanity check failed: nginx answered '$got', not '200 $RESP_BYTES'"
    log "sanity check passed: publish, retrieve ($RESP_BYTES-byte answers), nginx floor, refusals"
}

# ---------------------------------------------------------------------------- measuring

target_daemon() { # TARGET: the agentgwd instance behind it, or nothing for nginx
    case $1 in
        publish) echo pub ;;
        retrieve) echo empty ;;
        retrieve-full) echo full ;;
        retrieve-expiry) echo expiry ;;
        nginx) ;;
    esac
}

target_pids() { # TARGET: the server's processes (nginx: master and workers)
    case $1 in
        nginx) echo "$NGX_PID" "$(pgrep -P "$NGX_PID" | tr '\n' ' ')" ;;
        *) echo "${PID[$(target_daemon "$1")]}" ;;
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

# Busy ticks (everything but idle and iowait) of one core, from /proc/stat.
core_ticks() {
    awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# run_wrk TARGET SECONDS OUTFILE: one bounded wrk run on the wrk core.
run_wrk() {
    local target=$1 seconds=$2 out=$3 name url
    local -a lua
    local args=(-t1 -c "$CONNS" -d "${seconds}s" --latency --timeout 10s)
    name=$(target_daemon "$target")
    # nginx gets the same request headers as the retrieve target.
    [[ -n $name ]] || name=empty
    args+=(-H "x-api-key: ${KEY[$name]}" -H "Authorization: Bearer ${SESSION[$name]}")
    case $target in
        publish)
            url="http://127.0.0.1:${PORT[pub]}/secure/agent/publish"
            lua=(-s "$SCRIPT_DIR/hub_publish.lua" "$url" -- "$BYTES" "$PUBLISH_TTL")
            ;;
        nginx)
            lua=(-s "$SCRIPT_DIR/hub_retrieve.lua" "http://127.0.0.1:$NGX_PORT/" -- "$WORK/tokens-empty.txt")
            ;;
        *)
            lua=(-s "$SCRIPT_DIR/hub_retrieve.lua" "http://127.0.0.1:${PORT[$name]}/" -- "$WORK/tokens-$name.txt")
            ;;
    esac
    taskset -c "$WRK_CPU" wrk "${args[@]}" "${lua[@]}" >"$out" 2>&1 &
    WRK_PID=$!
    if ! wait "$WRK_PID"; then
        WRK_PID=""
        die "wrk failed on $target:"$'\n'"$(cat "$out")"
    fi
    WRK_PID=""
}

# parse_wrk FILE: prints "req/s p50_us p99_us max_us requests errors".
# errors = non-2xx/3xx answers + socket errors.
parse_wrk() {
    awk '
        function num_unit(v, units,   n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u); return n * units[u] }
        BEGIN { us["us"] = 1; us["ms"] = 1e3; us["s"] = 1e6; us["m"] = 6e7; us["h"] = 3.6e9 }
        /^ +Latency / && max == "" { max = num_unit($4, us) }
        /^ +50% / { p50 = num_unit($2, us) }
        /^ +99% / { p99 = num_unit($2, us) }
        / requests in / { reqs = $1 }
        /Non-2xx or 3xx responses:/ { errs += $NF }
        /Socket errors:/ { gsub(/,/, ""); errs += $4 + $6 + $8 + $10 }
        /^Requests\/sec:/ { rps = $2 }
        END {
            if (rps == "" || reqs == "" || p99 == "") exit 1
            printf "%.1f %.0f %.0f %.0f %d %d\n", rps, p50, p99, max, reqs, errs
        }' "$1"
}

# The retrieve-expiry set-up: with its daemon stopped, --expire blobs that all expire at one
# moment (hub_fill freezes the clock), timed so they expire --expire-at seconds into the run.
# Sets EXPIRES_MS and EXPIRE_BASE (the blobs the daemon holds besides them).
EXPIRES_MS="" EXPIRE_BASE=""
prepare_expiry() {
    local round=$1 ttl
    EXPIRE_BASE=$(blobs_live expiry)
    # Long enough for the fill (at 2/3 of the --fill run's rate), a restart and the warm-up.
    ttl=$(awk -v n="$EXPIRE" -v r="$FILL_RATE" -v w="$WARMUP" -v at="$EXPIRE_AT" \
        'BEGIN { printf "%d\n", n / (r > 0 ? r : 5000) * 1.5 + 5 + w + at + 0.999 }')
    stop_daemon expiry
    fill expiry "$EXPIRE" "$ttl" "$WORK/expiring-r$round.txt" 10
    EXPIRES_MS=$(sed -n 's/^expires_at_ms //p' <<<"$FILL_OUT")
    [[ -n $EXPIRES_MS ]] || die "hub_fill printed no expires_at_ms"
    start_daemon expiry
    expect_retrieve expiry "$(head -n1 "$WORK/expiring-r$round.txt")" 200 \
        "retrieving a blob that is about to expire" >/dev/null
    if ((WARMUP > 0)); then
        run_wrk retrieve-expiry "$WARMUP" "$WORK/wrk/warmup-r$round-retrieve-expiry.txt"
    fi
    local wait_ms=$((EXPIRES_MS - EXPIRE_AT * 1000 - $(now_ms)))
    if ((wait_ms >= 0)); then
        sleep "$(awk -v ms="$wait_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
    elif ((wait_ms + EXPIRE_AT * 1000 > 500)); then
        # The fill was slower than planned: start now; the report gives the real moment.
        log "round $round: the fill was slow; the blobs expire $(((wait_ms + EXPIRE_AT * 1000) / 1000)) s into the run, not $EXPIRE_AT"
    else
        die "round $round: the fill of $EXPIRE blobs was so slow that they expire before the run can start"
    fi
}

# poll_blobs NAME OUT: a background poller (on the wrk core) writing "ms blobs_live" to OUT
# every 100 ms; sets POLL_PID.
POLL_PID=""
poll_blobs() {
    taskset -c "$WRK_CPU" python3 - "http://127.0.0.1:${PORT[$1]}/metrics" "$2" <<'PY' &
import signal, sys, time, urllib.request
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
url, path = sys.argv[1], sys.argv[2]
with open(path, "w", buffering=1) as out:
    while True:
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
            for line in text.splitlines():
                if line.startswith("agentgw_hub_blobs_live "):
                    out.write(f"{int(time.time() * 1000)} {int(float(line.split()[1]))}\n")
        except OSError:
            pass
        time.sleep(0.1)
PY
    POLL_PID=$!
    PIDS+=("$POLL_PID")
}

# After a retrieve-expiry run: waits (up to 120 s) for the sweeper to finish, checks that an
# expired token is refused, and sets EXPIRY_FIGURES to "expired_at_s swept_s left_at_end":
# when the blobs expired and when the last was swept, in seconds after the run's start, and
# how many were left when wrk finished.
EXPIRY_FIGURES=""
finish_expiry() {
    local round=$1 start_ms=$2 end_ms=$3 polls=$4 i n=""
    for ((i = 0; i < 1200; i++)); do
        n=$(tail -n1 "$polls" | awk '{ print $2 }')
        [[ -n $n ]] && ((n <= EXPIRE_BASE)) && break
        sleep 0.1
    done
    stop_pid "$POLL_PID" "blob poller"
    POLL_PID=""
    if [[ -z $n ]] || ((n > EXPIRE_BASE)); then
        die "round $round: $((${n:-0} - EXPIRE_BASE)) expired blobs were still stored 120 s after the run"
    fi
    expect_retrieve expiry "$(head -n1 "$WORK/expiring-r$round.txt")" 404 "retrieving an expired blob" >/dev/null
    EXPIRY_FIGURES=$(awk -v s="$start_ms" -v e="$end_ms" -v x="$EXPIRES_MS" -v base="$EXPIRE_BASE" '
        $2 <= base && done == "" { done = ($1 - s) / 1000 }
        $1 <= e { left = $2 - base }
        END { printf "%.1f %.1f %d\n", (x - s) / 1000, done, left }' "$polls")
}

# measure ROUND TARGET: one wrk run with the server's CPU time read around it; appends a
# line to the results file.
measure() {
    local round=$1 target=$2
    local out=$WORK/wrk/r$round-$target.txt pids ticks0 ticks1 core0 core1 start_ms end_ms
    local rps p50 p99 max reqs errs cpu_us="-" expiry=$'-\t-\t-'
    if [[ $target == retrieve-expiry ]]; then
        prepare_expiry "$round"
        poll_blobs expiry "$WORK/polls-r$round.txt"
    fi
    read -r -a pids <<<"$(target_pids "$target")"
    ticks0=$(cpu_ticks "${pids[@]}")
    core0=$(core_ticks "$SERVER_CPU")
    start_ms=$(now_ms)
    run_wrk "$target" "$DURATION" "$out"
    end_ms=$(now_ms)
    ticks1=$(cpu_ticks "${pids[@]}")
    core1=$(core_ticks "$SERVER_CPU")
    local parsed
    parsed=$(parse_wrk "$out") || die "cannot parse wrk output $out:"$'\n'"$(cat "$out")"
    read -r rps p50 p99 max reqs errs <<<"$parsed"
    if ((reqs > 0)); then
        cpu_us=$(awk -v d=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="$reqs" \
            'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
    fi
    # The share of the server core that went to anything but the server under test: other
    # work on the machine, which the numbers then include.
    local others
    others=$(awk -v c=$((core1 - core0)) -v t=$((ticks1 - ticks0)) -v hz="$CLK_TCK" \
        -v ms=$((end_ms - start_ms)) 'BEGIN { o = (c - t) / hz / (ms / 1000) * 100; printf "%.0f", o < 0 ? 0 : o }')
    if [[ $target == retrieve-expiry ]]; then
        finish_expiry "$round" "$start_ms" "$end_ms" "$WORK/polls-r$round.txt"
        expiry=${EXPIRY_FIGURES// /$'\t'}
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$round" "$target" "$rps" "$p50" "$p99" "$max" "$cpu_us" "$reqs" "$errs" "$others" "$expiry" \
        >>"$WORK/results.tsv"
    local note=""
    ((errs)) && note+="  ERRORS $errs"
    if [[ $target == retrieve-expiry ]]; then
        local at swept left
        read -r at swept left <<<"$EXPIRY_FIGURES"
        note+="  (expired at ${at} s, all swept at ${swept} s, $left left at the end)"
    fi
    log "$(printf 'round %d %-15s %10s req/s  p50 %6s us  p99 %7s us  max %8s us  cpu %6s us/req  others %3s%%%s' \
        "$round" "$target" "$rps" "$p50" "$p99" "$max" "$cpu_us" "$others" "$note")"
}

warm_up() {
    ((WARMUP > 0)) || return 0
    local target
    log "warming up (${WARMUP} s per target)"
    for target in publish retrieve nginx retrieve-full; do
        run_wrk "$target" "$WARMUP" "$WORK/wrk/warmup-$target.txt"
    done
}

# Round r starts with target (r-1) mod n, so no target is always first after another.
run_rounds() {
    local round i first targets
    read -r -a targets <<<"$ALL_TARGETS"
    local n=${#targets[@]}
    for ((round = 1; round <= ROUNDS; round++)); do
        first=$(((round - 1) % n))
        for ((i = 0; i < n; i++)); do
            measure "$round" "${targets[(first + i) % n]}"
        done
    done
}

# ---------------------------------------------------------------------------- set-up

# Four agentgwd instances, each with its own agent; hub_fill gives the retrieve targets their
# reusable blobs (and retrieve-full its --fill), then nginx gets a copy of a real answer.
set_up() {
    local name
    for name in $DAEMONS; do
        setup_daemon "$name"
    done
    for name in empty expiry; do
        stop_daemon "$name"
        fill "$name" "$REUSABLE" "$BLOB_TTL" "$WORK/tokens-$name.txt" "$SAMPLE"
        start_daemon "$name"
    done

    stop_daemon full
    fill full "$FILL" "$BLOB_TTL" "$WORK/tokens-full.txt" "$SAMPLE"
    read -r FILL_SECS FILL_RATE <<<"$(sed -n 's/.* in \([0-9.]*\) s: \([0-9]*\) blobs\/s.*/\1 \2/p' <<<"$FILL_OUT")"
    FULL_BYTES=$(stat -c %s "$WORK/full/state/data.mdb" 2>/dev/null || echo 0)
    start_daemon full
    local live
    live=$(blobs_live full)
    ((live >= FILL)) || die "agentgwd (full) reports $live live blobs, fewer than --fill $FILL"

    local got
    got=$(expect_retrieve empty "$(head -n1 "$WORK/tokens-empty.txt")" 200 "retrieving a reusable blob")
    RESP_BYTES=${got#* }
    mkdir -p "$WORK/nginx/www"
    cp "$WORK/check.body" "$WORK/nginx/www/blob.json"
    chmod 644 "$WORK/nginx/www/blob.json"
    start_nginx_floor
}

# ---------------------------------------------------------------------------- report

report() {
    python3 - "$WORK/results.tsv" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        "$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)" "$(nproc)" \
        "$("$NGINX" -v 2>&1 | sed 's|^nginx version: nginx/||')" "$(wrk -v 2>&1 | head -n1 | awk '{ print $2 }')" \
        "agentgwd $("$AGW_DAEMON" --version 2>&1 | head -n1) ($(agw_build_type) build, $BIN_DIR)" \
        "$ROUNDS" "$DURATION" "$WRK_CPU" "$SERVER_CPU" "$LOG_LEVEL" "$CONNS" "$BYTES" \
        "$FILL" "$EXPIRE" "$REUSABLE" "$EXPIRE_AT" "$FILL_SECS" "$FILL_RATE" "$FULL_BYTES" \
        "$RESP_BYTES" <<'PY'
import statistics
import sys

(path, when, cpu_model, ncpu, nginx_v, wrk_v, agw_v, rounds, duration, wrk_cpu, server_cpu,
 log_level, conns, data_bytes, fill, expire, reusable, expire_at, fill_secs, fill_rate,
 full_bytes, resp_bytes) = sys.argv[1:]
fill, expire, reusable = int(fill), int(expire), int(reusable)

TARGETS = [
    ("publish", "publish (durable)"),
    ("retrieve", f"retrieve, {reusable:,} blobs stored"),
    ("nginx", "nginx static 200 (floor)"),
    ("retrieve-full", f"retrieve, {fill:,} blobs stored"),
    ("retrieve-expiry", f"retrieve, {expire:,} expiring at +{expire_at} s"),
]

runs = {}
for line in open(path):
    (rnd, target, rps, p50, p99, mx, cpu, reqs, errs, others, at, swept,
     left) = line.rstrip("\n").split("\t")
    runs.setdefault(target, []).append(
        dict(rps=float(rps), p50=float(p50), p99=float(p99), max=float(mx),
             cpu=None if cpu == "-" else float(cpu), errs=int(errs), others=float(others),
             at=None if at == "-" else float(at), swept=None if swept == "-" else float(swept),
             left=None if left == "-" else int(left)))


def med(target, key):
    values = [r[key] for r in runs.get(target, []) if r[key] is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    return "–" if v is None else f"{v:,.{digits}f}"


out = []
out.append(f"## agentgwd hub benchmark ({when})")
out.append("")
out.append(f"- Machine: {cpu_model}, {ncpu} cores; wrk -t1 -c{conns} on core {wrk_cpu}, every "
           f"server (nginx, the agentgwd instances) on core {server_cpu}.")
out.append(f"- nginx {nginx_v} (worker_processes 1, access log off), wrk {wrk_v}, {agw_v}, "
           f"--log-level {log_level}, audit log on.")
out.append(f"- Blobs of {int(data_bytes):,} bytes of data; a retrieve answer is {resp_bytes} bytes "
           "of JSON, and nginx serves a copy of one. Publishes are reusable blobs with a 1 h ttl, "
           "each answered once durable (group commit, fsync).")
fill_note = ""
if fill_secs and fill_rate:
    fill_note = (f" hub_fill put them there in {float(fill_secs):.1f} s "
                 f"({int(fill_rate):,} blobs/s); the vault file is "
                 f"{int(full_bytes) / 1048576:,.0f} MiB.")
out.append(f"- retrieve-full holds {fill:,} live blobs and reads a random sample of "
           f"{min(fill, 1000):,} of them.{fill_note}")
out.append(f"- retrieve-expiry: before each of its runs, {expire:,} blobs are put into a stopped "
           f"daemon with one expiry time, {expire_at} s into the run; the daemon's sweeper "
           "removes them (batches of 500, one write each) while the run goes on.")
out.append(f"- {rounds} round(s) of {duration} s per run, targets alternating within each round; "
           "medians over the rounds. CPU µs/req: user+system time of the server's processes over "
           "the run / requests served. Others %: the share of the server core that went to other "
           "processes during the run (other work on the machine; 0 on a quiet one). Errors: "
           "non-2xx answers + socket errors, summed.")
out.append("")
out.append("| target | req/s | p50 µs | p99 µs | max µs | CPU µs/req | others % | errors |")
out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for t, label in TARGETS:
    if t not in runs:
        continue
    errors = sum(r["errs"] for r in runs[t])
    out.append(f"| {label} | {fmt(med(t, 'rps'))} | {fmt(med(t, 'p50'))} | {fmt(med(t, 'p99'))} "
               f"| {fmt(med(t, 'max'))} | {fmt(med(t, 'cpu'), 1)} | {fmt(med(t, 'others'))} "
               f"| {errors} |")
out.append("")

if "retrieve-expiry" in runs:
    sweeps = [f"{r['swept'] - r['at']:.1f} s" if r["swept"] is not None else "?"
              for r in runs["retrieve-expiry"]]
    lefts = [r["left"] for r in runs["retrieve-expiry"]]
    out.append(f"Mass expiry: the {expire:,} blobs were gone {', '.join(sweeps)} after their "
               f"expiry time (per round; the sweeper looks once a second); left when wrk "
               f"stopped: {', '.join(str(n) for n in lefts)}.")
    out.append("")

out.append("### Against the targets")
out.append("")
out.append("| target | measured | goal | ratio to goal | met |")
out.append("| --- | ---: | ---: | ---: | :---: |")


def row(name, measured, goal_text, ratio, ok):
    out.append(f"| {name} | {measured} | {goal_text} | "
               f"{'–' if ratio is None else f'{ratio:.2f}'} | "
               f"{'–' if ok is None else ('yes' if ok else '**no**')} |")


p = med("publish", "rps")
row("durable publishes/s", fmt(p), "≥ 10,000", None if p is None else p / 10000,
    None if p is None else p >= 10000)
r, n = med("retrieve", "rps"), med("nginx", "rps")
q = None if r is None or not n else r / n
row("retrieve req/s / nginx floor req/s", "–" if q is None else f"{q:.2f}× ({fmt(r)} / {fmt(n)})",
    "≥ 0.30×", None if q is None else q / 0.3, None if q is None else q >= 0.3)
e = med("retrieve", "p99")
f = med("retrieve-full", "p99")
q = None if e is None or f is None or not e else f / e
row(f"p99 with {fill:,} blobs / p99 with {reusable:,}",
    "–" if q is None else f"{q:.2f}× ({fmt(f)} / {fmt(e)} µs)", "≤ 1.2×",
    None if q is None else q / 1.2, None if q is None else q <= 1.2)
x = med("retrieve-expiry", "p99")
q = None if e is None or x is None or not e else x / e
row(f"p99 during the expiry of {expire:,} / p99 with {reusable:,}",
    "–" if q is None else f"{q:.2f}× ({fmt(x)} / {fmt(e)} µs)", "≤ 2×",
    None if q is None else q / 2, None if q is None else q <= 2)
out.append("")
out.append("Ratio to goal: above 1 is better for the first two rows, below 1 for the last two.")
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
    WORK=$(mktemp -d /tmp/hub-bench.XXXXXX)
    chmod 700 "$WORK"
    mkdir "$WORK/wrk" "$WORK/nginx"
    : >"$WORK/results.tsv"
    # No AGENTGWD_* variable of the caller's may change the set-up.
    local var
    for var in "${!AGENTGWD_@}"; do
        unset "$var"
    done

    local ports name
    read -r -a ports <<<"$(free_ports 5)"
    NGX_PORT=${ports[0]}
    local i=1
    for name in $DAEMONS; do
        PORT[$name]=${ports[i]}
        i=$((i + 1))
    done
    log "ports: nginx $NGX_PORT, agentgwd pub ${PORT[pub]}, empty ${PORT[empty]}, full ${PORT[full]}, expiry ${PORT[expiry]}; temp dir $WORK"

    set_up
    sanity_check
    warm_up
    local runs=$((ROUNDS * 5))
    log "measuring: $runs runs of $DURATION s, each retrieve-expiry run after a fill of $EXPIRE blobs"
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
