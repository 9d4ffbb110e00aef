#!/usr/bin/env bash
# bench.sh - rstunnel against stunnel4 on loopback, same configs, same load.
#
# Per implementation a tunnel pair runs on 127.0.0.1 with mutual TLS (an
# EC P-256 CA, server and client certificates generated here at run time):
#
#   loadgen -> client tunnel -> TLS -> server tunnel -> loadgen sink / echo
#
# Measured per round, the implementations interleaved (A B A B ...):
#   * bulk throughput: one stream of BENCH_BYTES (default 1 GiB), MiB/s,
#     timed until the sink confirms the byte count;
#   * memory per idle session: VmRSS of both tunnels with BENCH_IDLE
#     (default 1000) established, echoed, idle sessions, minus VmRSS before,
#     divided by the session count (KiB);
#   * threads of both tunnels while those sessions are open;
#   * the plain-TCP ceiling (loadgen straight to the sink) once per round.
# Medians over the rounds and the ratio rstunnel/stunnel4 go to stdout and
# to BENCHMARKS.md. Not part of `make test`: numbers, not pass/fail.
#
# Environment:
#   RSTUNNEL      default target/release/rstunnel
#   STUNNEL       default stunnel4 from PATH
#   LOADGEN       default target/release/rstunnel-loadgen
#   BENCH_ROUNDS  default 3
#   BENCH_BYTES   default 1073741824
#   BENCH_IDLE    default 1000
#   BENCH_OUT     default BENCHMARKS.md at the repository root
#   BENCH_NO_BUILD=1  skip `cargo build --release`
#   BENCH_KEEP=1  keep the temp dir (configs, certs, tunnel logs)
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${BENCH_ROUNDS:-3}"
BYTES="${BENCH_BYTES:-1073741824}"
IDLE="${BENCH_IDLE:-1000}"
OUT="${BENCH_OUT:-$ROOT/BENCHMARKS.md}"

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

log() { echo "bench: $*" >&2; }
die() { echo "bench: ERROR: $*" >&2; exit 1; }

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --bins) || die "build failed"
fi
for b in "$RSTUNNEL" "$STUNNEL" "$LOADGEN"; do
    [ -x "$b" ] || die "not executable: $b"
done
command -v openssl >/dev/null || die "openssl not found (scripts/deps.sh)"
command -v ss >/dev/null || die "ss not found (apt-get install iproute2)"

# Each idle session costs fds in the loadgen, the echo server and both tunnels.
hard="$(ulimit -Hn)"
want=$((IDLE * 8 + 1024))
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    want="$hard"
fi
ulimit -n "$want" || die "cannot raise the fd limit to $want"
[ "$(ulimit -n)" -ge $((IDLE * 2 + 256)) ] || die "fd limit $(ulimit -n) too low for $IDLE sessions"

WORK="$(mktemp -d /tmp/rstunnel-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.2
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
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
NEXT_PORT=$((40000 + RANDOM % 10000))
pick_port() { # pick_port VAR: set VAR to the next free port (no subshell: NEXT_PORT advances)
    while listening "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
    printf -v "$1" '%s' "$NEXT_PORT"
    NEXT_PORT=$((NEXT_PORT + 1))
}
pick_port S_BULK; pick_port S_IDLE; pick_port C_BULK; pick_port C_IDLE

# start_server NAME SUBCOMMAND: a loadgen server on a free port; sets NAME_PORT.
start_backend() {
    local name="$1" sub="$2" pid port
    "$LOADGEN" "$sub" --listen 127.0.0.1:0 >"$name.out" 2>"$name.err" &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 50); do
        port="$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$name.out")"
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || die "loadgen $sub did not start: $(cat "$name.err")"
    eval "${name}_PORT=$port"
}
start_backend SINK sink
start_backend ECHO echo

# ---------------------------------------------------------------- configs
# One pair of files for both implementations; global-part values are
# inherited by the sections, as stunnel does.
cat >server.conf <<EOF
; bench.sh: server tunnel (TLS in, plain out), mutual TLS
foreground = yes
syslog = no
debug = warning
cert = $WORK/server.pem
key = $WORK/server.key
CAfile = $WORK/ca.pem
verifyChain = yes

[bulk]
accept = 127.0.0.1:$S_BULK
connect = 127.0.0.1:$SINK_PORT

[idle]
accept = 127.0.0.1:$S_IDLE
connect = 127.0.0.1:$ECHO_PORT
EOF
cat >client.conf <<EOF
; bench.sh: client tunnel (plain in, TLS out), mutual TLS
foreground = yes
syslog = no
debug = warning
client = yes
cert = $WORK/client.pem
key = $WORK/client.key
CAfile = $WORK/ca.pem
verifyChain = yes
checkHost = localhost

[bulk]
accept = 127.0.0.1:$C_BULK
connect = 127.0.0.1:$S_BULK

[idle]
accept = 127.0.0.1:$C_IDLE
connect = 127.0.0.1:$S_IDLE
EOF

# ---------------------------------------------------------------- measurements
status_field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || true; }

SRV_PID=""; CLI_PID=""
start_pair() { # start_pair LABEL BINARY ROUND
    local label="$1" bin="$2" round="$3" p
    "$bin" "$WORK/server.conf" >"$label-$round-server.log" 2>&1 &
    SRV_PID=$!
    "$bin" "$WORK/client.conf" >"$label-$round-client.log" 2>&1 &
    CLI_PID=$!
    PIDS+=("$SRV_PID" "$CLI_PID")
    for p in "$S_BULK" "$S_IDLE" "$C_BULK" "$C_IDLE"; do
        for _ in $(seq 1 100); do
            listening "$p" && break
            if ! kill -0 "$SRV_PID" 2>/dev/null || ! kill -0 "$CLI_PID" 2>/dev/null; then
                break
            fi
            sleep 0.05
        done
        if ! listening "$p"; then
            log "$label: tunnels did not come up (port $p); see below"
            tail -n 5 "$label-$round-server.log" "$label-$round-client.log" >&2 || true
            stop_pair
            return 1
        fi
    done
}
stop_pair() {
    local p
    for p in "$SRV_PID" "$CLI_PID"; do
        if [ -n "$p" ]; then kill -TERM "$p" 2>/dev/null || true; fi
    done
    for p in "$SRV_PID" "$CLI_PID"; do
        [ -n "$p" ] || continue
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    SRV_PID=""; CLI_PID=""
}

# bulk_once ADDR: prints MiB/s, or nothing on failure.
bulk_once() {
    local out
    if out="$("$LOADGEN" bulk --connect "$1" --bytes "$BYTES" --streams 1 2>&1)"; then
        sed -n 's/.*mib_per_s=\([0-9.]*\).*/\1/p' <<<"$out"
    else
        log "bulk via $1 failed: $out"
    fi
}

# idle_once LABEL ROUND: prints "KIB_PER_SESSION THREADS SETUP_SECONDS", or nothing.
idle_once() {
    local label="$1" round="$2" before after threads lpid secs=""
    # Warm-up: one session end to end, so one-time allocations (TLS context
    # caches, first thread) are in the baseline, not in the per-session cost.
    "$LOADGEN" idle --connect "127.0.0.1:$C_IDLE" --count 1 --hold 0 >/dev/null 2>&1 \
        || { log "$label: warm-up session failed"; return 0; }
    sleep 0.5
    before=$(( $(status_field "$SRV_PID" VmRSS) + $(status_field "$CLI_PID" VmRSS) ))
    "$LOADGEN" idle --connect "127.0.0.1:$C_IDLE" --count "$IDLE" --hold 3600 \
        >"$label-$round-idle.out" 2>&1 &
    lpid=$!
    PIDS+=("$lpid")
    for _ in $(seq 1 1200); do
        secs="$(sed -n 's/^idle: established=[0-9]* seconds=\([0-9.]*\)$/\1/p' "$label-$round-idle.out")"
        [ -n "$secs" ] && break
        kill -0 "$lpid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$secs" ]; then
        log "$label: $IDLE idle sessions not established: $(tail -n 2 "$label-$round-idle.out")"
        kill -TERM "$lpid" 2>/dev/null || true
        wait "$lpid" 2>/dev/null || true
        return 0
    fi
    sleep 1 # let both tunnels settle (session tickets, buffers released)
    after=$(( $(status_field "$SRV_PID" VmRSS) + $(status_field "$CLI_PID" VmRSS) ))
    threads=$(( $(status_field "$SRV_PID" Threads) + $(status_field "$CLI_PID" Threads) ))
    kill -TERM "$lpid" 2>/dev/null || true
    wait "$lpid" 2>/dev/null || true
    awk -v a="$after" -v b="$before" -v n="$IDLE" -v t="$threads" -v s="$secs" \
        'BEGIN { printf "%.1f %d %s\n", (a - b) / n, t, s }'
}

median() { # median V1 V2 ...: of the numeric arguments; "n/a" if none
    printf '%s\n' "$@" | { grep -E '^-?[0-9.]+$' || true; } | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "n/a"; exit }
            if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a !~ /^-?[0-9.]+$/ || b !~ /^-?[0-9.]+$/ || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'
}

declare -A BULK RSS THREADS SETUP
PLAIN=()
IMPLS=(rstunnel stunnel4)
declare -A BIN=([rstunnel]="$RSTUNNEL" [stunnel4]="$STUNNEL")

log "rounds=$ROUNDS bytes=$BYTES idle=$IDLE fd-limit=$(ulimit -n)"
for round in $(seq 1 "$ROUNDS"); do
    p="$(bulk_once "127.0.0.1:$SINK_PORT")"
    PLAIN+=("${p:-fail}")
    log "round $round: plain TCP ${p:-fail} MiB/s"
    for impl in "${IMPLS[@]}"; do
        bulk="fail"; rss="fail"; thr="fail"; setup="fail"
        if start_pair "$impl" "${BIN[$impl]}" "$round"; then
            read -r rss thr setup < <(idle_once "$impl" "$round"; echo) || true
            b="$(bulk_once "127.0.0.1:$C_BULK")"
            bulk="${b:-fail}"
            stop_pair
        fi
        BULK[$impl]+=" ${bulk}"
        RSS[$impl]+=" ${rss:-fail}"
        THREADS[$impl]+=" ${thr:-fail}"
        SETUP[$impl]+=" ${setup:-fail}"
        log "round $round: $impl bulk ${bulk} MiB/s, ${rss:-fail} KiB/session, ${thr:-fail} threads, $IDLE sessions in ${setup:-fail} s"
    done
done

# ---------------------------------------------------------------- report
# The per-round lists are space-separated on purpose: split them here.
# shellcheck disable=SC2086
{
    m_plain="$(median "${PLAIN[@]}")"
    m_bulk_rstunnel="$(median ${BULK[rstunnel]})"
    m_bulk_stunnel4="$(median ${BULK[stunnel4]})"
    m_rss_rstunnel="$(median ${RSS[rstunnel]})"
    m_rss_stunnel4="$(median ${RSS[stunnel4]})"
    m_thr_rstunnel="$(median ${THREADS[rstunnel]})"
    m_thr_stunnel4="$(median ${THREADS[stunnel4]})"
    m_setup_rstunnel="$(median ${SETUP[rstunnel]})"
    m_setup_stunnel4="$(median ${SETUP[stunnel4]})"
}
version_of() { # the banner line naming the program and its version
    local all
    all="$("$1" -version 2>&1 || true)"
    grep -m1 -E '(^|[] :])r?stunnel[ -]v?[0-9]' <<<"$all" || head -n 1 <<<"$all"
}
ver_r="$(version_of "$RSTUNNEL")"
ver_s="$(version_of "$STUNNEL")"
cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"

report() {
    echo "# Benchmarks: rstunnel vs stunnel4"
    echo
    echo "Generated by \`scripts/bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    echo "- Machine: $(nproc) CPU(s)${cpu:+, $cpu}, Linux $(uname -r)"
    echo "- rstunnel: \`${ver_r:-unknown}\` ($RSTUNNEL)"
    echo "- stunnel4: \`${ver_s:-unknown}\` ($STUNNEL)"
    echo "- OpenSSL: $(openssl version)"
    echo "- Setup: client tunnel + server tunnel on 127.0.0.1, mutual TLS with EC P-256 certificates,"
    echo "  identical config files for both; $ROUNDS rounds, implementations interleaved; medians shown."
    echo
    echo "| metric | rstunnel | stunnel4 | rstunnel/stunnel4 |"
    echo "|---|---:|---:|---:|"
    echo "| bulk throughput, 1 stream of $(awk -v b="$BYTES" 'BEGIN { printf "%g", b / 1048576 }') MiB through the pair (MiB/s, higher is better) | $m_bulk_rstunnel | $m_bulk_stunnel4 | $(ratio "$m_bulk_rstunnel" "$m_bulk_stunnel4") |"
    echo "| plain TCP ceiling, same load without tunnels (MiB/s) | $m_plain | $m_plain | |"
    echo "| RSS per idle session, both tunnels, at $IDLE sessions (KiB, lower is better) | $m_rss_rstunnel | $m_rss_stunnel4 | $(ratio "$m_rss_rstunnel" "$m_rss_stunnel4") |"
    echo "| threads of both tunnels at $IDLE sessions | $m_thr_rstunnel | $m_thr_stunnel4 | $(ratio "$m_thr_rstunnel" "$m_thr_stunnel4") |"
    echo "| time to open $IDLE sessions through the pair (s) | $m_setup_rstunnel | $m_setup_stunnel4 | $(ratio "$m_setup_rstunnel" "$m_setup_stunnel4") |"
    echo
    echo "Per round (round 1 first):"
    echo
    echo "| | rstunnel | stunnel4 |"
    echo "|---|---|---|"
    echo "| bulk MiB/s |${BULK[rstunnel]} |${BULK[stunnel4]} |"
    echo "| KiB/session |${RSS[rstunnel]} |${RSS[stunnel4]} |"
    echo "| threads |${THREADS[rstunnel]} |${THREADS[stunnel4]} |"
    echo "| setup s |${SETUP[rstunnel]} |${SETUP[stunnel4]} |"
    echo "| plain TCP MiB/s | ${PLAIN[*]} | |"
    echo
    echo "Method: bulk = \`rstunnel-loadgen bulk\` sends the bytes, half-closes, and stops the clock when"
    echo "the sink's byte count comes back through both tunnels. Idle = \`rstunnel-loadgen idle\` opens"
    echo "the sessions through an echo server, one byte echoed on each; VmRSS (from /proc/PID/status)"
    echo "of both tunnel processes after, minus before (after one warm-up session), divided by $IDLE."
}
echo
report | tee "$OUT"
log "results written to $OUT"
