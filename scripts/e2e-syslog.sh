#!/usr/bin/env bash
# e2e-syslog.sh - the classic "syslog over TLS with stunnel" setup, end to end,
# across two simulated hosts (network namespaces joined by a veth pair):
#
#   client ns (192.0.2.2)                          server ns (192.0.2.1)
#   logger -> rsyslogd (private unix socket)       rstunnel server :60514
#          -> omfwd TCP 127.0.0.1:61514               -> 127.0.0.1/::1:61514
#          -> rstunnel client :61514  ==TLS/veth==>   -> rsyslogd imtcp :61514 -> file
#
# The tunnels run conf/syslog-client.conf and conf/syslog-server.conf as
# shipped, with only the certificate path changed. N numbered lines (default
# 1000) are sent; every number must arrive exactly once within the time limit.
# tcpdump records the veth meanwhile: the capture must hold the TLS traffic and
# no line's text in clear.
#
# Needs root (namespaces). Not root: prints "SKIPPED: needs root" and exits 0.
# Environment:
#   RSTUNNEL      tunnel binary (default target/release/rstunnel, else target/debug/rstunnel);
#                 /usr/bin/stunnel4 works too
#   E2E_LINES     number of lines (default 1000)
#   E2E_TIMEOUT   seconds to wait for them (default 60)
#   E2E_KEEP=1    keep the work directory (logs, capture) for inspection;
#                 it is kept after a failure unless E2E_KEEP=0
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "e2e-syslog: SKIPPED: needs root (network namespaces, tcpdump)"
    exit 0
fi

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
N="${E2E_LINES:-1000}"
TIMEOUT="${E2E_TIMEOUT:-60}"

if [ -z "${RSTUNNEL:-}" ]; then
    if [ -x "$ROOT/target/release/rstunnel" ]; then
        RSTUNNEL="$ROOT/target/release/rstunnel"
    else
        RSTUNNEL="$ROOT/target/debug/rstunnel"
    fi
fi
case "$RSTUNNEL" in
    /*) ;;
    */*) RSTUNNEL="$PWD/$RSTUNNEL" ;;
    *) RSTUNNEL="$(command -v "$RSTUNNEL" || echo "$RSTUNNEL")" ;;
esac

log() { echo "e2e-syslog: $*"; }
die() { echo "e2e-syslog: FAIL: $*" >&2; exit 1; }

[ -x "$RSTUNNEL" ] || die "tunnel binary not found: $RSTUNNEL (run 'make build' or set RSTUNNEL)"
for tool in ip rsyslogd logger tcpdump openssl ss python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/deps.sh)"
done

# Unique names: namespaces are global, interface names at most 15 bytes.
NS_S="rst-e2e-srv-$$"
NS_C="rst-e2e-cli-$$"
VETH_S="rse2s$$"
VETH_C="rse2c$$"
WORK="$(mktemp -d /tmp/rstunnel-e2e.XXXXXX)"
PIDS=()
declare -A PID=()

DUMPED=0
dump_logs() {
    [ "$DUMPED" -eq 1 ] && return 0
    DUMPED=1
    local f
    for f in server-tunnel.log client-tunnel.log server-rsyslog.log client-rsyslog.log tcpdump.log; do
        if [ -s "$WORK/$f" ]; then
            echo "----- last lines of $f -----" >&2
            tail -n 15 "$WORK/$f" >&2
        fi
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    # Give them a moment to exit cleanly (tcpdump flushes, pid files go).
    for _ in $(seq 1 30); do
        local alive=0
        for p in "${PIDS[@]}"; do
            kill -0 "$p" 2>/dev/null && alive=1
        done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    ip netns del "$NS_C" 2>/dev/null || true
    ip netns del "$NS_S" 2>/dev/null || true
    ip link del "$VETH_S" 2>/dev/null || true
    [ "$rc" -ne 0 ] && dump_logs
    if [ "${E2E_KEEP:-}" = 1 ] || { [ "$rc" -ne 0 ] && [ "${E2E_KEEP:-}" != 0 ]; }; then
        echo "e2e-syslog: work directory kept: $WORK" >&2
    else
        rm -rf -- "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME NS CMD... : run CMD in namespace NS in the background, output to
# $WORK/NAME.log, and remember its pid (ip netns exec execs the command, so
# $! is the command itself).
start() {
    local name="$1" ns="$2"
    shift 2
    ip netns exec "$ns" "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    PID[$name]=$!
}

alive_or_die() {
    local name="$1"
    kill -0 "${PID[$name]}" 2>/dev/null || die "$name exited early (see $name.log below)"
}

# wait_listen NAME NS PORT: until something listens on TCP PORT in NS.
wait_listen() {
    local name="$1" ns="$2" port="$3"
    for _ in $(seq 1 100); do
        if [ -n "$(ip netns exec "$ns" ss -Hltn "sport = :$port" 2>/dev/null)" ]; then
            return 0
        fi
        alive_or_die "$name"
        sleep 0.1
    done
    die "$name is not listening on port $port after 10 s"
}

log "tunnel binary: $RSTUNNEL"
log "namespaces $NS_S (192.0.2.1) and $NS_C (192.0.2.2), work dir $WORK"

# --- the two hosts ----------------------------------------------------------
ip netns add "$NS_S"
ip netns add "$NS_C"
ip link add "$VETH_S" type veth peer name "$VETH_C"
ip link set "$VETH_S" netns "$NS_S"
ip link set "$VETH_C" netns "$NS_C"
ip -n "$NS_S" addr add 192.0.2.1/24 dev "$VETH_S"
ip -n "$NS_C" addr add 192.0.2.2/24 dev "$VETH_C"
for ns in "$NS_S" "$NS_C"; do
    ip -n "$ns" link set lo up
done
ip -n "$NS_S" link set "$VETH_S" up
ip -n "$NS_C" link set "$VETH_C" up

# --- the sniffer, before any traffic ------------------------------------------
# --immediate-mode -U: hand over and write each packet at once (the default
# block buffering loses the last second of packets when we stop it); -Z root: Debian's tcpdump otherwise drops to
# the tcpdump user, which cannot write into our 0700 work directory.
start tcpdump "$NS_S" tcpdump -i "$VETH_S" -n -s 0 -U --immediate-mode -Z root -w "$WORK/capture.pcap"
for _ in $(seq 1 100); do
    grep -q "listening on" "$WORK/tcpdump.log" 2>/dev/null && break
    alive_or_die tcpdump
    sleep 0.1
done
grep -q "listening on" "$WORK/tcpdump.log" || die "tcpdump did not start"

# --- certificate and tunnel configs (the shipped files, cert path only) -------
"$ROOT/scripts/make-cert.sh" "$WORK/stunnel.pem" syslog.e2e.test >/dev/null
sed -e "s|^cert = /etc/stunnel/stunnel.pem\$|cert = $WORK/stunnel.pem|" \
    "$ROOT/conf/syslog-server.conf" >"$WORK/syslog-server.conf"
grep -q "^cert = $WORK/stunnel.pem\$" "$WORK/syslog-server.conf" \
    || die "conf/syslog-server.conf has no 'cert = /etc/stunnel/stunnel.pem' line"
cp "$ROOT/conf/syslog-client.conf" "$WORK/syslog-client.conf"
grep -q '^connect = 192.0.2.1:60514$' "$WORK/syslog-client.conf" \
    || die "conf/syslog-client.conf does not connect to 192.0.2.1:60514"

# --- rsyslog configs ------------------------------------------------------------
mkdir -p "$WORK/srv-spool" "$WORK/cli-spool"
cat >"$WORK/server-rsyslog.conf" <<EOF
global(workDirectory="$WORK/srv-spool")
module(load="imtcp")
input(type="imtcp" port="61514")
template(name="msgonly" type="string" string="%msg%\n")
*.* action(type="omfile" file="$WORK/received.log" template="msgonly")
EOF
cat >"$WORK/client-rsyslog.conf" <<EOF
global(workDirectory="$WORK/cli-spool")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="$WORK/log.sock" RateLimit.Interval="0")
*.* action(type="omfwd" target="127.0.0.1" port="61514" protocol="tcp"
           queue.type="LinkedList" queue.size="100000"
           action.resumeRetryCount="-1" action.resumeInterval="1")
EOF

# --- start, server side first ---------------------------------------------------
start server-rsyslog "$NS_S" rsyslogd -n -f "$WORK/server-rsyslog.conf" -i "$WORK/server-rsyslog.pid"
wait_listen server-rsyslog "$NS_S" 61514
start server-tunnel "$NS_S" "$RSTUNNEL" "$WORK/syslog-server.conf"
wait_listen server-tunnel "$NS_S" 60514
start client-tunnel "$NS_C" "$RSTUNNEL" "$WORK/syslog-client.conf"
wait_listen client-tunnel "$NS_C" 61514
start client-rsyslog "$NS_C" rsyslogd -n -f "$WORK/client-rsyslog.conf" -i "$WORK/client-rsyslog.pid"
for _ in $(seq 1 100); do
    [ -S "$WORK/log.sock" ] && break
    alive_or_die client-rsyslog
    sleep 0.1
done
[ -S "$WORK/log.sock" ] || die "client rsyslogd did not create $WORK/log.sock"
log "all four daemons up"

# --- send -----------------------------------------------------------------------
# A marker unique to this run; it must never appear in clear on the wire.
MARK="rstunnel-e2e-$$-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
seq 1 "$N" | sed "s/.*/$MARK line & confidential-payload/" \
    | ip netns exec "$NS_C" logger -u "$WORK/log.sock" --socket-errors=on -t e2e-syslog \
    || die "logger failed"
log "sent $N lines"

# --- wait for all lines (bounded) ------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
got=0
while [ "$SECONDS" -lt "$deadline" ]; do
    got="$(grep -c -- "$MARK line " "$WORK/received.log" 2>/dev/null || true)"
    [ "${got:-0}" -ge "$N" ] && break
    sleep 0.2
done
# Let a straggler (duplicate) arrive, if one is coming, before counting.
sleep 0.5
got="$(grep -c -- "$MARK line " "$WORK/received.log" 2>/dev/null || true)"
log "received ${got:-0} marked lines"

# Each number 1..N exactly once.
grep -o -- "$MARK line [0-9]*" "$WORK/received.log" 2>/dev/null \
    | awk '{print $NF}' | sort -n | uniq -c >"$WORK/counts.txt" || true
passed="$(awk -v n="$N" '$1 == 1 && $2 >= 1 && $2 <= n' "$WORK/counts.txt" | wc -l)"
failed=$((N - passed))
dups="$(awk '$1 > 1' "$WORK/counts.txt" | wc -l)"
if [ "$failed" -ne 0 ]; then
    echo "e2e-syslog: FAIL: $failed of $N lines missing or duplicated ($dups duplicated)" >&2
    echo "e2e-syslog: first missing:" \
        "$(seq 1 "$N" | awk 'NR==FNR { seen[$2] = 1; next } !seen[$1]' "$WORK/counts.txt" - | head -5 | tr '\n' ' ')" >&2
fi

# --- the wire -----------------------------------------------------------------------
sleep 0.5
kill -INT "${PID[tcpdump]}" 2>/dev/null || true
for _ in $(seq 1 50); do
    kill -0 "${PID[tcpdump]}" 2>/dev/null || break
    sleep 0.1
done
wire_ok=1
packets="$(tcpdump -r "$WORK/capture.pcap" -n 'tcp port 60514' 2>/dev/null | wc -l)"
payload_pkts="$(tcpdump -r "$WORK/capture.pcap" -n 'tcp port 60514 and (((ip[2:2] - ((ip[0]&0xf)<<2)) - ((tcp[12]&0xf0)>>2)) != 0)' 2>/dev/null | wc -l)"
if [ "$packets" -eq 0 ] || [ "$payload_pkts" -eq 0 ]; then
    echo "e2e-syslog: FAIL: capture holds no TLS traffic on port 60514 ($packets packets)" >&2
    wire_ok=0
fi
clear_raw="$(grep -a -c -- "$MARK" "$WORK/capture.pcap" || true)"
clear_ascii="$(tcpdump -A -r "$WORK/capture.pcap" 2>/dev/null | grep -c -- "$MARK" || true)"
clear_payload="$(grep -a -c -- "confidential-payload" "$WORK/capture.pcap" || true)"
if [ "${clear_raw:-0}" -ne 0 ] || [ "${clear_ascii:-0}" -ne 0 ] || [ "${clear_payload:-0}" -ne 0 ]; then
    echo "e2e-syslog: FAIL: syslog text visible in clear on the wire" \
        "(raw $clear_raw, tcpdump -A $clear_ascii, payload $clear_payload)" >&2
    wire_ok=0
fi
# TLS must be what crossed: a ClientHello record (type 22, version 3.x,
# handshake type 1) and application-data records (type 23, version 3.3).
# (python3, not grep: the length bytes in between may be NUL or newline.)
read -r hello appdata < <(python3 - "$WORK/capture.pcap" <<'PY'
import re, sys
data = open(sys.argv[1], "rb").read()
hello = len(re.findall(rb"\x16\x03[\x01-\x03]..\x01", data, re.S))
appdata = len(re.findall(rb"\x17\x03\x03", data))
print(hello, appdata)
PY
) || true
if [ "${hello:-0}" -eq 0 ] || [ "${appdata:-0}" -eq 0 ]; then
    echo "e2e-syslog: FAIL: no TLS ClientHello/application data records in the capture" >&2
    wire_ok=0
fi
[ "$wire_ok" -eq 1 ] && log "wire: $packets packets on port 60514, $payload_pkts with payload, no clear text"

proto="$(grep -h -o -E 'TLSv1(\.[0-3])? ciphersuite: [A-Z0-9_]+|TLS (accepted|connected): [a-z ]+' \
    "$WORK/server-tunnel.log" "$WORK/client-tunnel.log" 2>/dev/null | sort -u | tr '\n' ';' || true)"
[ -n "$proto" ] && log "negotiated: $proto"

ok=1
{ [ "$failed" -eq 0 ] && [ "$wire_ok" -eq 1 ]; } || ok=0
[ "$ok" -eq 1 ] || dump_logs
echo "e2e-syslog: $passed passed, $failed failed"
[ "$ok" -eq 1 ]
