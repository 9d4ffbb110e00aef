#!/usr/bin/env bash
# bench.sh - issue 7's benchmark: rstunnel against stunnel4 on loopback, same
# generated configs, same load, A B A B interleaved rounds, medians, ratios,
# goals; writes BENCHMARKS.md and a PNG chart of the ratios against the goals.
#
# Per implementation a tunnel pair runs on 127.0.0.1 with mutual TLS (an EC
# P-256 CA, server and client certificates generated here at run time):
#
#   rstunnel-loadgen -> client tunnel -> TLS -> server tunnel -> loadgen backend
#
# Workloads (each in every round, both implementations):
#   1. bulk: BENCH_BYTES through one stream and through 8 streams, MiB/s, timed
#      until the sink confirms the byte count; CPU-seconds per GiB of both
#      tunnels (utime+stime from /proc/PID/stat before/after); the same load
#      without tunnels (plain TCP) as the ceiling.
#   2. syslog: BENCH_LINES lines of 200 bytes over one connection, one write()
#      per line and batched (whole lines, BENCH_BATCH-byte writes); the sink
#      checks every line's sequence number and content; lines/s and tunnel
#      CPU-seconds per million lines.
#   3. sessions/s with BENCH_CLIENTS concurrent clients (connect, one byte
#      echoed, close) through both tunnels, with session resumption (the
#      default) and without (`sessionResume = no` in both tunnels' section,
#      the same option for both implementations; checked before the rounds in
#      the tunnels' own INFO logs: "previous session reused" lines); full
#      handshakes/s into the server tunnel alone from the loadgen's own TLS
#      client (openssl crate, BENCH_CLIENTS threads, never resumed). Failures
#      counted. CPU-seconds per 1000 sessions.
#   4. latency: p50/p99 round trip of a 100-byte echo on one established
#      session, every process (loadgen, both tunnels, echo server) pinned to
#      CPU 0 with `taskset -c 0`.
#   5. idle sessions at each of BENCH_IDLE_LEVELS (fresh tunnels per level):
#      RSS KiB per session (both tunnels, after minus before), threads, all
#      held and answering (a second echo on every session once all are open),
#      and RSS growth after they all close (churn). A tunnel that crashes or
#      refuses is recorded as a result.
#   7. the status endpoint's cost: the throughput workloads once more per round
#      with rstunnel's `status = 127.0.0.1:PORT` on in both tunnels and curl
#      scraping /metrics of both every BENCH_SCRAPE seconds meanwhile
#      ("rstunnel-status"), against rstunnel without it, as ratios beside
#      rstunnel's own spread between rounds (the noise).
#   6. the loadgen's own CPU share (client + backend, in cores) is reported
#      next to every throughput figure: if it nears the cores the machine
#      has, the figure measures the generator, not the tunnel.
#
# As root the script raises the fd limit, kernel.pid_max and vm.max_map_count
# for the idle levels (rstunnel uses two threads per session per tunnel) and
# restores the sysctls on exit. gnuplot (Debian gnuplot-nox) draws the chart;
# it is installed with apt-get when missing and running as root.
#
# Environment (BENCH_QUICK=1 shrinks every default for a dev run, ~2 min):
#   RSTUNNEL, STUNNEL, LOADGEN   binaries (default target/release/rstunnel,
#                                stunnel4 from PATH, target/release/rstunnel-loadgen:
#                                the workspace member tools/loadgen, never installed)
#   BENCH_ROUNDS        rounds of the throughput/latency workloads (3)
#   BENCH_IDLE_ROUNDS   rounds of the idle levels (1: the 10,000 level alone takes
#                       minutes per implementation; RSS per session varies <1% between rounds)
#   BENCH_BYTES         bulk bytes per run (1073741824)
#   BENCH_LINES         syslog lines per run (1000000)
#   BENCH_BATCH         syslog batched write size (65536)
#   BENCH_SESSIONS      short sessions per run (2000)
#   BENCH_HANDSHAKES    handshakes per run (2000)
#   BENCH_CLIENTS       concurrent clients for sessions/handshakes (16)
#   BENCH_PINGS         latency round trips (20000)
#   BENCH_IDLE_LEVELS   idle session counts ("1000 5000 10000")
#   BENCH_SCRAPE        seconds between scrapes in the status-cost runs (1)
#   BENCH_NO_STATUS=1   skip the status-cost runs
#   BENCH_OUT           report (BENCHMARKS.md at the repository root)
#   BENCH_CHART         chart (docs/bench-ratios.png at the repository root)
#   BENCH_NO_BUILD=1    skip `cargo build --release -p rstunnel -p rstunnel-loadgen`
#   BENCH_NO_CHART=1    skip the chart
#   BENCH_KEEP=1        keep the temp dir (configs, certs, tunnel logs)
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    d_rounds=1 d_idle_rounds=1 d_bytes=134217728 d_lines=100000 d_sessions=300
    d_handshakes=300 d_pings=2000 d_levels="200 1000"
else
    d_rounds=3 d_idle_rounds=1 d_bytes=1073741824 d_lines=1000000 d_sessions=2000
    d_handshakes=2000 d_pings=20000 d_levels="1000 5000 10000"
fi
ROUNDS="${BENCH_ROUNDS:-$d_rounds}"
IDLE_ROUNDS="${BENCH_IDLE_ROUNDS:-$d_idle_rounds}"
BYTES="${BENCH_BYTES:-$d_bytes}"
LINES="${BENCH_LINES:-$d_lines}"
BATCH="${BENCH_BATCH:-65536}"
SESSIONS="${BENCH_SESSIONS:-$d_sessions}"
HANDSHAKES="${BENCH_HANDSHAKES:-$d_handshakes}"
CLIENTS="${BENCH_CLIENTS:-16}"
PINGS="${BENCH_PINGS:-$d_pings}"
read -r -a LEVELS <<<"${BENCH_IDLE_LEVELS:-$d_levels}"
OUT="${BENCH_OUT:-$ROOT/BENCHMARKS.md}"
CHART="${BENCH_CHART:-$ROOT/docs/bench-ratios.png}"

abspath() {
    case "$1" in
        /*) echo "$1" ;;
        */*) echo "$PWD/$1" ;;
        *) command -v "$1" || echo "$1" ;;
    esac
}
RSTUNNEL="$(abspath "${RSTUNNEL:-$ROOT/target/release/rstunnel}")"
STUNNEL="$(abspath "${STUNNEL:-stunnel4}")"
LOADGEN="$(abspath "${LOADGEN:-$ROOT/target/release/rstunnel-loadgen}")"
OUT="$(abspath "$OUT")"
CHART="$(abspath "$CHART")"

log() { echo "bench: $(date +%H:%M:%S) $*" >&2; }
die() { echo "bench: ERROR: $*" >&2; exit 1; }

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release -p rstunnel -p rstunnel-loadgen"
    (cd "$ROOT" && cargo build --release -p rstunnel -p rstunnel-loadgen) || die "build failed"
fi
for b in "$RSTUNNEL" "$STUNNEL" "$LOADGEN"; do
    [ -x "$b" ] || die "not executable: $b"
done
for t in openssl ss taskset curl; do
    command -v "$t" >/dev/null || die "$t not found (scripts/deps.sh)"
done
if [ "${BENCH_NO_CHART:-0}" != 1 ] && ! command -v gnuplot >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        log "installing gnuplot-nox for the chart"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gnuplot-nox >/dev/null 2>&1 \
            || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y --no-install-recommends gnuplot-nox >/dev/null 2>&1; } \
            || log "gnuplot-nox could not be installed; no chart"
    else
        log "gnuplot not found and not root: no chart (apt-get install gnuplot-nox)"
    fi
fi

# ---------------------------------------------------------------- limits
# The largest level needs, per session: fds in the loadgen, the echo server
# and both tunnels (4 each in rstunnel's accounting), and threads: 2 per
# tunnel in rstunnel, 1 in stunnel, 1 in the echo server.
max_level=0
for l in "${LEVELS[@]}"; do if [ "$l" -gt "$max_level" ]; then max_level="$l"; fi; done
want_fds=$((max_level * 6 + 4096))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want_fds" ]; then
    ulimit -Hn "$want_fds" 2>/dev/null || log "cannot raise the hard fd limit to $want_fds (not root?)"
fi
hard="$(ulimit -Hn)"
FD_NOTE=""
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want_fds" ]; then
    # Raising the hard limit needs CAP_SYS_RESOURCE (missing in some containers).
    FD_NOTE="the hard open-file limit is $hard here and cannot be raised (no CAP_SYS_RESOURCE), below the $want_fds the largest level wants: a tunnel process holds two descriptors per session (both implementations), so neither can hold more than about $((hard / 2)) sessions (rstunnel's connection cap, logged at startup, keeps 64 in reserve); refusals above that are this machine's limit, not the implementation's"
    log "WARNING: $FD_NOTE"
fi
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want_fds" ]; then want_fds="$hard"; fi
ulimit -n "$want_fds" || die "cannot raise the fd limit to $want_fds"

SYSCTL_RESTORE=()
raise_sysctl() { # raise_sysctl KEY NEED [TARGET]: if KEY < NEED set it to TARGET (default NEED); restored on exit
    local cur
    cur="$(sysctl -n "$1" 2>/dev/null)" || return 0
    [ "$cur" -ge "$2" ] && return 0
    if sysctl -qw "$1=${3:-$2}" 2>/dev/null; then
        SYSCTL_RESTORE+=("$1=$cur")
        log "raised $1 from $cur to ${3:-$2} (restored on exit)"
    else
        log "WARNING: $1 is $cur (< $2) and cannot be raised: the largest idle levels may fail"
    fi
}
# rstunnel: 2 threads per session per tunnel = 4 per session through both,
# plus 1 in the echo server (pids are shared machine-wide: keep headroom for
# the other work on the machine); each thread stack is ~2 maps in its process.
raise_sysctl kernel.pid_max $((max_level * 6 + 32768)) 4194304
raise_sysctl kernel.threads-max $((max_level * 8 + 65536))
raise_sysctl vm.max_map_count $((max_level * 8 + 65530))

WORK="$(mktemp -d /tmp/rstunnel-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.2
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for p in "${SYSCTL_RESTORE[@]}"; do sysctl -qw "$p" || echo "bench: could not restore $p" >&2; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf -- "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$WORK"

# ---------------------------------------------------------------- certificates
log "generating an EC P-256 CA, server and client certificates in $WORK"
ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec_key ca.key
openssl req -new -x509 -key ca.key -sha256 -days 2 -subj "/CN=rstunnel bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem 2>/dev/null
leaf() { # leaf NAME CN EXTENSIONS
    ec_key "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -sha256 -days 2 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
leaf server localhost "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"
leaf client bench-client "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
chmod 0600 ./*.key
openssl verify -CAfile ca.pem server.pem client.pem >/dev/null || die "generated certificates do not verify"

# ---------------------------------------------------------------- ports, backends
listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
in_use() { [ -n "$(ss -Htan "sport = :$1" 2>/dev/null)" ]; }
# Fixed ports below the ephemeral range: the sessions workload and everything
# else on the machine draw outgoing ports from that range, and a tunnel's
# bind would collide with one of them.
EPHEMERAL_LOW="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
[ "$EPHEMERAL_LOW" -gt 12000 ] || die "ephemeral port range starts at $EPHEMERAL_LOW: no room for fixed ports"
NEXT_PORT=$((10000 + RANDOM % (EPHEMERAL_LOW - 11000)))
pick_port() { # pick_port VAR: set VAR to the next free port (no subshell: NEXT_PORT advances)
    while in_use "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
    printf -v "$1" '%s' "$NEXT_PORT"
    NEXT_PORT=$((NEXT_PORT + 1))
}
SECTIONS=(bulk syslog sess sessnr lat)
for s in "${SECTIONS[@]}"; do pick_port "S_$s"; pick_port "C_$s"; done

# alive PID: running (a zombie is not)
alive() { kill -0 "$1" 2>/dev/null && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
# start_backend NAME SUBCOMMAND [PREFIX...]: a loadgen server on a fixed free
# port (so that it can be restarted on the same one); sets NAME_PORT and
# NAME_PID and remembers how to start it again.
declare -A BACKEND_CMD
BACKEND_EVENTS=()
start_backend() {
    local name="$1" sub="$2" pid port_var="${1}_PORT" up=""
    shift 2
    [ -n "${!port_var:-}" ] || pick_port "$port_var"
    BACKEND_CMD[$name]="$sub $*"
    "$@" "$LOADGEN" "$sub" --listen "127.0.0.1:${!port_var}" >"$name.out" 2>"$name.err" &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 100); do
        grep -q '^listening on' "$name.out" && { up=1; break; }
        alive "$pid" || break
        sleep 0.05
    done
    [ -n "$up" ] || die "loadgen $sub did not start on port ${!port_var}: $(cat "$name.err")"
    printf -v "${name}_PID" '%s' "$pid"
}
# ensure_backends: restart any backend that has gone (the machine is shared;
# a backend killed from outside would otherwise turn every later run into a
# tunnel failure). Each restart is logged with the exit status and reported.
ensure_backends() {
    local name pid_var rc cmd
    for name in SINK SYSLOG ECHO LECHO; do
        pid_var="${name}_PID"
        alive "${!pid_var}" && continue
        rc=0; wait "${!pid_var}" 2>/dev/null || rc=$?
        BACKEND_EVENTS+=("$(date +%H:%M:%S) $name backend had exited (status $rc$([ "$rc" -gt 128 ] && echo ", signal $((rc - 128))")); restarted")
        log "WARNING: ${BACKEND_EVENTS[${#BACKEND_EVENTS[@]} - 1]}"
        read -r -a cmd <<<"${BACKEND_CMD[$name]}"
        start_backend "$name" "${cmd[@]}"
    done
}
start_backend SINK sink
start_backend SYSLOG syslog-sink
start_backend ECHO echo
start_backend LECHO echo taskset -c 0 # the latency run's echo, pinned with the tunnels

# ---------------------------------------------------------------- configs
# One pair of files for both implementations; global-part values are
# inherited by the sections, as stunnel does. sessnr turns resumption off on
# both sides with the option both implementations document for it.
write_configs() { # write_configs DEBUG-LEVEL SUFFIX
    local s backend
    {
        echo "; bench.sh: server tunnel (TLS in, plain out), mutual TLS"
        echo "foreground = yes"
        echo "syslog = no"
        echo "debug = $1"
        echo "cert = $WORK/server.pem"
        echo "key = $WORK/server.key"
        echo "CAfile = $WORK/ca.pem"
        echo "verifyChain = yes"
        for s in "${SECTIONS[@]}"; do
            case "$s" in
                bulk) backend="$SINK_PORT" ;; syslog) backend="$SYSLOG_PORT" ;;
                lat) backend="$LECHO_PORT" ;; *) backend="$ECHO_PORT" ;;
            esac
            local sp="S_$s"
            echo
            echo "[$s]"
            echo "accept = 127.0.0.1:${!sp}"
            echo "connect = 127.0.0.1:$backend"
            if [ "$s" = sessnr ]; then echo "sessionResume = no"; fi
        done
    } >"server$2.conf"
    {
        echo "; bench.sh: client tunnel (plain in, TLS out), mutual TLS"
        echo "foreground = yes"
        echo "syslog = no"
        echo "debug = $1"
        echo "client = yes"
        echo "cert = $WORK/client.pem"
        echo "key = $WORK/client.key"
        echo "CAfile = $WORK/ca.pem"
        echo "verifyChain = yes"
        echo "checkHost = localhost"
        for s in "${SECTIONS[@]}"; do
            local sp="S_$s" cp="C_$s"
            echo
            echo "[$s]"
            echo "accept = 127.0.0.1:${!cp}"
            echo "connect = 127.0.0.1:${!sp}"
            if [ "$s" = sessnr ]; then echo "sessionResume = no"; fi
        done
    } >"client$2.conf"
}
write_configs warning ""
write_configs info "-info"
# The status-cost runs: the same files with the endpoint on (rstunnel only).
pick_port STATUS_S; pick_port STATUS_C
{ echo "status = 127.0.0.1:$STATUS_S"; cat server.conf; } >server-status.conf
{ echo "status = 127.0.0.1:$STATUS_C"; cat client.conf; } >client-status.conf
SCRAPE="${BENCH_SCRAPE:-1}"
SCRAPER_PID=""
# start_scraper / stop_scraper: curl on both tunnels' /metrics every $SCRAPE s;
# a scrape that fails is counted (it would mean the endpoint broke under load).
start_scraper() {
    (
        n=0 bad=0
        trap 'echo "scrapes=$n failed=$bad" >"$WORK/scrapes.last"; exit 0' TERM
        while :; do
            for p in "$STATUS_S" "$STATUS_C"; do
                n=$((n + 1))
                curl -sf --max-time 5 "http://127.0.0.1:$p/metrics" >/dev/null || bad=$((bad + 1))
            done
            sleep "$SCRAPE" & wait $!
        done
    ) &
    SCRAPER_PID=$!
    PIDS+=("$SCRAPER_PID")
}
stop_scraper() {
    [ -n "$SCRAPER_PID" ] || return 0
    kill -TERM "$SCRAPER_PID" 2>/dev/null || true
    wait "$SCRAPER_PID" 2>/dev/null || true
    SCRAPER_PID=""
    SCRAPES+=("$(cat "$WORK/scrapes.last" 2>/dev/null || echo "scrapes=? failed=?")")
}
SCRAPES=()

# ---------------------------------------------------------------- processes
status_field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
CLK_TCK="$(getconf CLK_TCK)"
# cpu_ticks PID...: utime+stime of the processes (fields 14 and 15 of
# /proc/PID/stat, counted after the parenthesised command name).
cpu_ticks() {
    local p t=0 v
    for p in "$@"; do
        v="$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')" || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
rss_kib() { echo $(( $(status_field "$1" VmRSS) + $(status_field "$2" VmRSS) )); }
threads_of() { echo $(( $(status_field "$1" Threads) + $(status_field "$2" Threads) )); }

SRV_PID=""; CLI_PID=""
# start_pair LABEL BINARY CONF-SUFFIX [PREFIX...]: both tunnels, up when every
# accept port listens.
start_pair() {
    local label="$1" bin="$2" sfx="$3" s p
    shift 3
    "$@" "$bin" "$WORK/server$sfx.conf" >"$label-server.log" 2>&1 &
    SRV_PID=$!
    "$@" "$bin" "$WORK/client$sfx.conf" >"$label-client.log" 2>&1 &
    CLI_PID=$!
    PIDS+=("$SRV_PID" "$CLI_PID")
    for s in "${SECTIONS[@]}"; do
        for p in "S_$s" "C_$s"; do
            for _ in $(seq 1 200); do
                listening "${!p}" && break
                alive "$SRV_PID" && alive "$CLI_PID" || break
                sleep 0.05
            done
            if ! listening "${!p}"; then
                log "$label: tunnels did not come up (port ${!p}); last log lines:"
                tail -n 5 "$label-server.log" "$label-client.log" >&2 || true
                stop_pair
                return 1
            fi
        done
    done
}
stop_pair() {
    local p
    for p in "$SRV_PID" "$CLI_PID"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
    done
    for p in "$SRV_PID" "$CLI_PID"; do
        [ -n "$p" ] || continue
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    SRV_PID=""; CLI_PID=""
}

# ---------------------------------------------------------------- results
# R[metric,impl] = space-separated per-round values ("fail" when a run failed).
declare -A R
add() { R[$1,$2]="${R[$1,$2]:-}${R[$1,$2]:+ }$3"; }
kv() { sed -n "s/.*[ :]$1=\([^ ]*\).*/\1/p" <<<"$2" | head -n 1; }
calc() { awk "BEGIN { printf \"$1\n\", $2 }"; }

# run_client METRIC IMPL UNIT-DIVISOR TUNNEL-PIDS -- LOADGEN-ARGS...
# Runs one loadgen client; records METRIC (its rate field), METRIC_cpu
# (CPU-seconds of TUNNEL-PIDS per unit = seconds / UNIT-DIVISOR), METRIC_lg
# (loadgen CPU share: client + backends, in cores) and METRIC_fail.
LAST=""
run_client() {
    local metric="$1" impl="$2" per="$3" field out rc=0 t0 t1 b0 b1 secs lcpu
    shift 3
    local pids=()
    while [ "$1" != -- ]; do pids+=("$1"); shift; done
    shift
    case "$1" in bulk) field=mib_per_s ;; syslog) field=lines_per_s ;; *) field=per_s ;; esac
    ensure_backends
    t0="$(cpu_ticks "${pids[@]}")"
    b0="$(cpu_ticks "$SINK_PID" "$SYSLOG_PID" "$ECHO_PID" "$LECHO_PID")"
    out="$("$LOADGEN" "$@" 2>&1)" || rc=$?
    t1="$(cpu_ticks "${pids[@]}")"
    b1="$(cpu_ticks "$SINK_PID" "$SYSLOG_PID" "$ECHO_PID" "$LECHO_PID")"
    LAST="$out"
    if [ "$rc" -ne 0 ] || [ -z "$(kv "$field" "$out")" ]; then
        log "$impl $metric failed: $(tr '\n' ' ' <<<"$out")"
        add "$metric" "$impl" fail; add "${metric}_cpu" "$impl" fail
        add "${metric}_lg" "$impl" fail; add "${metric}_fail" "$impl" fail
        return 0
    fi
    secs="$(kv seconds "$out")"
    lcpu="$(kv cpu_s "$out")"
    add "$metric" "$impl" "$(kv "$field" "$out")"
    if [ "${#pids[@]}" -gt 0 ]; then
        add "${metric}_cpu" "$impl" "$(calc %.3f "($t1 - $t0) / $CLK_TCK / ($per)")"
    fi
    add "${metric}_lg" "$impl" "$(calc %.2f "($lcpu + ($b1 - $b0) / $CLK_TCK) / $secs")"
    add "${metric}_fail" "$impl" "$(kv failed "$out" || true)"
}

GIB="$(calc %.6f "$BYTES / 1073741824")"
MLINES="$(calc %.6f "$LINES / 1000000")"

# One round of the throughput workloads through a started pair.
throughput_round() {
    local impl="$1"
    run_client bulk1 "$impl" "$GIB" "$SRV_PID" "$CLI_PID" -- \
        bulk --connect "127.0.0.1:$C_bulk" --bytes "$BYTES" --streams 1
    run_client bulk8 "$impl" "$GIB" "$SRV_PID" "$CLI_PID" -- \
        bulk --connect "127.0.0.1:$C_bulk" --bytes "$BYTES" --streams 8
    run_client sys1 "$impl" "$MLINES" "$SRV_PID" "$CLI_PID" -- \
        syslog --connect "127.0.0.1:$C_syslog" --count "$LINES" --batch 0
    run_client sysb "$impl" "$MLINES" "$SRV_PID" "$CLI_PID" -- \
        syslog --connect "127.0.0.1:$C_syslog" --count "$LINES" --batch "$BATCH"
    run_client sessr "$impl" "$SESSIONS / 1000" "$SRV_PID" "$CLI_PID" -- \
        sessions --connect "127.0.0.1:$C_sess" --count "$SESSIONS" --threads "$CLIENTS"
    run_client sessn "$impl" "$SESSIONS / 1000" "$SRV_PID" "$CLI_PID" -- \
        sessions --connect "127.0.0.1:$C_sessnr" --count "$SESSIONS" --threads "$CLIENTS"
    run_client hs "$impl" "$HANDSHAKES / 1000" "$SRV_PID" -- \
        handshakes --connect "127.0.0.1:$S_sess" --count "$HANDSHAKES" --threads "$CLIENTS" \
        --ca "$WORK/ca.pem" --cert "$WORK/client.pem" --key "$WORK/client.key"
}

latency_round() {
    local impl="$1" out
    ensure_backends
    if ! out="$(taskset -c 0 "$LOADGEN" latency --connect "127.0.0.1:$C_lat" --count "$PINGS" --size 100 2>&1)"; then
        log "$impl latency failed: $out"
        add p50 "$impl" fail; add p99 "$impl" fail; add p50_lg "$impl" fail; add p99_lg "$impl" fail
        return 0
    fi
    add p50 "$impl" "$(kv p50_us "$out")"
    add p99 "$impl" "$(kv p99_us "$out")"
    add p50_lg "$impl" "$(kv cpu_share "$out")"
    add p99_lg "$impl" "$(kv cpu_share "$out")"
}

# idle_level IMPL BINARY LEVEL: fresh tunnels; LEVEL idle sessions.
idle_level() {
    local impl="$1" bin="$2" n="$3" before after held thr out lpid secs="" est ans refused
    local rss="fail" threads="fail" setup="fail" state="tunnels did not start" churn="fail"
    ensure_backends
    if start_pair "$impl-idle$n" "$bin" ""; then
        # Warm-up: one session end to end, so one-time allocations (TLS
        # context caches, first thread) are in the baseline.
        "$LOADGEN" idle --connect "127.0.0.1:$C_sess" --count 1 --hold 0 >/dev/null 2>&1 \
            || log "$impl: warm-up session failed"
        sleep 0.5
        before="$(rss_kib "$SRV_PID" "$CLI_PID")"
        thr="$(threads_of "$SRV_PID" "$CLI_PID")"
        rm -f ctl; mkfifo ctl
        "$LOADGEN" idle --connect "127.0.0.1:$C_sess" --count "$n" --batch 100 <ctl >"idle.out" 2>&1 &
        lpid=$!
        PIDS+=("$lpid")
        exec 3>ctl
        for _ in $(seq 1 $((n / 10 + 1200))); do
            grep -q '^idle: established' idle.out && break
            alive "$lpid" || break
            sleep 0.1
        done
        out="$(grep '^idle: established' idle.out || true)"
        est="$(kv established "$out")"; ans="$(kv answering "$out")"; refused="$(kv refused "$out")"
        secs="$(kv seconds "$out")"
        if alive "$SRV_PID" && alive "$CLI_PID"; then
            state="${est:-0}/$n held, ${ans:-0} answering"
            [ "${refused:--}" != - ] && state="$state; refused: ${refused//_/ }"
        else
            state="CRASHED ($(alive "$SRV_PID" || echo "server ")$(alive "$CLI_PID" || echo "client")exited) at ${est:-?} of $n"
        fi
        # A tunnel that refused says why in its log (both cap sessions by the fd limit).
        local why
        why="$(grep -h -m1 -o 'rejected: too many clients.*\|Connection cap:.*' "$impl-idle$n-client.log" "$impl-idle$n-server.log" 2>/dev/null | grep -m1 rejected || true)"
        [ -z "$why" ] || state="$state (tunnel log: $why)"
        if [ -n "$est" ] && [ "$est" -gt 0 ] && alive "$SRV_PID" && alive "$CLI_PID"; then
            # Idle means idle: both tunnels get 4 s after the last echo (session tickets
            # parsed, buffers released; rstunnel's pumps let go of their buffers and stacks
            # after 1 s quiet and free heap pages go back at most every 2 s).
            sleep 4
            after="$(rss_kib "$SRV_PID" "$CLI_PID")"
            threads="$(threads_of "$SRV_PID" "$CLI_PID")"
            rss="$(calc %.1f "($after - $before) / $est")"
            setup="$secs"
        fi
        exec 3>&- # EOF on the loadgen's stdin: it closes every session
        for _ in $(seq 1 600); do alive "$lpid" || break; sleep 0.1; done
        kill -TERM "$lpid" 2>/dev/null || true
        wait "$lpid" 2>/dev/null || true
        # Churn: wait until the tunnels are back to their idle thread count.
        if alive "$SRV_PID" && alive "$CLI_PID"; then
            for _ in $(seq 1 300); do
                [ "$(threads_of "$SRV_PID" "$CLI_PID")" -le "$thr" ] && break
                sleep 0.1
            done
            sleep 1
            churn="$(( $(rss_kib "$SRV_PID" "$CLI_PID") - before ))"
        fi
        stop_pair
    fi
    add "rss$n" "$impl" "$rss"
    add "thr$n" "$impl" "$threads"
    add "setup$n" "$impl" "${setup:-fail}"
    add "churn$n" "$impl" "$churn"
    add "held$n" "$impl" "${est:-0}/${ans:-0}"
    R[state$n,$impl]="${R[state$n,$impl]:-}${R[state$n,$impl]:+; }round $IR: $state"
    log "$impl idle $n: $state; ${rss} KiB/session, $threads threads, setup ${setup:-fail} s, churn $churn KiB"
}

# ---------------------------------------------------------------- resumption check
# Both tunnels at debug = info log "previous session reused" for each resumed
# handshake (client and server side). sess must resume, sessnr must not.
declare -A RESUME
check_resumption() {
    local impl="$1" bin="$2" c0 c1 c2 s0 s1 s2
    start_pair "$impl-resume" "$bin" "-info" || { RESUME[$impl]="tunnels did not start"; return 0; }
    count_reused() { grep -c 'previous session reused' "$1" || true; }
    c0="$(count_reused "$impl-resume-client.log")"; s0="$(count_reused "$impl-resume-server.log")"
    "$LOADGEN" sessions --connect "127.0.0.1:$C_sess" --count 5 --threads 1 >/dev/null 2>&1 || true
    sleep 0.3
    c1="$(count_reused "$impl-resume-client.log")"; s1="$(count_reused "$impl-resume-server.log")"
    "$LOADGEN" sessions --connect "127.0.0.1:$C_sessnr" --count 5 --threads 1 >/dev/null 2>&1 || true
    sleep 0.3
    c2="$(count_reused "$impl-resume-client.log")"; s2="$(count_reused "$impl-resume-server.log")"
    stop_pair
    RESUME[$impl]="default section: $((c1 - c0))/5 client and $((s1 - s0))/5 server handshakes resumed; sessionResume = no: $((c2 - c1))/5 and $((s2 - s1))/5"
    log "$impl resumption: ${RESUME[$impl]}"
}

IMPLS=(rstunnel stunnel4)
declare -A BIN=([rstunnel]="$RSTUNNEL" [stunnel4]="$STUNNEL")
log "rounds=$ROUNDS idle-rounds=$IDLE_ROUNDS bytes=$BYTES lines=$LINES sessions=$SESSIONS handshakes=$HANDSHAKES clients=$CLIENTS pings=$PINGS idle-levels=${LEVELS[*]} fd-limit=$(ulimit -n)"
for impl in "${IMPLS[@]}"; do check_resumption "$impl" "${BIN[$impl]}"; done

for round in $(seq 1 "$ROUNDS"); do
    run_client plain1 plain "$GIB" -- bulk --connect "127.0.0.1:$SINK_PORT" --bytes "$BYTES" --streams 1
    run_client plain8 plain "$GIB" -- bulk --connect "127.0.0.1:$SINK_PORT" --bytes "$BYTES" --streams 8
    log "round $round: plain TCP $(kv mib_per_s "$LAST") MiB/s (8 streams)"
    for impl in "${IMPLS[@]}"; do
        if start_pair "$impl" "${BIN[$impl]}" ""; then
            throughput_round "$impl"
            stop_pair
        else
            for m in bulk1 bulk8 sys1 sysb sessr sessn hs; do add "$m" "$impl" fail; done
        fi
        if [ "$impl" = rstunnel ] && [ "${BENCH_NO_STATUS:-0}" != 1 ]; then
            if start_pair rstunnel-status "$RSTUNNEL" "-status"; then
                start_scraper
                throughput_round rstunnel-status
                stop_scraper
                stop_pair
            else
                for m in bulk1 bulk8 sys1 sysb sessr sessn hs; do add "$m" rstunnel-status fail; done
            fi
        fi
        if start_pair "$impl-pinned" "${BIN[$impl]}" "" taskset -c 0; then
            latency_round "$impl"
            stop_pair
        else
            add p50 "$impl" fail; add p99 "$impl" fail
        fi
        log "round $round: $impl bulk ${R[bulk1,$impl]##* }/${R[bulk8,$impl]##* } MiB/s," \
            "syslog ${R[sys1,$impl]##* }/${R[sysb,$impl]##* } lines/s," \
            "sessions ${R[sessr,$impl]##* }/${R[sessn,$impl]##* }/s, handshakes ${R[hs,$impl]##* }/s," \
            "echo p50/p99 ${R[p50,$impl]##* }/${R[p99,$impl]##* } us"
    done
done
for IR in $(seq 1 "$IDLE_ROUNDS"); do
    for n in "${LEVELS[@]}"; do
        for impl in "${IMPLS[@]}"; do idle_level "$impl" "${BIN[$impl]}" "$n"; done
    done
done
RUNTIME=$SECONDS

# ---------------------------------------------------------------- report
median() { # median V1 V2 ...: of the numeric arguments; "n/a" if none
    printf '%s\n' "$@" | { grep -E '^-?[0-9.]+$' || true; } | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "n/a"; exit }
            if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}
# shellcheck disable=SC2086 # the per-round lists are space-separated on purpose
med() { median ${R[$1,$2]:-}; }
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a !~ /^-?[0-9.]+$/ || b !~ /^-?[0-9.]+$/ || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'
}
# verdict RATIO OP GOAL: met / missed / n/a
verdict() {
    awk -v r="$1" -v op="$2" -v g="$3" 'BEGIN {
        if (r !~ /^-?[0-9.]+$/) { print "n/a"; exit }
        ok = (op == ">=") ? (r + 0 >= g + 0) : (r + 0 <= g + 0)
        print ok ? "met" : "**missed**" }'
}
CHART_DATA="$WORK/chart.dat"
: >"$CHART_DATA"
# row LABEL METRIC OP GOAL [CHART-LABEL]: one table row of medians, ratio and
# goal; with a chart label the ratio also goes to the chart.
row() {
    local a b r v goal_txt="" lg_a lg_b
    a="$(med "$2" rstunnel)"; b="$(med "$2" stunnel4)"; r="$(ratio "$a" "$b")"
    v="-"
    if [ -n "$3" ]; then
        v="$(verdict "$r" "$3" "$4")"; goal_txt="${3/>=/≥}"; goal_txt="${goal_txt/<=/≤}$4"
        [ -n "${5:-}" ] && printf '"%s" %s %s %s\n' "$5" "${r/n\/a/0}" "$4" \
            "$([ "$v" = met ] && echo 1 || echo 0)" >>"$CHART_DATA"
    fi
    lg_a="$(med "${2}_lg" rstunnel)"; lg_b="$(med "${2}_lg" stunnel4)"
    local lg="$lg_a / $lg_b"
    [ "$lg_a$lg_b" = "n/an/a" ] && lg="–"
    echo "| $1 | $a | $b | $r | ${goal_txt:-–} | $v | $lg |"
}
# cost_row LABEL METRIC: rstunnel with the status endpoint against rstunnel
# without, and rstunnel's own spread between rounds.
cost_row() {
    local a b r spread within
    a="$(med "$2" rstunnel)"; b="$(med "$2" rstunnel-status)"; r="$(ratio "$b" "$a")"
    # shellcheck disable=SC2086 # the per-round list is space-separated on purpose
    spread="$(printf '%s\n' ${R[$2,rstunnel]:-} | { grep -E '^-?[0-9.]+$' || true; } | sort -g \
        | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR < 2 || lo + 0 == 0) print "n/a"; else printf "%.2f\n", hi / lo }')"
    within="$(awk -v r="$r" -v s="$spread" 'BEGIN {
        if (r !~ /^[0-9.]+$/ || s !~ /^[0-9.]+$/) { print "n/a"; exit }
        print (r <= s && r >= 1 / s) ? "yes" : "**no**" }')"
    echo "| $1 | $a | $b | $r | $spread | $within |"
}
HDR="| measure | rstunnel | stunnel4 | ratio | goal | | loadgen CPU (cores) |
|---|---:|---:|---:|---:|---|---:|"
per_round() { # per_round METRIC...: the raw lists
    local m
    for m in "$@"; do
        echo "| $m | ${R[$m,rstunnel]:-} | ${R[$m,stunnel4]:-} |"
    done
}
version_of() {
    local all
    all="$("$1" -version 2>&1 || true)"
    grep -m1 -E '(^|[] :])r?stunnel[ -]v?[0-9]' <<<"$all" || head -n 1 <<<"$all"
}
cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
mib() { calc %g "$1 / 1048576"; }
runtime_txt="$((RUNTIME / 60)) min $((RUNTIME % 60)) s"

report() {
    echo "# Benchmarks: rstunnel vs stunnel4"
    echo
    echo "Generated by \`scripts/bench.sh\`$([ "${BENCH_QUICK:-0}" = 1 ] && echo " (BENCH_QUICK=1)") on $(date -u '+%Y-%m-%d %H:%M UTC'); the run took $runtime_txt."
    echo
    echo "![ratios rstunnel/stunnel4 against the goals]($(realpath -m --relative-to="$(dirname "$OUT")" "$CHART"))"
    echo
    echo "## Machine"
    echo
    echo "- CPU: $(nproc) core(s)${cpu:+, $cpu}; $(awk '/^MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
    echo "- Kernel: Linux $(uname -r)"
    echo "- OpenSSL: $(openssl version)"
    echo "- rstunnel: \`$(version_of "$RSTUNNEL")\` ($RSTUNNEL)"
    echo "- stunnel4: \`$(version_of "$STUNNEL")\` ($STUNNEL)"
    echo "- Load: the machine was shared with other builds and tests (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)); interleaving and medians are there to absorb that."
    echo
    echo "## Method"
    echo
    echo "Client tunnel and server tunnel on 127.0.0.1, mutual TLS with an EC P-256 CA and certificates"
    echo "generated at run time, the same two config files for both implementations (\`debug = warning\`)."
    echo "$ROUNDS rounds of the throughput and latency workloads and $IDLE_ROUNDS of the idle levels, the implementations"
    echo "interleaved (rstunnel, stunnel4, rstunnel, ...); every figure is the median over the rounds;"
    echo "ratio = rstunnel / stunnel4. The load comes from \`rstunnel-loadgen\` (Rust, std threads); its"
    echo "CPU (client and backend process together, in cores; the machine has $(nproc)) is shown next"
    echo "to each figure (rstunnel run / stunnel4 run), so a generator near saturation would show."
    echo "CPU-seconds are utime+stime of the tunnel processes from /proc/PID/stat around each run."
    echo
    echo "- **bulk**: $(mib "$BYTES") MiB per run to a sink that counts and acknowledges the bytes; the clock stops at the"
    echo "  acknowledgement. One stream, and 8 streams splitting the same total."
    echo "- **syslog**: $LINES lines of 200 bytes (RFC 5424 header, zero-padded sequence number) over one"
    echo "  connection; one \`write()\` per line, or whole lines batched into writes of up to $BATCH bytes."
    echo "  The sink compares every line with the one expected at its position; any mismatch or missing line fails the run."
    echo "- **sessions**: $SESSIONS sessions per run from $CLIENTS concurrent clients: connect to the client tunnel,"
    echo "  one byte echoed by the backend, close. \"Without resumption\" is a section with"
    echo "  \`sessionResume = no\` in both tunnels, the same option for both implementations. Checked before"
    echo "  the rounds at \`debug = info\` (\"previous session reused\" lines, 5 sequential sessions):"
    echo "  - rstunnel: ${RESUME[rstunnel]:-not checked}"
    echo "  - stunnel4: ${RESUME[stunnel4]:-not checked}"
    echo "- **handshakes**: $HANDSHAKES full TLS 1.3 handshakes per run from $CLIENTS threads of the loadgen's own"
    echo "  TLS client (openssl crate, client certificate, a fresh SSL each time, no session set; a resumed"
    echo "  one would fail the run) straight into the server tunnel, one byte echoed each. CPU is the server tunnel's."
    echo "- **latency**: $PINGS round trips (after 1000 warm-up) of a 100-byte message on one session; the"
    echo "  loadgen, both tunnels and the echo server all pinned to CPU 0 (\`taskset -c 0\`)."
    echo "- **idle**: fresh tunnels per level; after one warm-up session, N sessions opened (100 at a time,"
    echo "  one byte echoed each), then a second echo on every one (\"answering\"); RSS is VmRSS of both"
    echo "  tunnels 4 s after that, minus before, divided by N. Churn = RSS of both tunnels after all N closed and"
    echo "  the threads are gone, minus before (KiB in total). fd limit $(ulimit -n); kernel.pid_max, threads-max and"
    echo "  vm.max_map_count raised for the run when lower than the largest level needs."
    [ -z "$FD_NOTE" ] || echo "- **Limit of this machine**: $FD_NOTE."
    local e
    for e in "${BACKEND_EVENTS[@]}"; do echo "- **Backend restarted** during the run: $e (runs that hit the dead backend count as failures)."; done
    echo
    echo "## Bulk throughput"
    echo
    echo "$HDR"
    row "1 stream, MiB/s" bulk1 ">=" 1.3 "bulk 1 stream"
    row "8 streams, MiB/s" bulk8 ">=" 1.3 "bulk 8 streams"
    row "1 stream, tunnel CPU-s per GiB" bulk1_cpu "<=" 0.75 "CPU-s/GiB 1 stream"
    row "8 streams, tunnel CPU-s per GiB" bulk8_cpu "<=" 0.75 "CPU-s/GiB 8 streams"
    echo
    echo "Plain TCP without tunnels (the ceiling): $(med plain1 plain) MiB/s with 1 stream, $(med plain8 plain) MiB/s with 8 (loadgen CPU $(med plain1_lg plain) / $(med plain8_lg plain) cores)."
    echo
    echo "## Syslog lines"
    echo
    echo "$HDR"
    row "one write() per line, lines/s" sys1 ">=" 1.2 "lines/s per line"
    row "batched $BATCH-byte writes, lines/s" sysb ">=" 1.2 "lines/s batched"
    row "one write() per line, tunnel CPU-s per million lines" sys1_cpu "" ""
    row "batched, tunnel CPU-s per million lines" sysb_cpu "" ""
    echo
    echo "## New sessions"
    echo
    echo "$HDR"
    row "through both tunnels, with resumption, sessions/s" sessr ">=" 2 "sessions/s resumed"
    row "through both tunnels, without resumption, sessions/s" sessn ">=" 2 "sessions/s full"
    row "full handshakes/s into the server tunnel alone" hs ">=" 2 "handshakes/s"
    row "with resumption, CPU-s per 1000 sessions (both tunnels)" sessr_cpu "" ""
    row "without resumption, CPU-s per 1000 sessions (both tunnels)" sessn_cpu "" ""
    row "handshakes, server tunnel CPU-s per 1000" hs_cpu "" ""
    echo
    echo "Failed sessions per run (rstunnel / stunnel4): with resumption ${R[sessr_fail,rstunnel]:-} / ${R[sessr_fail,stunnel4]:-};"
    echo "without ${R[sessn_fail,rstunnel]:-} / ${R[sessn_fail,stunnel4]:-}; handshakes ${R[hs_fail,rstunnel]:-} / ${R[hs_fail,stunnel4]:-}."
    echo
    if [ "${BENCH_NO_STATUS:-0}" != 1 ]; then
        echo "## The status endpoint's cost"
        echo
        echo "The throughput workloads again in every round, with \`status = 127.0.0.1:PORT\` in both rstunnel"
        echo "tunnels and curl scraping both /metrics every $SCRAPE s throughout (what a Prometheus scraping"
        echo "every 15 s does fifteen times over). ratio = with the endpoint / without; \"noise\" is"
        echo "rstunnel's own spread between its rounds without the endpoint (max / min)."
        echo "Scrapes per round: ${SCRAPES[*]:-none}."
        echo
        echo "| measure | rstunnel | with status | ratio | noise (max/min of rstunnel's rounds) | within noise |"
        echo "|---|---:|---:|---:|---:|---|"
        cost_row "1 stream, tunnel CPU-s per GiB" bulk1_cpu
        cost_row "8 streams, tunnel CPU-s per GiB" bulk8_cpu
        cost_row "1 stream, MiB/s" bulk1
        cost_row "8 streams, MiB/s" bulk8
        cost_row "syslog one write() per line, CPU-s per million lines" sys1_cpu
        cost_row "syslog batched, CPU-s per million lines" sysb_cpu
        cost_row "sessions/s with resumption" sessr
        cost_row "full handshakes/s" hs
        cost_row "with resumption, CPU-s per 1000 sessions (both tunnels)" sessr_cpu
        cost_row "handshakes, server tunnel CPU-s per 1000" hs_cpu
        echo
        echo "The rates include the scraper's own cost: curl is a process started twice a second on a"
        echo "machine of $(nproc) cores that the CPU-bound workloads already fill; the tunnels' CPU-s per unit are"
        echo "the endpoint's cost to rstunnel."
        echo
    fi
    echo "## Round-trip latency, 100-byte echo, everything on CPU 0"
    echo
    echo "$HDR" | sed 's/loadgen CPU (cores)/loadgen CPU (share of CPU 0)/'
    row "p50, µs" p50 "<=" 0.8 "echo p50"
    row "p99, µs" p99 "<=" 0.8 "echo p99"
    echo
    echo "## Idle sessions"
    echo
    echo "| sessions | measure | rstunnel | stunnel4 | ratio | goal | |"
    echo "|---:|---|---:|---:|---:|---:|---|"
    local n a b r
    for n in "${LEVELS[@]}"; do
        a="$(med "rss$n" rstunnel)"; b="$(med "rss$n" stunnel4)"; r="$(ratio "$a" "$b")"
        echo "| $n | RSS KiB per idle session (both tunnels) | $a | $b | $r | ≤0.5 | $(verdict "$r" "<=" 0.5) |"
        printf '"%s" %s %s %s\n' "RSS/session @$n" "${r/n\/a/0}" 0.5 \
            "$([ "$(verdict "$r" "<=" 0.5)" = met ] && echo 1 || echo 0)" >>"$CHART_DATA"
        a="$(med "thr$n" rstunnel)"; b="$(med "thr$n" stunnel4)"
        echo "| $n | threads of both tunnels | $a | $b | $(ratio "$a" "$b") | | |"
        a="$(med "setup$n" rstunnel)"; b="$(med "setup$n" stunnel4)"
        echo "| $n | seconds to open them | $a | $b | $(ratio "$a" "$b") | | |"
        a="$(med "churn$n" rstunnel)"; b="$(med "churn$n" stunnel4)"
        echo "| $n | RSS growth after all closed (KiB, both tunnels) | $a | $b | | | |"
    done
    echo
    echo "Held and answering, per round:"
    echo
    for n in "${LEVELS[@]}"; do
        echo "- $n sessions: rstunnel ${R[state$n,rstunnel]:-}; stunnel4 ${R[state$n,stunnel4]:-}"
    done
    local top="${LEVELS[${#LEVELS[@]} - 1]}" goal10k="**missed**"
    if [ -n "${R[held$top,rstunnel]:-}" ] && ! tr ' ' '\n' <<<"${R[held$top,rstunnel]}" | grep -qv "^$top/$top\$"; then
        goal10k=met
    fi
    echo
    if [ "$goal10k" != met ] && [ -n "$FD_NOTE" ]; then
        goal10k="$goal10k (not reachable on this machine: see the open-file limit under Method)"
    fi
    echo "Goal: all $top sessions held and answering through rstunnel in every round: $goal10k."
    echo
    echo "## Per round (round 1 first)"
    echo
    echo "| metric | rstunnel | stunnel4 |"
    echo "|---|---|---|"
    per_round bulk1 bulk8 bulk1_cpu bulk8_cpu sys1 sysb sys1_cpu sysb_cpu sessr sessn hs \
        sessr_cpu sessn_cpu hs_cpu p50 p99
    for n in "${LEVELS[@]}"; do per_round "rss$n" "thr$n" "setup$n" "churn$n"; done
    echo "| plain TCP MiB/s 1 / 8 streams | ${R[plain1,plain]:-} | ${R[plain8,plain]:-} |"
    local m
    for m in bulk1 bulk8 bulk1_cpu bulk8_cpu sys1_cpu sysb_cpu sessr sessr_cpu hs hs_cpu; do
        [ -n "${R[$m,rstunnel-status]:-}" ] && echo "| $m with status | ${R[$m,rstunnel-status]} | |"
    done
    echo
    echo "Settings: BENCH_ROUNDS=$ROUNDS BENCH_IDLE_ROUNDS=$IDLE_ROUNDS BENCH_BYTES=$BYTES BENCH_LINES=$LINES"
    echo "BENCH_BATCH=$BATCH BENCH_SESSIONS=$SESSIONS BENCH_HANDSHAKES=$HANDSHAKES BENCH_CLIENTS=$CLIENTS"
    echo "BENCH_PINGS=$PINGS BENCH_IDLE_LEVELS=\"${LEVELS[*]}\"; total run time $runtime_txt."
    # The written analysis (profiles, what each change bought, what would close a missed
    # goal) lives in docs/bench-analysis.md so that a new run keeps it.
    if [ -f "$ROOT/docs/bench-analysis.md" ]; then
        echo
        cat "$ROOT/docs/bench-analysis.md"
    fi
}
echo
report | tee "$OUT"
log "results written to $OUT"

if [ "${BENCH_NO_CHART:-0}" != 1 ]; then
    if command -v gnuplot >/dev/null; then
        mkdir -p "$(dirname "$CHART")"
        gnuplot -e "datafile='$CHART_DATA'; outfile='$CHART'" "$ROOT/scripts/bench-chart.gp" \
            && log "chart written to $CHART" || log "gnuplot failed; no chart"
    else
        log "no gnuplot: no chart"
    fi
fi
