#!/usr/bin/env bash
# demo.sh - "syslog over TLS" on one machine, in a temp dir, in a minute.
#
#   logger --tcp -> client tunnel 127.0.0.1:CLIENT_PORT
#               == TLS ==> server tunnel 127.0.0.1:TLS_PORT
#               -> syslog sink 127.0.0.1:SINK_PORT -> received.log
#
# The tunnel configs are conf/syslog-client.conf and conf/syslog-server.conf
# as shipped, with sed changing only the certificate path and the addresses
# (both ends share one host here, so the two 61514s must differ). The sink is
# a private rsyslogd (own config, pid file and work dir; no /dev/log, no
# kernel log) if rsyslogd is installed, else a small python3 listener.
#
# Environment:
#   RSTUNNEL   tunnel binary (default target/release/rstunnel); /usr/bin/stunnel4 works too
#   TLS_PORT, CLIENT_PORT, SINK_PORT   preferred ports (default 60514, 61514, 62514;
#              the next free port is used when one is taken)
#   DEMO_LINES number of messages (default 5)
#   DEMO_KEEP=1 keep the temp dir
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
RSTUNNEL="${RSTUNNEL:-$ROOT/target/release/rstunnel}"
case "$RSTUNNEL" in
    /*) ;;
    */*) RSTUNNEL="$PWD/$RSTUNNEL" ;;
    *) RSTUNNEL="$(command -v "$RSTUNNEL" || echo "$RSTUNNEL")" ;;
esac
LINES_TO_SEND="${DEMO_LINES:-5}"

if [ -t 1 ]; then
    say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    say() { printf '\n== %s\n' "$*"; }
fi
die() { echo "demo: ERROR: $*" >&2; exit 1; }

[ -x "$RSTUNNEL" ] || die "tunnel binary not found: $RSTUNNEL (run 'make build' or set RSTUNNEL)"
command -v openssl >/dev/null || die "openssl not found (scripts/deps.sh)"
command -v logger >/dev/null || die "logger not found (apt-get install bsdutils)"

WORK="$(mktemp -d /tmp/rstunnel-demo.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 1 30); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
        for f in server-tunnel.log client-tunnel.log sink.log; do
            [ -s "$WORK/$f" ] && { echo "----- $f -----" >&2; tail -n 20 "$WORK/$f" >&2; }
        done
    fi
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        echo "demo: files kept in $WORK"
    else
        rm -rf -- "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# count PATTERN FILE: number of lines of FILE holding PATTERN (0 if no file).
count() {
    local n
    n="$(grep -c -- "$1" "$2" 2>/dev/null || true)"
    echo "${n:-0}"
}

listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

# in_use PORT: any TCP socket has PORT as its local port. A connection in TIME-WAIT
# (left by an earlier outgoing connection) blocks bind() too, not only a listener.
in_use() { [ -n "$(ss -Htan "sport = :$1" 2>/dev/null)" ]; }

# free_port PREFERRED: PREFERRED, or the next port no socket uses.
free_port() {
    local p="$1"
    while in_use "$p"; do p=$((p + 1)); done
    echo "$p"
}

wait_port() {
    local name="$1" pid="$2" port="$3"
    for _ in $(seq 1 100); do
        listening "$port" && return 0
        kill -0 "$pid" 2>/dev/null || die "$name exited early"
        sleep 0.1
    done
    die "$name is not listening on port $port after 10 s"
}

TLS_PORT="$(free_port "${TLS_PORT:-60514}")"
CLIENT_PORT="$(free_port "${CLIENT_PORT:-61514}")"
[ "$CLIENT_PORT" = "$TLS_PORT" ] && CLIENT_PORT="$(free_port $((TLS_PORT + 1)))"
SINK_PORT="${SINK_PORT:-62514}"
while listening "$SINK_PORT" || [ "$SINK_PORT" = "$TLS_PORT" ] || [ "$SINK_PORT" = "$CLIENT_PORT" ]; do
    SINK_PORT=$((SINK_PORT + 1))
done

cd "$WORK"
say "Working in $WORK with $("$RSTUNNEL" -version 2>&1 | head -n 2 | tail -n 1 || true)"
echo "tunnel binary: $RSTUNNEL"

say "1. A self-signed certificate (key + cert in one file)"
"$ROOT/scripts/make-cert.sh" "$WORK/stunnel.pem" localhost

say "2. Tunnel configs: the shipped files, addresses and cert path changed by sed"
sed -e "s|^cert = /etc/stunnel/stunnel.pem\$|cert = $WORK/stunnel.pem|" \
    -e "s|^\(accept *= *\)60514\$|\1127.0.0.1:$TLS_PORT|" \
    -e "s|^\(connect *= *\)61514\$|\1127.0.0.1:$SINK_PORT|" \
    "$ROOT/conf/syslog-server.conf" >server.conf
sed -e "s|^\(accept *= *\)127\.0\.0\.1:61514\$|\1127.0.0.1:$CLIENT_PORT|" \
    -e "s|^\(connect *= *\)192\.0\.2\.1:60514\$|\1127.0.0.1:$TLS_PORT|" \
    "$ROOT/conf/syslog-client.conf" >client.conf
grep -q "^cert = $WORK/stunnel.pem\$" server.conf || die "sed did not find the cert line in conf/syslog-server.conf"
grep -q "^accept *= *127.0.0.1:$TLS_PORT\$" server.conf || die "sed did not find 'accept = 60514' in conf/syslog-server.conf"
grep -q "^connect *= *127.0.0.1:$SINK_PORT\$" server.conf || die "sed did not find 'connect = 61514' in conf/syslog-server.conf"
grep -q "^accept *= *127.0.0.1:$CLIENT_PORT\$" client.conf || die "sed did not find the accept line in conf/syslog-client.conf"
grep -q "^connect *= *127.0.0.1:$TLS_PORT\$" client.conf || die "sed did not find the connect line in conf/syslog-client.conf"
echo "--- server.conf (diff against conf/syslog-server.conf)"
diff "$ROOT/conf/syslog-server.conf" server.conf || true
echo "--- client.conf (diff against conf/syslog-client.conf)"
diff "$ROOT/conf/syslog-client.conf" client.conf || true

say "3. Syslog sink on 127.0.0.1:$SINK_PORT"
if command -v rsyslogd >/dev/null 2>&1; then
    mkdir -p spool
    cat >sink-rsyslog.conf <<EOF
global(workDirectory="$WORK/spool")
module(load="imtcp")
input(type="imtcp" port="$SINK_PORT" address="127.0.0.1")
*.* action(type="omfile" file="$WORK/received.log" template="RSYSLOG_FileFormat")
EOF
    rsyslogd -n -f "$WORK/sink-rsyslog.conf" -i "$WORK/sink-rsyslog.pid" >sink.log 2>&1 &
    SINK_PID=$!
    echo "private rsyslogd (pid $SINK_PID), config $WORK/sink-rsyslog.conf"
else
    command -v python3 >/dev/null || die "neither rsyslogd nor python3 found"
    cat >sink.py <<'EOF'
import socket, sys, threading
port, out = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
def serve(conn):
    with conn, conn.makefile("rb") as f:
        for line in f:
            with lock, open(out, "ab") as o:
                o.write(line)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(16)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
    python3 sink.py "$SINK_PORT" "$WORK/received.log" >sink.log 2>&1 &
    SINK_PID=$!
    echo "python3 sink (pid $SINK_PID)"
fi
PIDS+=("$SINK_PID")
wait_port "syslog sink" "$SINK_PID" "$SINK_PORT"

say "4. Server tunnel: TLS on 127.0.0.1:$TLS_PORT -> sink"
"$RSTUNNEL" server.conf >server-tunnel.log 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_port "server tunnel" "$SERVER_PID" "$TLS_PORT"
echo "server tunnel up (pid $SERVER_PID)"

say "5. Client tunnel: plain 127.0.0.1:$CLIENT_PORT -> TLS to 127.0.0.1:$TLS_PORT"
"$RSTUNNEL" client.conf >client-tunnel.log 2>&1 &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")
wait_port "client tunnel" "$CLIENT_PID" "$CLIENT_PORT"
echo "client tunnel up (pid $CLIENT_PID)"

say "6. Sending $LINES_TO_SEND messages with logger --tcp -n 127.0.0.1 -P $CLIENT_PORT"
tag="rstunnel-demo-$$"
for i in $(seq 1 "$LINES_TO_SEND"); do
    msg="hello over TLS, message $i of $LINES_TO_SEND"
    echo "  logger: $msg"
    logger --tcp -n 127.0.0.1 -P "$CLIENT_PORT" -t "$tag" "$msg"
done

say "7. What the sink received ($WORK/received.log)"
for _ in $(seq 1 100); do
    [ "$(count "$tag" received.log)" -ge "$LINES_TO_SEND" ] && break
    sleep 0.1
done
got="$(count "$tag" received.log)"
grep -- "$tag" received.log 2>/dev/null | sed 's/^/  /' || true
[ "$got" -ge "$LINES_TO_SEND" ] || die "only $got of $LINES_TO_SEND messages arrived"

say "8. The tunnels' view: connections, TLS protocol and cipher"
# The first connection's story on each side; later ones read the same.
show='accepted connection|TLS (accepted|connected):|TLSv1(\.[0-3])? ciphersuite:|Connection (closed|reset)'
for side in server client; do
    echo "  $side tunnel: $(count "accepted connection" "$side-tunnel.log") connection(s) accepted"
    grep -E -- 'LOG[0-7]\[0\]: ' "$side-tunnel.log" | grep -E -- "$show" | head -n 4 | sed "s/^/    /" || true
done

say "Done: $got of $LINES_TO_SEND messages crossed the TLS tunnel; stopping everything"
