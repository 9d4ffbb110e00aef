#!/usr/bin/env bash
# test-outages.sh - issue 14's measurement: how many syslog lines each kind of outage costs,
# end to end, between two simulated hosts (network namespaces joined by a veth pair):
#
#   host A (192.0.2.1)                                host B (192.0.2.2)
#   generator -> rsyslogd (private unix socket)       server tunnel 192.0.2.2:60514
#     -> action queue, retry forever                    -> 127.0.0.1:61514 (62514 RELP)
#     -> omfwd TCP | omrelp 127.0.0.1:61514|62514       -> rsyslogd imtcp | imrelp -> file
#     -> client tunnel ==TLS over the veth==>
#
# The rsyslog side runs the shipped conf/rsyslog/*.conf files unchanged (included from a
# small main config that only adds the generator's input, a work directory and the output
# file). The tunnels run generated stunnel.conf files that both rstunnel and stunnel4
# accept; the client verifies the server's certificate (made at run time by
# scripts/make-cert.sh) against a CAfile.
#
# A generator sends numbered lines at a steady rate (OUTAGES_RATE, 50/s) for the whole run
# while the faults below happen one after another, each followed by a recovery time. Each
# line is attributed to the window it was sent in (a window runs from its fault's start to
# the next one's). At the end the harness waits (bounded) for the queues to drain and counts
# per window, in host B's file:
#   lost       sent and never written, and not in the sender's queue either
#   dup        extra copies written
#   reordered  first copies written after a line with a higher number
#   queued     not written when the drain ended, but still in the sender's queue (rsyslog on
#              A is stopped gracefully at the end and saves its queue to disk, where the
#              numbers are read back): late, not lost
#
# Windows, in order:
#   startup            the server tunnel starts while the far rsyslog is down (port closed);
#                      rsyslog on B starts 3 s later
#   kill-far-tunnel    kill -9 of the server tunnel, restarted after OUTAGE seconds
#   kill-far-rsyslog   kill -9 of rsyslog on B, restarted after OUTAGE seconds
#   restart-far-rsyslog  SIGTERM to rsyslog on B, started again once it exited
#   restart-near-tunnel  SIGTERM to the client tunnel, started again once it exited
#   restart-far-tunnel   the same for the server tunnel
#   hup-near-tunnel, hup-far-tunnel   SIGHUP (reload, same file)
#   black-hole         B drops every SYN to its TLS port (iptables) for BLACKHOLE seconds; the
#                      server tunnel is killed and restarted as it begins, so the client
#                      tunnel's next connects go into the hole
#   tail               no fault: proves the chain recovered
#
# For each implementation (rstunnel, stunnel4) x transport (tcp, relp) it builds the two
# hosts from scratch and removes them afterwards. One markdown table goes to stdout and to
# target/outages-summary.md; per-run logs stay in target/outages/<impl>-<transport>/. Every
# process it started and both namespaces are removed on exit, also on failure.
#
# Usage: scripts/test-outages.sh [--rstunnel PATH] [--stunnel PATH]
#                                [--impl rstunnel|stunnel4|both] [--transport tcp|relp|both]
# Environment (the options win):
#   RSTUNNEL   rstunnel binary (default target/release/rstunnel); the measurement is meant to
#              be re-run against other builds: RSTUNNEL=/path/to/rstunnel scripts/test-outages.sh
#   STUNNEL4   stunnel binary (default stunnel4 on PATH)
#   OUTAGES_IMPLS ("rstunnel stunnel4"), OUTAGES_TRANSPORTS ("tcp relp")
#   OUTAGES_RATE (50 lines/s), OUTAGES_OUTAGE (5 s), OUTAGES_RECOVERY (4 s),
#   OUTAGES_BLACKHOLE (12 s: longer than the default TIMEOUTconnect of both tunnels, 10 s,
#              so connects into the hole fail; a shorter hole is bridged by SYN retransmits)
#   OUTAGES_GOALS=1  also fail unless rstunnel meets issue 14's goals (TCP: at most 2 lines
#                    lost per crash window and none elsewhere; RELP: none lost anywhere)
#
# Exit status 1 on a setup failure, a daemon that died on its own, a generator error, or a
# run whose tail window (no fault) has a line lost or still queued. Lines lost to faults are
# reported, not failures, unless OUTAGES_GOALS=1: today's tunnels lose them (issue 14).
# About 80 s per run, 5-6 min for all four. Needs root (namespaces); otherwise SKIPPED, exit 0.
# Packages: rsyslog rsyslog-relp stunnel4 iptables iproute2 openssl python3.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/target/outages"
MD="$ROOT/target/outages-summary.md"

log() { echo "test-outages: $*" >&2; }
die() { echo "test-outages: FAIL: $*" >&2; exit 1; }

IMPLS="${OUTAGES_IMPLS:-rstunnel stunnel4}"
TRANSPORTS="${OUTAGES_TRANSPORTS:-tcp relp}"
RATE="${OUTAGES_RATE:-50}"
OUTAGE="${OUTAGES_OUTAGE:-5}"
BLACKHOLE="${OUTAGES_BLACKHOLE:-12}"
RECOVERY="${OUTAGES_RECOVERY:-4}"
GOALS="${OUTAGES_GOALS:-0}"
STUNNEL4="${STUNNEL4:-stunnel4}"
STARTUP_DOWN=3   # seconds the far rsyslog is down at startup
STOP_WAIT=20     # seconds a daemon may take to exit after SIGTERM before it is killed
DRAIN_MAX=60     # seconds to wait for the queues to drain after the generator stopped
DRAIN_IDLE=10    # ... ending early once nothing new arrived for this long (rsyslog retries a
                 # suspended action 1 s apart at first, then further apart)

while [ $# -gt 0 ]; do
    case "$1" in
        --rstunnel) RSTUNNEL="$2"; shift 2 ;;
        --stunnel) STUNNEL4="$2"; shift 2 ;;
        --impl) IMPLS="$2"; shift 2 ;;
        --transport) TRANSPORTS="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[ "$IMPLS" = both ] && IMPLS="rstunnel stunnel4"
[ "$TRANSPORTS" = both ] && TRANSPORTS="tcp relp"

if [ "$(id -u)" -ne 0 ]; then
    echo "test-outages: SKIPPED: needs root (network namespaces)"
    exit 0
fi

RSTUNNEL="${RSTUNNEL:-$ROOT/target/release/rstunnel}"
case "$RSTUNNEL" in /*) ;; */*) RSTUNNEL="$PWD/$RSTUNNEL" ;; *) RSTUNNEL="$(command -v "$RSTUNNEL" || echo "$RSTUNNEL")" ;; esac
STUNNEL4="$(command -v "$STUNNEL4" || echo "$STUNNEL4")"
for impl in $IMPLS; do
    case "$impl" in
        rstunnel) [ -x "$RSTUNNEL" ] || die "rstunnel binary not found: $RSTUNNEL (make build, or RSTUNNEL=PATH)" ;;
        stunnel4) [ -x "$STUNNEL4" ] || die "stunnel4 not found (apt-get install stunnel4)" ;;
        *) die "unknown implementation '$impl' (rstunnel or stunnel4)" ;;
    esac
done
for t in $TRANSPORTS; do
    case "$t" in tcp|relp) ;; *) die "unknown transport '$t' (tcp or relp)" ;; esac
    [ -e "$ROOT/conf/rsyslog/client-forward-$t.conf" ] || die "conf/rsyslog/client-forward-$t.conf missing"
done
for tool in ip iptables rsyslogd openssl python3 ss; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (packages: iproute2 iptables rsyslog openssl python3)"
done
if [[ " $TRANSPORTS " == *" relp "* ]] && [ ! -e /usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so ] \
    && ! find /usr/lib -name imrelp.so 2>/dev/null | grep -q .; then
    die "rsyslog's RELP modules not found (apt-get install rsyslog-relp)"
fi

# --- Names and ports ------------------------------------------------------------------------
# Namespaces are global and interface names at most 15 bytes: both carry our pid.
NS_A="rst-a-$$"
NS_B="rst-b-$$"
VETH_A="rsoa$$"
VETH_B="rsob$$"
ADDR_A=192.0.2.1
ADDR_B=192.0.2.2
# The ports of conf/syslog-*.conf and conf/rsyslog/*.conf (the namespaces are private, so the
# shipped numbers are used as they are). LOCAL: client tunnel's accept on A; TLS: server
# tunnel's accept on B; TARGET: rsyslog's input on B.
declare -A LOCAL_PORT=([tcp]=61514 [relp]=62514)
declare -A TLS_PORT=([tcp]=60514 [relp]=60515)
declare -A TARGET_PORT=([tcp]=61514 [relp]=62514)

declare -A LABEL=(
    [startup]="far rsyslog down at startup (${STARTUP_DOWN} s, target port closed)"
    [kill-far-tunnel]="far tunnel kill -9, ${OUTAGE} s down"
    [kill-far-rsyslog]="far rsyslog kill -9, ${OUTAGE} s down"
    [restart-far-rsyslog]="far rsyslog graceful restart (SIGTERM + start)"
    [restart-near-tunnel]="near tunnel graceful restart (SIGTERM + start)"
    [restart-far-tunnel]="far tunnel graceful restart (SIGTERM + start)"
    [hup-near-tunnel]="near tunnel SIGHUP"
    [hup-far-tunnel]="far tunnel SIGHUP"
    [black-hole]="far side black-holed ${BLACKHOLE} s (SYNs dropped)"
    [tail]="no fault (tail)"
)
WINDOWS=(startup kill-far-tunnel kill-far-rsyslog restart-far-rsyslog restart-near-tunnel
    restart-far-tunnel hup-near-tunnel hup-far-tunnel black-hole tail)

# --- Cleanup ----------------------------------------------------------------------------------
declare -A PID=()
SOCKDIR="$(mktemp -d /tmp/rstunnel-outages.XXXXXX)"   # the unix socket path must stay short

# Stops every process of both namespaces (all of them were started here: the namespaces are
# ours), then removes the namespaces. Safe to call twice.
teardown() {
    local ns p pids
    for ns in "$NS_A" "$NS_B"; do
        ip netns list 2>/dev/null | grep -qw -- "$ns" || continue
        pids="$(ip netns pids "$ns" 2>/dev/null || true)"
        for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
        for _ in $(seq 30); do
            [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
            sleep 0.1
        done
        for p in $(ip netns pids "$ns" 2>/dev/null || true); do kill -KILL "$p" 2>/dev/null || true; done
    done
    for p in "${PID[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PID=()
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    ip link del "$VETH_A" 2>/dev/null || true
}
# shellcheck disable=SC2317 # called by the trap
on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    teardown
    rm -rf -- "$SOCKDIR"
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Process helpers ----------------------------------------------------------------------------
# W is the current run's directory. start NAME NS CMD...: CMD in NS in the background, output
# appended to $W/NAME.log (restarts append), pid in PID[NAME] (ip netns exec execs CMD).
start() {
    local name="$1" ns="$2"
    shift 2
    echo "=== $(date -u +%T.%N | cut -c1-12) started: $*" >>"$W/$name.log"
    ip netns exec "$ns" "$@" >>"$W/$name.log" 2>&1 </dev/null &
    PID[$name]=$!
}
alive() { kill -0 "${PID[$1]}" 2>/dev/null; }
alive_or_die() {
    alive "$1" || { tail -n 20 "$W/$1.log" >&2; die "$RUN: $1 died on its own (log $W/$1.log)"; }
}
wait_gone() { # wait_gone NAME SECONDS: 0 once NAME's process is gone
    local i
    for i in $(seq $(( $2 * 10 ))); do
        alive "$1" || { wait "${PID[$1]}" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    return 1
}
# kill9 NAME: SIGKILL, then reap it at once with wait (stderr to /dev/null: otherwise bash
# reports each killed job on the terminal; SIGKILL cannot be caught, so the wait is short).
kill9() {
    { kill -KILL "${PID[$1]}"; wait "${PID[$1]}"; } 2>/dev/null || true
    alive "$1" && die "$RUN: $1 survived kill -9"
    return 0
}
# graceful NAME: SIGTERM, and the seconds it took to exit into STOP_SECS. One that outlives
# STOP_WAIT is killed and noted (a restart must not wait forever).
graceful() {
    local t0 t1
    t0=$(date +%s%N)
    kill -TERM "${PID[$1]}" 2>/dev/null || true
    if ! wait_gone "$1" "$STOP_WAIT"; then
        note "$1 still running ${STOP_WAIT} s after SIGTERM: killed"
        kill9 "$1"
    fi
    t1=$(date +%s%N)
    STOP_SECS="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
}
note() { echo "$*" >>"$W/notes.txt"; log "$RUN: $*"; }
wait_listen() { # wait_listen NAME NS PORT: until something listens on TCP PORT in NS (10 s)
    local i
    for i in $(seq 100); do
        [ -n "$(ip netns exec "$2" ss -Hltn "sport = :$3" 2>/dev/null)" ] && return 0
        alive_or_die "$1"
        sleep 0.1
    done
    die "$RUN: $1 not listening on port $3 after 10 s"
}
# wait_tunnel NAME NS PORT: until the tunnel listens on PORT, or it logged "Configuration
# successful" since its latest start and then stayed up 1 s without listening. The second is a
# tunnel that starts paused (issue 14: its far side is down): its port stays bound but does not
# listen, which ss cannot see. Noted, so the table's notes show it.
wait_tunnel() {
    local i since=""
    for i in $(seq 100); do
        [ -n "$(ip netns exec "$2" ss -Hltn "sport = :$3" 2>/dev/null)" ] && return 0
        alive_or_die "$1"
        if [ -z "$since" ] && awk '/^=== /{ ok = 0 } /Configuration successful/{ ok = 1 } END { exit !ok }' "$W/$1.log"; then
            since=$i
        fi
        if [ -n "$since" ] && [ $(( i - since )) -ge 10 ]; then
            note "$1 up but not listening on port $3 (paused?)"
            return 0
        fi
        sleep 0.1
    done
    die "$RUN: $1 not listening on port $3 after 10 s"
}
mark() { printf '%s\t%s\n' "$1" "$(date +%s.%N)" >>"$W/windows.tsv"; log "$RUN: window $1"; }
all_alive() { local n; for n in near-rsyslog near-tunnel far-tunnel far-rsyslog generator; do alive_or_die "$n"; done; }

# --- The daemons -------------------------------------------------------------------------------
tunnel_cmd() { # tunnel_cmd near|far: the command line of the current implementation
    case "$IMPL" in
        rstunnel) echo "$RSTUNNEL $W/$1-tunnel.conf" ;;
        stunnel4) echo "$STUNNEL4 $W/$1-tunnel.conf" ;;
    esac
}
start_near_tunnel() { # shellcheck disable=SC2046
    start near-tunnel "$NS_A" $(tunnel_cmd near); wait_tunnel near-tunnel "$NS_A" "${LOCAL_PORT[$T]}"; }
start_far_tunnel() { # shellcheck disable=SC2046
    start far-tunnel "$NS_B" $(tunnel_cmd far); wait_tunnel far-tunnel "$NS_B" "${TLS_PORT[$T]}"; }
start_far_rsyslog() {
    rm -f "$W/far-rsyslog.pid"
    start far-rsyslog "$NS_B" rsyslogd -n -f "$W/far-rsyslog.conf" -i "$W/far-rsyslog.pid"
    wait_listen far-rsyslog "$NS_B" "${TARGET_PORT[$T]}"
}
start_near_rsyslog() {
    rm -f "$W/near-rsyslog.pid"
    start near-rsyslog "$NS_A" rsyslogd -n -f "$W/near-rsyslog.conf" -i "$W/near-rsyslog.pid"
    local i
    for i in $(seq 100); do
        [ -S "$SOCKDIR/in.sock" ] && return 0
        alive_or_die near-rsyslog
        sleep 0.1
    done
    die "$RUN: rsyslog on A did not create $SOCKDIR/in.sock"
}

write_configs() {
    # Tunnels: ordinary stunnel.conf files (both implementations run them). debug = 5 logs one
    # line per accepted connection, which is how the reconnects are counted.
    cat >"$W/near-tunnel.conf" <<EOF
; client tunnel on host A (written by scripts/test-outages.sh)
foreground = yes
pid = $W/near-tunnel.pid
debug = 5
client = yes

[syslog-$T]
accept = 127.0.0.1:${LOCAL_PORT[$T]}
connect = $ADDR_B:${TLS_PORT[$T]}
verifyChain = yes
CAfile = $OUT/pki/ca.pem
checkHost = syslog-b.test
EOF
    cat >"$W/far-tunnel.conf" <<EOF
; server tunnel on host B (written by scripts/test-outages.sh)
foreground = yes
pid = $W/far-tunnel.pid
debug = 5
cert = $OUT/pki/server.pem

[syslog-$T]
accept = $ADDR_B:${TLS_PORT[$T]}
connect = 127.0.0.1:${TARGET_PORT[$T]}
EOF
    # rsyslog: the shipped files, included verbatim. Nothing else is loaded: no /dev/log, no
    # kernel log, so only the generator's lines (and rsyslog's own notices) flow.
    mkdir -p "$W/near-spool" "$W/far-spool"
    cat >"$W/near-rsyslog.conf" <<EOF
global(workDirectory="$W/near-spool")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="$SOCKDIR/in.sock" RateLimit.Interval="0")
include(file="$ROOT/conf/rsyslog/client-forward-$T.conf")
EOF
    cat >"$W/far-rsyslog.conf" <<EOF
global(workDirectory="$W/far-spool")
include(file="$ROOT/conf/rsyslog/server-input-$T.conf")
template(name="outages_msg" type="string" string="%msg%\n")
*.* action(type="omfile" file="$W/received.log" template="outages_msg")
EOF
    local c
    for c in near-rsyslog far-rsyslog; do
        rsyslogd -N1 -f "$W/$c.conf" >"$W/$c.check" 2>&1 || { cat "$W/$c.check" >&2; die "$RUN: $c.conf invalid"; }
    done
}

# The generator: numbered datagrams to rsyslog's private socket at a steady rate (on a fixed
# schedule, so a slow moment is caught up rather than shifting every later line), each
# logged with its send time once the datagram was handed over. A unix datagram socket blocks
# when rsyslog is behind, so the generator's side loses nothing.
write_generator() {
    cat >"$OUT/generator.py" <<'EOF'
import signal, socket, sys, time
path, rate, mark, sent_path = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.connect(path)
seq, t0 = 0, time.time()
with open(sent_path, "w", buffering=1) as sent:
    while not stop:
        due = t0 + seq / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        if stop:
            break
        seq += 1
        now = time.time()
        line = "<14>%s outages: %s seq=%d" % (time.strftime("%b %e %H:%M:%S"), mark, seq)
        sock.send(line.encode())
        sent.write("%d %.3f\n" % (seq, now))
print("generator: sent %d lines" % seq, flush=True)
EOF
}

# --- One run -----------------------------------------------------------------------------------
run_one() {
    IMPL="$1" T="$2" RUN="$1-$2"
    W="$OUT/$RUN"
    rm -rf -- "$W" "$SOCKDIR/in.sock"
    mkdir -p "$W"
    : >"$W/notes.txt"
    local t_start=$SECONDS
    log "$RUN: hosts $NS_A ($ADDR_A) and $NS_B ($ADDR_B), logs in $W"

    ip netns add "$NS_A"
    ip netns add "$NS_B"
    ip link add "$VETH_A" type veth peer name "$VETH_B"
    ip link set "$VETH_A" netns "$NS_A"
    ip link set "$VETH_B" netns "$NS_B"
    ip -n "$NS_A" addr add "$ADDR_A/24" dev "$VETH_A"
    ip -n "$NS_B" addr add "$ADDR_B/24" dev "$VETH_B"
    ip -n "$NS_A" link set lo up
    ip -n "$NS_B" link set lo up
    ip -n "$NS_A" link set "$VETH_A" up
    ip -n "$NS_B" link set "$VETH_B" up

    write_configs
    local mark_id
    mark_id="outages-$RUN-$$-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
    echo "$mark_id" >"$W/mark"

    # startup: the far tunnel comes up while its target port is still closed.
    start_far_tunnel
    start_near_tunnel
    start_near_rsyslog
    mark startup
    start generator "$NS_A" python3 "$OUT/generator.py" "$SOCKDIR/in.sock" "$RATE" "$mark_id" "$W/sent.log"
    sleep "$STARTUP_DOWN"
    start_far_rsyslog
    sleep "$RECOVERY"; all_alive

    mark kill-far-tunnel
    kill9 far-tunnel; sleep "$OUTAGE"; start_far_tunnel
    sleep "$RECOVERY"; all_alive

    mark kill-far-rsyslog
    kill9 far-rsyslog; sleep "$OUTAGE"; start_far_rsyslog
    sleep "$RECOVERY"; all_alive

    mark restart-far-rsyslog
    graceful far-rsyslog; note "far rsyslog exited ${STOP_SECS} s after SIGTERM"; start_far_rsyslog
    sleep "$RECOVERY"; all_alive

    mark restart-near-tunnel
    graceful near-tunnel; note "near tunnel exited ${STOP_SECS} s after SIGTERM"; start_near_tunnel
    sleep "$RECOVERY"; all_alive

    mark restart-far-tunnel
    graceful far-tunnel; note "far tunnel exited ${STOP_SECS} s after SIGTERM"; start_far_tunnel
    sleep "$RECOVERY"; all_alive

    mark hup-near-tunnel
    kill -HUP "${PID[near-tunnel]}"
    sleep "$RECOVERY"; all_alive

    mark hup-far-tunnel
    kill -HUP "${PID[far-tunnel]}"
    sleep "$RECOVERY"; all_alive

    # Only SYNs (SYN without ACK) are dropped: the established session's packets would pass,
    # so the far tunnel is restarted at once to end that session; every reconnect from then
    # on meets a host that does not answer.
    mark black-hole
    # shellcheck disable=SC2054 # SYN,ACK is one iptables argument
    local hole=(INPUT -p tcp --dport "${TLS_PORT[$T]}" --tcp-flags SYN,ACK SYN -j DROP)
    ip netns exec "$NS_B" iptables -A "${hole[@]}"
    kill9 far-tunnel; start_far_tunnel
    sleep "$BLACKHOLE"
    ip netns exec "$NS_B" iptables -D "${hole[@]}"
    sleep "$RECOVERY"; all_alive

    mark tail
    sleep "$RECOVERY"; all_alive
    kill -TERM "${PID[generator]}"
    wait_gone generator 10 || die "$RUN: generator did not stop"
    grep -q '^generator: sent' "$W/generator.log" || { cat "$W/generator.log" >&2; die "$RUN: generator failed"; }

    # Drain: until every line arrived, nothing new came for DRAIN_IDLE s, or DRAIN_MAX s.
    local sent got last=-1 idle_since=$SECONDS deadline=$(( SECONDS + DRAIN_MAX ))
    sent="$(wc -l <"$W/sent.log")"
    while :; do
        got="$(grep -a -o -- "$mark_id seq=[0-9]*" "$W/received.log" 2>/dev/null | sort -u | wc -l)"
        [ "$got" -ge "$sent" ] && break
        [ "$got" != "$last" ] && { last="$got"; idle_since=$SECONDS; }
        [ $(( SECONDS - idle_since )) -ge "$DRAIN_IDLE" ] && break
        [ "$SECONDS" -ge "$deadline" ] && { note "queues still draining after ${DRAIN_MAX} s"; break; }
        sleep 0.5
    done
    log "$RUN: $got of $sent distinct lines arrived"
    grep -a -o -- "$mark_id seq=[0-9]*" "$W/received.log" 2>/dev/null | sed 's/.*seq=//' >"$W/received.seq" || true
    # A line that has not arrived may still wait in the sender's queue (a tunnel that refuses
    # keeps it there): stop rsyslog on A gracefully, and its queue (queue.saveOnShutdown in
    # conf/rsyslog/client-forward-*.conf) writes what it holds to its work directory, where
    # the numbers are plain text. Those lines are "queued", not lost.
    graceful near-rsyslog
    cat "$W/near-spool/"* 2>/dev/null | grep -a -o -- "$mark_id seq=[0-9]*" | sed 's/.*seq=//' | sort -un >"$W/queued.seq" || true
    # (grep -c prints 0 and fails when nothing matches)
    { grep -c 'accepted connection' "$W/near-tunnel.log" || true; } >"$W/near-accepts"
    { grep -c 'accepted connection' "$W/far-tunnel.log" || true; } >"$W/far-accepts"
    # Issue 14's "Service [X] paused: ..." lines (none before the pause exists).
    { grep -c -E 'Service \[[^]]*\] paused' "$W/near-tunnel.log" || true; } >"$W/near-pauses"
    { grep -c -E 'Service \[[^]]*\] paused' "$W/far-tunnel.log" || true; } >"$W/far-pauses"
    teardown
    count "$W"
    echo $(( SECONDS - t_start )) >"$W/seconds"
    log "$RUN: done in $(cat "$W/seconds") s"
}

# count DIR: DIR/result.tsv, one row per window: id, sent, lost, dup, reordered, queued (not
# arrived but still in the sender's queue); and DIR/unknown (received numbers never sent:
# must be 0).
count() {
    awk -v OFS='\t' -v unknown_file="$1/unknown" '
        FILENAME == ARGV[1] { split($0, f, "\t"); nw++; wid[nw] = f[1]; wt[nw] = f[2] + 0; next }
        FILENAME == ARGV[2] {
            w = 1
            for (i = 1; i <= nw; i++) if ($2 + 0 >= wt[i]) w = i
            win[$1] = w; sent[w]++; next
        }
        FILENAME == ARGV[3] { held[$1 + 0] = 1; next }
        {
            s = $1 + 0
            if (!(s in win)) { unknown++; next }
            if (++cnt[s] == 1) { if (s < hi) reord[win[s]]++ } else dup[win[s]]++
            if (s > hi) hi = s
        }
        END {
            for (s in win) if (!(s in cnt)) { if (s in held) queued[win[s]]++; else lost[win[s]]++ }
            for (i = 1; i <= nw; i++) print wid[i], sent[i] + 0, lost[i] + 0, dup[i] + 0, reord[i] + 0, queued[i] + 0
            print unknown + 0 > unknown_file
        }' "$1/windows.tsv" "$1/sent.log" "$1/queued.seq" "$1/received.seq" >"$1/result.tsv"
}

# --- Main -------------------------------------------------------------------------------------
T0=$SECONDS
rm -rf -- "$OUT"
mkdir -p "$OUT/pki"
"$ROOT/scripts/make-cert.sh" "$OUT/pki/server.pem" syslog-b.test >/dev/null
openssl x509 -in "$OUT/pki/server.pem" -out "$OUT/pki/ca.pem"
write_generator

RUNS=()
for impl in $IMPLS; do
    for t in $TRANSPORTS; do
        run_one "$impl" "$t"
        RUNS+=("$impl-$t")
    done
done

# --- The table ----------------------------------------------------------------------------------
version_of() {
    case "$1" in
        rstunnel) "$RSTUNNEL" -version 2>&1 | head -n 1 ;;
        stunnel4) "$STUNNEL4" -version 2>&1 | grep -m 1 '^stunnel' ;;
    esac
}
status=0
{
    echo "# Outage summary (scripts/test-outages.sh)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPU(s), ${RATE} lines/s, outages ${OUTAGE} s, black hole ${BLACKHOLE} s, recovery ${RECOVERY} s."
    for impl in $IMPLS; do
        case "$impl" in
            rstunnel) echo "rstunnel: \`$RSTUNNEL\` ($(version_of rstunnel))." ;;
            stunnel4) echo "stunnel4: \`$STUNNEL4\` ($(version_of stunnel4))." ;;
        esac
    done
    echo
    echo "Each cell: lines lost / duplicated / reordered of those sent in that window (from the fault to the next one);"
    echo "\"queued\": lines that had not arrived when the drain ended but were still in the sender's queue (saved to disk at its shutdown, not lost)."
    echo
    printf '| fault |'; for r in "${RUNS[@]}"; do printf ' %s |' "$r"; done; echo
    printf '|---|'; for _ in "${RUNS[@]}"; do printf '%s' '---:|'; done; echo
    for i in "${!WINDOWS[@]}"; do
        id="${WINDOWS[$i]}"
        printf '| %s |' "${LABEL[$id]}"
        for r in "${RUNS[@]}"; do
            awk -F'\t' -v id="$id" '$1 == id {
                printf " %d / %d / %d of %d%s |", $3, $4, $5, $2, ($6 > 0 ? " (" $6 " queued)" : "") }' "$OUT/$r/result.tsv"
        done
        echo
    done
    printf '| **all windows** |'
    for r in "${RUNS[@]}"; do
        awk -F'\t' '{ s += $2; l += $3; d += $4; o += $5; q += $6 }
            END { printf " **%d / %d / %d of %d**%s |", l, d, o, s, (q > 0 ? " (" q " queued)" : "") }' "$OUT/$r/result.tsv"
    done
    echo
    printf '| connections accepted by the near / far tunnel |'
    for r in "${RUNS[@]}"; do printf ' %s / %s |' "$(cat "$OUT/$r/near-accepts")" "$(cat "$OUT/$r/far-accepts")"; done
    echo
    printf '| pauses logged by the near / far tunnel |'
    for r in "${RUNS[@]}"; do printf ' %s / %s |' "$(cat "$OUT/$r/near-pauses")" "$(cat "$OUT/$r/far-pauses")"; done
    echo
    printf '| run time (s) |'
    for r in "${RUNS[@]}"; do printf ' %s |' "$(cat "$OUT/$r/seconds")"; done
    echo
    echo
    for r in "${RUNS[@]}"; do
        if [ -s "$OUT/$r/notes.txt" ]; then
            echo "- $r: $(paste -sd ';' "$OUT/$r/notes.txt" | sed 's/;/; /g')"
        fi
    done
} >"$MD"
cat "$MD"

# --- Checks ----------------------------------------------------------------------------------------
for r in "${RUNS[@]}"; do
    res="$OUT/$r/result.tsv"
    read -r sent lost dup reord queued < <(awk -F'\t' '{ s += $2; l += $3; d += $4; o += $5; q += $6 } END { print s + 0, l + 0, d + 0, o + 0, q + 0 }' "$res")
    unknown="$(cat "$OUT/$r/unknown")"
    # One line per run for scripts/test-faults.sh's table (its "summary:" format).
    echo "summary: outages $r | load=${RATE} lines/s, ${sent} lines | faults=${#WINDOWS[@]} windows (see target/outages-summary.md) | lines_lost=$lost | lines_dup=$dup | lines_reordered=$reord | lines_queued=$queued"
    [ "$unknown" = 0 ] || { log "$r: $unknown received line(s) with numbers never sent"; status=1; }
    awk -F'\t' '$2 == 0 { bad = 1 } END { exit bad }' "$res" || { log "$r: a window had no line sent"; status=1; }
    tail_missing="$(awk -F'\t' '$1 == "tail" { print $3 + $6 }' "$res")"
    [ "$tail_missing" = 0 ] || { log "$r: $tail_missing line(s) of the tail window (no fault) lost or still queued: the chain did not recover"; status=1; }
    if [ "$GOALS" = 1 ] && [[ "$r" == rstunnel-* ]]; then
        awk -F'\t' -v run="$r" -v relp="$([[ "$r" == *-relp ]] && echo 1 || echo 0)" '
            { max = relp ? 0 : (($1 ~ /^kill-/ || $1 == "black-hole") ? 2 : 0) }
            $3 > max { printf "test-outages: %s: %s: goal missed: %d lost (at most %d)\n", run, $1, $3, max > "/dev/stderr"; bad = 1 }
            END { exit bad }' "$res" || { log "$r: issue 14 goals not met"; status=1; }
    fi
done
log "$([ "$status" = 0 ] && echo PASS || echo FAIL): ${#RUNS[@]} run(s) in $(( SECONDS - T0 )) s; table in $MD"
exit "$status"
