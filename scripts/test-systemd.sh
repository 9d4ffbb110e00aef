#!/usr/bin/env bash
# test-systemd.sh - the .deb and its units under a real, booted systemd, driven as an
# administrator would drive them.
#
#   1. target/systemd-root: a Debian 12 (bookworm) minbase root from deb.debian.org with
#      only systemd, systemd-sysv, dbus, libssl3 and logrotate added: no procps, so
#      anything the package needs beyond Essential shows up here. Bootstrapped once and
#      also kept as target/systemd-rootfs.tar.gz (scripts/lib/rootfs.sh, shared with
#      scripts/test-debian11.sh).
#      In each run's copy mawk is purged too (with --force-depends: base-files depends
#      on awk), so that nothing of the package may use awk either.
#   2. The freshly built .deb (`make deb`) and two certificates made now with
#      scripts/make-cert.sh (no key in the repository) are put in target/systemd-run/.
#   3. In a private mount namespace (unshare) with tmpfs on /run and /tmp, so that what
#      systemd-nspawn writes there (/run/systemd/nspawn, /tmp/nspawn-volatile-*) never
#      reaches the host, and from cgroups of its own (made here, removed at the end):
#        systemd-nspawn --boot --volatile=overlay (the cached root stays pristine; every
#        run starts from it) --private-network --register=no --keep-unit (the host has
#        no system bus to register with) --link-journal=no.
#      The container is entered with nsenter (its pid 1 is found in the cgroup made for
#      it); client and backend programs are this host's python3 and openssl, run in the
#      container's network namespace only.
#   4. Inside: dpkg -i, then the checks, one PASS/FAIL line each:
#        rstunnel@syslog-server: start (READY=1), a TLS session, reload with a new
#        certificate while a session stays open (RELOADING=1, READY=1), reload with a
#        broken file (logged, the old configuration serves), rstunnel --status over a
#        Unix socket in /run/rstunnel and a certificate renewed by rename picked up with
#        no reload (watchCertificates), logrotate -f with the
#        package's file (SIGUSR1, each of 60 sessions around it logged exactly once),
#        restart while 4 sessions stream (sent = received, old process exit 0), stop
#        (STOPPING=1, exit 0, pid file gone);
#        rstunnel.service with setuid, setgid, chroot and port 465 (CapBnd = the unit's
#        set, no capability left after setuid), its reload, and the same reload without
#        the "+" of ExecReload failing with EPERM (why the "+" is there); its stop;
#        systemd-analyze security rstunnel@syslog-server.service at most 2.8.
#      PID 1 logs at debug level, so the journal has "Got notification message from PID
#      N (READY=1)" for every sd_notify state; those lines are printed at the end.
#      rstunnel's own lines are found by _PID (journald attributes a new process's first
#      lines to init.scope for a few seconds, so -u would miss them).
#
# Needs root (debootstrap, namespaces, cgroups), and debootstrap, systemd-nspawn
# (systemd-container), nsenter and unshare (util-linux), openssl, python3, dpkg-deb.
# Not root: prints SKIPPED and exits 0.
#
# Environment:
#   SYSTEMD_TEST_MIRROR   default http://deb.debian.org/debian
#   SYSTEMD_TEST_FRESH=1  bootstrap again (ignores the cached root and tarball)
#   NOBUILD=1             use target/deb/rstunnel_*.deb as it is (default: `make deb`)

# The checks are functions that run through check(), which shellcheck cannot follow.
# shellcheck disable=SC2317
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=bookworm
MIRROR="${SYSTEMD_TEST_MIRROR:-http://deb.debian.org/debian}"
SROOT="$ROOT/target/systemd-root"
TARBALL="$ROOT/target/systemd-rootfs.tar.gz"
WORK="$ROOT/target/systemd-run"
PACKAGES=(systemd systemd-sysv dbus libssl3 logrotate)

# shellcheck source=scripts/lib/rootfs.sh
. "$ROOT/scripts/lib/rootfs.sh"

log() { echo "test-systemd: $*"; }
die() { echo "test-systemd: FAIL: $*" >&2; exit 1; }
now() { date +%s; }

# --- Stage 2: in the private mount namespace --------------------------------------------
if [ "${1:-}" = "--in-namespace" ]; then
    # shellcheck disable=SC2206 # a list of directories without spaces, from stage 1
    CG_DIRS=($CG_DIRS_LIST)
    NSPAWN_PID=
    CPID=
    BG_PIDS=()
    FAILED=()
    PASSED=0

    # shellcheck disable=SC2317 # called by the trap
    cleanup_ns() {
        local rc=$? p i
        trap - EXIT INT TERM
        for p in "${BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
            if [ -n "$CPID" ]; then
                timeout 10 nsenter -t "$CPID" -m -u -i -n -p -C -- \
                    /usr/bin/systemctl --no-block poweroff >/dev/null 2>&1 || true
            fi
            for ((i = 0; i < 150; i++)); do
                kill -0 "$NSPAWN_PID" 2>/dev/null || break
                sleep 0.1
            done
            # Still there after 15 s: systemd-nspawn ends the container on SIGTERM.
            kill -TERM "$NSPAWN_PID" 2>/dev/null || true
        fi
        if [ -n "$NSPAWN_PID" ]; then wait "$NSPAWN_PID" 2>/dev/null || true; fi
        for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
        exit "$rc"
    }
    trap cleanup_ns EXIT INT TERM

    mount -t tmpfs -o mode=0755 tmpfs /run
    # A checkout under /tmp (a CI clone often is) would vanish under the new /tmp: keep a
    # bind of the old /tmp and put the checkout back at its own path on top of the tmpfs.
    mkdir /run/host-tmp
    mount --bind /tmp /run/host-tmp
    mount -t tmpfs -o mode=1777 tmpfs /tmp
    case "$ROOT/" in
        /tmp/*)
            mkdir -p "$ROOT"
            mount --bind "/run/host-tmp/${ROOT#/tmp/}" "$ROOT"
            ;;
    esac
    for d in "${CG_DIRS[@]}"; do echo "$$" >"$d/runner/cgroup.procs"; done

    PY=/usr/bin/python3
    [ -x "$PY" ] || PY="$(command -v python3)"
    CPATH=/usr/sbin:/usr/bin:/sbin:/bin

    # c CMD...: run CMD inside the container (all its namespaces), 60 s at most.
    c() {
        timeout -k 5 "${TMO:-60}" nsenter -t "$CPID" -m -u -i -n -p -C -- \
            /usr/bin/env -i PATH="$CPATH" LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
    }
    # n CMD...: run a program of this host in the container's network namespace only.
    n() { timeout -k 5 "${TMO:-60}" nsenter -t "$CPID" -n -- "$@"; }

    cursor() { c journalctl -q -n 0 --show-cursor | sed -n 's/^-- cursor: //p'; }
    # wait_journal CURSOR TEXT [journalctl match...]: TEXT appears after CURSOR (10 s).
    wait_journal() {
        local cur="$1" text="$2" i out
        shift 2
        for ((i = 0; i < 50; i++)); do
            out=$(c journalctl -q -o cat --after-cursor="$cur" "$@")
            if grep -qF -- "$text" <<<"$out"; then return 0; fi
            sleep 0.2
        done
        echo "  not in the journal within 10 s: $text ($*)" >&2
        return 1
    }
    # notified CURSOR UNIT PID STATE...: PID 1 got these notifications from PID, in order.
    notified() {
        local cur="$1" unit="$2" pid="$3" state out last=0 l found
        shift 3
        for state in "$@"; do
            wait_journal "$cur" "$unit: Got notification message from PID $pid ($state)" _PID=1
        done
        out=$(c journalctl -q -o cat --after-cursor="$cur" _PID=1)
        for state in "$@"; do
            found=
            while read -r l; do
                if [ "$l" -gt "$last" ]; then found=$l; break; fi
            done < <(grep -nF -- "$unit: Got notification message from PID $pid ($state)" <<<"$out" | cut -d : -f 1)
            [ -n "$found" ] || oops "$state from PID $pid is not after the states before it ($*)"
            last=$found
        done
    }
    # wait_grep FILE REGEX: a line of FILE (on this host) matches, within 10 s.
    wait_grep() {
        local i
        for ((i = 0; i < 100; i++)); do
            if grep -Eq -- "$2" "$1" 2>/dev/null; then return 0; fi
            sleep 0.1
        done
        oops "no line matching '$2' in $1 within 10 s"
    }
    main_pid() { c systemctl show -p MainPID --value "$1"; }
    prop() { c systemctl show -p "$2" --value "$1"; }
    fingerprint_of() { openssl x509 -noout -fingerprint -sha256 -in "$1"; }
    # served_cert PORT: the fingerprint of the certificate a TLS server there presents.
    served_cert() {
        n openssl s_client -connect "127.0.0.1:$1" </dev/null 2>/dev/null \
            | openssl x509 -noout -fingerprint -sha256
    }
    # peer ARGS...: the TLS client and the plain backend (peer.py below), 60 s at most.
    peer() { n "$PY" "$WORK/peer.py" "$@"; }
    oops() { echo "  $*" >&2; return 1; }

    # check NAME FUNCTION [ARGS...]: one PASS/FAIL line. The function runs in a subshell
    # with errexit on (outside any `if`, where bash would ignore it).
    check() {
        local name="$1" rc
        shift
        set +e
        (
            set -e
            "$@"
        )
        rc=$?
        set -e
        if [ "$rc" -eq 0 ]; then
            PASSED=$((PASSED + 1))
            echo "PASS: $name"
        else
            FAILED+=("$name")
            echo "FAIL: $name"
        fi
    }

    # --- the TLS client and the backend ---------------------------------------------------
    cat >"$WORK/peer.py" <<'PY'
# Written by scripts/test-systemd.sh. A plain backend (what rsyslog is in production) and
# TLS clients for the tunnel. Protocol, one line each: "HELLO ID" names a session,
# "PING N" is answered "PONG N", "seq N" lines are counted only. The backend appends
# "ID BYTES LAST_SEQ" to its log when a connection ends.
import os, select, socket, ssl, sys, threading, time

def ctx():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE  # the served certificate is checked with openssl x509
    return c

def connect(port):
    raw = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    return ctx().wrap_socket(raw)

def ping(s, n):
    s.sendall(b"PING %d\n" % n)
    buf = b""
    while not buf.endswith(b"\n"):
        d = s.recv(100)
        if not d:
            sys.exit("EOF while waiting for PONG %d" % n)
        buf += d
    if buf != b"PONG %d\n" % n:
        sys.exit("PING %d answered %r" % (n, buf))

def close(s):
    try:
        s = s.unwrap()  # close_notify
    except (OSError, ssl.SSLError):
        pass
    s.close()

def wait_for(path, seconds):
    end = time.time() + seconds
    while not os.path.exists(path):
        if time.time() > end:
            sys.exit("%s did not appear within %d s" % (path, seconds))
        time.sleep(0.05)

def backend(port, out):
    srv = socket.create_server(("127.0.0.1", int(port)))
    lock = threading.Lock()
    def serve(conn):
        total, ident, last = 0, "-", "-"
        with conn, conn.makefile("rb") as f:
            try:
                for line in f:
                    total += len(line)
                    if line.startswith(b"HELLO "):
                        ident = line[6:].strip().decode()
                    elif line.startswith(b"PING "):
                        conn.sendall(b"PONG " + line[5:])
                    elif line.startswith(b"seq "):
                        last = line[4:].strip().decode()
            except OSError as e:  # a reset: logged as such, never as a clean end
                last = "%s-%s" % (last, e.__class__.__name__)
        with lock, open(out, "a") as o:
            o.write("%s %d %s\n" % (ident, total, last))
    open(out + ".ready", "w").close()
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()

def session(ident, port, hold=None):
    # One session: HELLO, PING 1; with HOLD, wait for the file HOLD to exist, then PING 2.
    s = connect(port)
    s.sendall(b"HELLO %s\n" % ident.encode())
    ping(s, 1)
    print("%s port=%d" % (ident, s.getsockname()[1]), flush=True)
    if hold:
        open(hold + ".ready", "w").close()
        wait_for(hold, 60)
        ping(s, 2)
    close(s)

def burst(ident, count, port, gap):
    for i in range(int(count)):
        session("%s-%d" % (ident, i), port)
        time.sleep(float(gap))

def stream(ident, port, started, seconds):
    # "seq N" lines, about one a millisecond, until the tunnel closes the session
    # (close_notify: it is draining) or SECONDS pass. Prints "ID BYTES": every byte
    # sendall() accepted, HELLO line included.
    s = connect(port)
    hello = b"HELLO %s\n" % ident.encode()
    s.sendall(hello)
    sent, n, closed = len(hello), 0, False
    end = time.time() + float(seconds)
    while time.time() < end:
        n += 1
        line = b"seq %d\n" % n
        s.sendall(line)
        sent += len(line)
        if n == 200:
            open(started, "w").close()
        if s.pending() or select.select([s], [], [], 0)[0]:
            s.settimeout(0.05)
            try:
                closed = s.recv(100) == b""
            except (socket.timeout, ssl.SSLWantReadError):
                pass  # a TLS 1.3 ticket, no data
            s.settimeout(10)
            if closed:
                break
        time.sleep(0.001)
    close(s)
    print("%s %d" % (ident, sent), flush=True)
    if not closed:
        sys.exit("%s: no close_notify from the tunnel within %s s" % (ident, seconds))

cmd, args = sys.argv[1], sys.argv[2:]
{"backend": backend, "session": session, "burst": burst, "stream": stream}[cmd](*args)
PY

    # --- boot -----------------------------------------------------------------------------
    # nspawn's own seccomp allow-list (systemd 252) lacks the Landlock calls: without them
    # the unit's sandbox = yes would meet EPERM here as it would not on a real host.
    (
        for d in "${CG_DIRS[@]}"; do echo "$BASHPID" >"$d/ctr/cgroup.procs"; done
        exec timeout -k 10 900 systemd-nspawn --quiet --boot --directory="$SROOT" \
            --machine="rstunnel-test" --register=no --keep-unit --private-network \
            --volatile=overlay --link-journal=no --console=read-only \
            --system-call-filter='landlock_create_ruleset landlock_add_rule landlock_restrict_self' \
            --bind-ro="$WORK/in:/srv/rstunnel-test"
    ) </dev/null >"$WORK/console.log" 2>&1 &
    NSPAWN_PID=$!
    # The container's pid 1: in the container's cgroup, innermost NSpid 1.
    for ((i = 0; i < 100; i++)); do
        while read -r p; do
            nspid=$(grep '^NSpid:' "/proc/$p/status" 2>/dev/null) || continue
            # shellcheck disable=SC2086 # split the pid list
            set -- $nspid
            if [ "$#" -ge 3 ] && [ "${!#}" = 1 ]; then CPID=$p; fi
        done < <(find "${CG_DIRS[0]}/ctr" -name cgroup.procs -exec cat {} + 2>/dev/null)
        [ -z "$CPID" ] || break
        sleep 0.1
    done
    [ -n "$CPID" ] || { cat "$WORK/console.log"; die "the container did not start"; }

    boot() {
        local state i
        # systemctl needs PID 1's private socket, there a moment after the container starts.
        for ((i = 0; i < 100; i++)); do
            if c test -S /run/systemd/private; then break; fi
            sleep 0.1
        done
        state=$(TMO=30 c systemctl is-system-running --wait) || true
        echo "  $state; $(c systemd-analyze time | head -n 1)"
        [ "$state" = running ] || { c systemctl --failed --no-pager >&2 || true; return 1; }
        # PID 1 at debug level: "Got notification message" lines for every sd_notify.
        c systemctl log-level debug
    }
    check "boot: systemd in the minimal Debian 12 root reaches 'running'" boot

    install_deb() {
        local deb
        deb=$(cd "$WORK/in" && ls rstunnel_*.deb)
        c test ! -e /bin/kill || oops "/bin/kill exists: the root is not minimal"
        c dpkg --purge --force-depends mawk >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log" >&2; return 1; }
        c test ! -e /usr/bin/awk || oops "awk is still there"
        c dpkg -i "/srv/rstunnel-test/$deb" >>"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log" >&2; return 1; }
        # shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
        echo "  $deb: Depends: $(c dpkg-query -W -f='${Depends}' rstunnel)"
        [ "$(prop rstunnel@syslog-server.service LoadState)" = loaded ] || oops "rstunnel@.service not loaded"
        [ "$(prop rstunnel.service LoadState)" = loaded ] || oops "rstunnel.service not loaded"
        [ "$(prop rstunnel.service UnitFileState)" = disabled ] || oops "rstunnel.service enabled at installation"
    }
    check "dpkg -i on a root without procps and awk" install_deb

    # The administrator's part: a certificate, a backend, the file edited.
    c install -m 0600 /srv/rstunnel-test/a.pem /etc/stunnel/stunnel.pem
    c sed -i -e '/^\[ssyslog\]/i pid = /run/rstunnel/syslog-server.pid' \
        -e '/^\[ssyslog\]/i output = /var/log/rstunnel/syslog-server.log' \
        -e '/^\[ssyslog\]/i status = /run/rstunnel/syslog-server.status.sock' \
        /etc/stunnel/syslog-server.conf
    TMO=900 peer backend 61514 "$WORK/backend.log" &
    BG_PIDS+=($!)
    for ((i = 0; i < 100; i++)); do [ -e "$WORK/backend.log.ready" ] && break; sleep 0.1; done
    FP_A=$(fingerprint_of "$WORK/in/a.pem")
    FP_B=$(fingerprint_of "$WORK/in/b.pem")
    U=rstunnel@syslog-server.service

    start_unit() {
        local cur mp
        cur=$(cursor)
        c systemctl start "$U"
        [ "$(prop "$U" ActiveState)" = active ] || oops "not active after start"
        [ "$(prop "$U" Type)" = notify ] || oops "Type is not notify"
        mp=$(main_pid "$U")
        notified "$cur" "$U" "$mp" READY=1
        c test -s /run/rstunnel/syslog-server.pid || oops "no pid file"
        [ "$(c cat /run/rstunnel/syslog-server.pid)" = "$mp" ] || oops "pid file is not MainPID $mp"
        wait_journal "$cur" "Accepting new connections" _PID="$mp"
        # The unit's SystemCallFilter lets the Landlock sandbox (sandbox = yes) apply.
        wait_journal "$cur" "Sandbox: Landlock ABI" _PID="$mp"
    }
    check "rstunnel@syslog-server: start, Type=notify, READY=1, active, sandboxed" start_unit

    tls_session() {
        local out
        out=$(peer session first 60514) || oops "session failed: $out"
        echo "  $out"
        [ "$(served_cert 60514)" = "$FP_A" ] || oops "the served certificate is not a.pem"
        wait_grep "$WORK/backend.log" '^first [0-9]+ -$'
    }
    check "rstunnel@syslog-server: a TLS session reaches the backend and back" tls_session

    reload_new_cert() {
        local cur mp hold="$WORK/hold-reload" client
        mp=$(main_pid "$U")
        peer session held 60514 "$hold" >"$WORK/held.out" 2>&1 &
        client=$!
        # However this check ends, the held client is let go (it would wait 60 s).
        # shellcheck disable=SC2064 # expanded now: $hold is local to this function
        trap "touch '$hold'" EXIT
        for ((i = 0; i < 100; i++)); do [ -e "$hold.ready" ] && break; sleep 0.1; done
        [ -e "$hold.ready" ] || oops "the held session did not start"
        c install -m 0600 /srv/rstunnel-test/b.pem /etc/stunnel/stunnel.pem
        cur=$(cursor)
        c systemctl reload "$U" || oops "systemctl reload failed"
        notified "$cur" "$U" "$mp" RELOADING=1 READY=1
        wait_journal "$cur" "Configuration reloaded from /etc/stunnel/syslog-server.conf" _PID="$mp"
        [ "$(main_pid "$U")" = "$mp" ] || oops "MainPID changed"
        [ "$(prop "$U" ActiveState)" = active ] || oops "not active after reload"
        [ "$(served_cert 60514)" = "$FP_B" ] || oops "the new certificate (b.pem) is not served"
        touch "$hold"
        wait "$client" || { cat "$WORK/held.out" >&2; oops "the session open across the reload broke"; }
    }
    check "rstunnel@syslog-server: reload (RELOADING=1, READY=1), session survives, new cert served" reload_new_cert

    reload_broken() {
        local cur mp out logged=0
        mp=$(main_pid "$U")
        c cp /etc/stunnel/syslog-server.conf /root/syslog-server.conf.good
        c sh -c 'echo "client = maybe" >>/etc/stunnel/syslog-server.conf'
        cur=$(cursor)
        c systemctl reload "$U" || echo "  systemctl reload reported failure (rc $?)"
        wait_journal "$cur" "Failed to reload the configuration file" _PID="$mp" || logged=$?
        # The good file back before anything else: later checks start and restart the unit.
        c cp /root/syslog-server.conf.good /etc/stunnel/syslog-server.conf
        [ "$logged" = 0 ] || oops "the failed reload was not logged"
        notified "$cur" "$U" "$mp" RELOADING=1 READY=1
        out=$(c journalctl -q -o cat --after-cursor="$cur" _PID="$mp" | grep -m1 'client = maybe') || true
        echo "  journal: $out"
        [ "$(main_pid "$U")" = "$mp" ] || oops "MainPID changed"
        [ "$(prop "$U" ActiveState)" = active ] || oops "not active after a bad reload"
        [ "$(served_cert 60514)" = "$FP_B" ] || oops "the old configuration is not serving"
        peer session after-bad-reload 60514 >/dev/null || oops "no session after the bad reload"
    }
    check "rstunnel@syslog-server: reload with a broken file is logged, the old config serves" reload_broken

    # The status endpoint on a Unix socket in the unit's RuntimeDirectory, read with
    # rstunnel --status (the root has no curl), and a renewed certificate picked up
    # without a reload (watchCertificates: inotify under the unit's system call filter
    # and ProtectSystem).
    status_and_renewal() {
        local cur mp out
        mp=$(main_pid "$U")
        out=$(c rstunnel --status /etc/stunnel/syslog-server.conf) || oops "rstunnel --status failed: $out"
        echo "$out" | sed 's/^/  /'
        echo "$out" | grep -Eq '^ssyslog +listening ' || oops "no listening [ssyslog] line"
        echo "$out" | grep -qx healthy || oops "not healthy"
        cur=$(cursor)
        c sh -c 'cp /srv/rstunnel-test/a.pem /etc/stunnel/.stunnel.pem.new && chmod 0600 /etc/stunnel/.stunnel.pem.new && mv /etc/stunnel/.stunnel.pem.new /etc/stunnel/stunnel.pem'
        wait_journal "$cur" "Certificates reloaded" _PID="$mp"
        [ "$(served_cert 60514)" = "$FP_A" ] || oops "the renewed certificate (a.pem) is not served"
        [ "$(main_pid "$U")" = "$mp" ] || oops "MainPID changed"
        out=$(c rstunnel --status /run/rstunnel/syslog-server.status.sock) || oops "--status by socket: $out"
        echo "$out" | grep -q "reloads 1 ok" || oops "the reload count is not 1 ok: $out"
    }
    check "rstunnel@syslog-server: rstunnel --status over the unit's socket; a renewed certificate served without a reload" status_and_renewal

    logrotate_run() {
        local logf=/var/log/rstunnel/syslog-server.log mp cur client ports p k rotated fresh
        mp=$(main_pid "$U")
        c test -s "$logf" || oops "$logf is missing or empty"
        cur=$(cursor)
        peer burst rot 60 60514 0.03 >"$WORK/burst.out" 2>&1 &
        client=$!
        for ((i = 0; i < 100; i++)); do
            [ "$(wc -l <"$WORK/burst.out")" -ge 20 ] && break
            sleep 0.1
        done
        c logrotate -f /etc/logrotate.d/rstunnel || oops "logrotate -f failed"
        wait "$client" || { cat "$WORK/burst.out" >&2; oops "the sessions around the rotation failed"; }
        wait_journal "$cur" "Log file reopened" _PID="$mp"
        c test -s "$logf.1" || oops "no rotated $logf.1"
        c test -s "$logf" || oops "no new $logf after the reopen"
        rotated=$(c cat "$logf.1")
        fresh=$(c cat "$logf")
        grep -q 'Log file reopened' <<<"$fresh" || oops "the new file does not start with the reopen"
        ports=$(sed -n 's/^rot-[0-9]* port=//p' "$WORK/burst.out")
        [ "$(wc -w <<<"$ports")" = 60 ] || oops "expected 60 sessions, got $(wc -w <<<"$ports")"
        local in_old=0 in_new=0
        for p in $ports; do
            k=$(grep -c "accepted connection from 127\.0\.0\.1:$p\$" <<<"$rotated"$'\n'"$fresh" || true)
            [ "$k" = 1 ] || oops "session from port $p logged $k times across the two files"
            if grep -q "accepted connection from 127\.0\.0\.1:$p\$" <<<"$fresh"; then
                in_new=$((in_new + 1))
            else
                in_old=$((in_old + 1))
            fi
        done
        echo "  60 sessions, each logged once: $in_old in $logf.1, $in_new in $logf"
        if [ "$in_old" -eq 0 ] || [ "$in_new" -eq 0 ]; then
            oops "the rotation did not fall within the sessions"
        fi
    }
    check "logrotate -f /etc/logrotate.d/rstunnel: SIGUSR1 reopen, no line lost" logrotate_run

    restart_streaming() {
        local cur mp new i restarter pids=() id sent got
        mp=$(main_pid "$U")
        for id in s1 s2 s3 s4; do
            peer stream "$id" 60514 "$WORK/stream-$id.started" 30 >"$WORK/stream-$id.out" 2>&1 &
            pids+=($!)
        done
        for id in s1 s2 s3 s4; do
            for ((i = 0; i < 100; i++)); do [ -e "$WORK/stream-$id.started" ] && break; sleep 0.1; done
            [ -e "$WORK/stream-$id.started" ] || oops "stream $id did not start"
        done
        cur=$(cursor)
        TMO=60 c systemctl restart "$U" &
        restarter=$!
        for i in "${!pids[@]}"; do
            wait "${pids[$i]}" || { cat "$WORK"/stream-*.out >&2; oops "a stream failed"; }
        done
        wait "$restarter" || oops "systemctl restart failed"
        notified "$cur" "$U" "$mp" STOPPING=1
        wait_journal "$cur" "$U: Main process exited, code=exited, status=0/SUCCESS" _PID=1
        new=$(main_pid "$U")
        if [ "$new" = "$mp" ] || [ "$new" = 0 ]; then oops "no new main process"; fi
        [ "$(prop "$U" ActiveState)" = active ] || oops "not active after restart"
        notified "$cur" "$U" "$new" READY=1
        for id in s1 s2 s3 s4; do
            read -r _ sent <"$WORK/stream-$id.out"
            got=$(grep "^$id " "$WORK/backend.log" | cut -d ' ' -f 2) || true
            echo "  $id: $sent bytes sent, ${got:-none} received, last line seq $(grep "^$id " "$WORK/backend.log" | cut -d ' ' -f 3)"
            [ "$got" = "$sent" ] || oops "$id: bytes lost across the restart"
        done
        peer session after-restart 60514 >/dev/null || oops "no session after the restart"
    }
    check "systemctl restart while 4 sessions stream: every byte arrives, old exits 0" restart_streaming

    stop_unit() {
        local cur mp
        mp=$(main_pid "$U")
        cur=$(cursor)
        c systemctl stop "$U"
        notified "$cur" "$U" "$mp" STOPPING=1
        wait_journal "$cur" "$U: Main process exited, code=exited, status=0/SUCCESS" _PID=1
        [ "$(prop "$U" ActiveState)" = inactive ] || oops "not inactive after stop"
        [ "$(prop "$U" Result)" = success ] || oops "Result is not success"
        [ "$(prop "$U" ExecMainStatus)" = 0 ] || oops "exit status not 0"
        c test ! -e /run/rstunnel/syslog-server.pid || oops "pid file left behind"
    }
    check "rstunnel@syslog-server: stop (STOPPING=1, exit 0, pid file gone)" stop_unit

    # rstunnel.service with /etc/stunnel/stunnel.conf: setuid, setgid, chroot and a port
    # below 1024, all under the unit's sandbox.
    c mkdir -p /var/lib/rstunnel-chroot
    c sh -c 'cat >/etc/stunnel/stunnel.conf' <<'CONF'
; written by scripts/test-systemd.sh
foreground = yes
setuid = nobody
setgid = nogroup
chroot = /var/lib/rstunnel-chroot
debug = info

[tls-465]
accept = 127.0.0.1:465
connect = 127.0.0.1:61514
cert = /etc/stunnel/stunnel.pem
CONF
    S=rstunnel.service
    # cap_mask NAME...: the capability bit mask of these names, in /proc's hex format.
    cap_mask() {
        local m=0 name
        for name in "$@"; do
            case "$name" in
                cap_chown) m=$((m | 1 << 0)) ;;
                cap_dac_override) m=$((m | 1 << 1)) ;;
                cap_setgid) m=$((m | 1 << 6)) ;;
                cap_setuid) m=$((m | 1 << 7)) ;;
                cap_net_bind_service) m=$((m | 1 << 10)) ;;
                cap_sys_chroot) m=$((m | 1 << 18)) ;;
                *) oops "cap_mask: add $name" ;;
            esac
        done
        printf '%016x\n' "$m"
    }
    default_unit_setuid_chroot() {
        local cur mp status want
        cur=$(cursor)
        c systemctl start "$S"
        [ "$(prop "$S" ActiveState)" = active ] || oops "not active"
        mp=$(main_pid "$S")
        notified "$cur" "$S" "$mp" READY=1
        peer session port465 465 >/dev/null || oops "no session through port 465"
        status=$(c cat "/proc/$mp/status")
        grep -Eq '^Uid:\s+65534\s+65534\s+65534\s+65534$' <<<"$status" || oops "not running as nobody"
        grep -Eq '^Gid:\s+65534\s+65534\s+65534\s+65534$' <<<"$status" || oops "not running as nogroup"
        [ "$(c readlink "/proc/$mp/root")" = /var/lib/rstunnel-chroot ] || oops "not chrooted"
        # shellcheck disable=SC2046 # the unit's capability names, split
        want=$(cap_mask $(prop "$S" CapabilityBoundingSet))
        grep -q "^CapBnd:	$want\$" <<<"$status" || oops "CapBnd is not the unit's set ($want)"
        grep -q '^CapEff:	0000000000000000$' <<<"$status" || oops "capabilities left after setuid"
        grep -q '^CapPrm:	0000000000000000$' <<<"$status" || oops "permitted capabilities left after setuid"
        echo "  pid $mp: uid/gid 65534, root /var/lib/rstunnel-chroot, CapBnd $want (the unit's set), CapEff 0"
    }
    check "rstunnel.service: setuid+setgid+chroot+port 465 under the sandbox, no capability kept" \
        default_unit_setuid_chroot

    reload_setuid() {
        local cur mp
        mp=$(main_pid "$S")
        cur=$(cursor)
        c systemctl reload "$S" || oops "systemctl reload failed"
        notified "$cur" "$S" "$mp" RELOADING=1 READY=1
        # The file is outside the chroot now, so the new reading fails and the running
        # configuration stays (as in stunnel); the signal arriving is what is checked.
        echo "  journal: $(c journalctl -q -o cat --after-cursor="$cur" _PID="$mp" | grep -m1 'LOG3')"
        [ "$(main_pid "$S")" = "$mp" ] || oops "MainPID changed"
        [ "$(prop "$S" ActiveState)" = active ] || oops "not active after the reload"
        peer session port465-reloaded 465 >/dev/null || oops "no session after the reload"
    }
    check "rstunnel.service: reload reaches the process that dropped to nobody" reload_setuid

    # Why ExecReload has its "+": without it the shell runs inside the sandbox, whose
    # bounding set has no CAP_KILL, so it cannot signal a process of another user.
    reload_without_plus() {
        local cur mp rc=0
        mp=$(main_pid "$S")
        c mkdir -p /run/systemd/system/rstunnel.service.d
        c sh -c 'cat >/run/systemd/system/rstunnel.service.d/confined-reload.conf' <<'UNIT'
[Service]
ExecReload=
ExecReload=/bin/sh -c 'kill -HUP "$MAINPID"'
UNIT
        c systemctl daemon-reload
        cur=$(cursor)
        c systemctl reload "$S" 2>/dev/null || rc=$?
        c rm -r /run/systemd/system/rstunnel.service.d
        c systemctl daemon-reload
        [ "$rc" != 0 ] || oops "the confined reload succeeded: the '+' would not be needed"
        wait_journal "$cur" "kill: Operation not permitted"
        echo "  without '+': systemctl reload exit $rc, $(c journalctl -q -o cat --after-cursor="$cur" | grep -m1 'kill: Operation not permitted')"
        c journalctl -q -o cat --after-cursor="$cur" _PID=1 | grep -qF "PID $mp (RELOADING=1)" \
            && oops "the process was reloaded anyway"
        [ "$(main_pid "$S")" = "$mp" ] || oops "MainPID changed"
    }
    check "without '+', ExecReload cannot signal the setuid process (EPERM, reload failed)" reload_without_plus

    stop_default() {
        local cur mp
        mp=$(main_pid "$S")
        cur=$(cursor)
        c systemctl stop "$S"
        notified "$cur" "$S" "$mp" STOPPING=1
        [ "$(prop "$S" Result)" = success ] || oops "Result is not success"
        [ "$(prop "$S" ExecMainStatus)" = 0 ] || oops "exit status not 0"
    }
    check "rstunnel.service: stop, exit 0" stop_default

    security() {
        local out score
        out=$(c systemd-analyze security --no-pager "$U")
        score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9]*\.[0-9]\).*/\1/p' <<<"$out")
        [ -n "$score" ] || { echo "$out" >&2; oops "no score in systemd-analyze's output"; }
        echo "  $(grep 'Overall exposure level' <<<"$out")"
        echo "  left (the settings systemd-analyze counts against the unit):"
        grep '✗' <<<"$out" | sed 's/^/    /' || true
        [ "${score/./}" -le 28 ] || oops "score $score is above 2.8"
    }
    check "systemd-analyze security $U: 2.8 or less" security

    echo "== journal: the sd_notify states PID 1 received (debug level)"
    c journalctl -q -o short-precise _PID=1 | grep -F 'Got notification message' | grep rstunnel || true

    echo "== $PASSED passed, ${#FAILED[@]} failed"
    if [ "${#FAILED[@]}" -gt 0 ]; then
        printf 'failed: %s\n' "${FAILED[@]}"
        c journalctl -q -o short-precise --no-pager >"$WORK/journal.txt" 2>&1 || true
        echo "the container's journal: ${WORK#"$ROOT"/}/journal.txt"
        exit 1
    fi
    exit 0
fi

# --- Stage 1: on the host ---------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    echo "test-systemd: SKIPPED: needs root (debootstrap, namespaces, cgroups)"
    exit 0
fi
T0=$(now)
cd "$ROOT"
for tool in debootstrap:debootstrap systemd-nspawn:systemd-container nsenter:util-linux \
    unshare:util-linux openssl:openssl python3:python3 dpkg-deb:dpkg timeout:coreutils; do
    command -v "${tool%%:*}" >/dev/null \
        || die "${tool%%:*} not found: apt-get install ${tool#*:} (scripts/deps.sh)"
done

# --root-only: make (or check) the cached root and stop; .ci/run runs this in the
# background while `make test` builds, so the debootstrap's network wait is off CI's path.
ROOT_ONLY=0
[ "${1:-}" = "--root-only" ] && ROOT_ONLY=1

# The .deb under test, fresh unless NOBUILD=1.
if [ "$ROOT_ONLY" = 0 ] && [ "${NOBUILD:-0}" != 1 ]; then
    make --no-print-directory deb >"$ROOT/target/systemd-deb.log" 2>&1 \
        || { tail -n 30 "$ROOT/target/systemd-deb.log" >&2; die "make deb failed"; }
fi
# The root: reuse, unpack from the tarball, or bootstrap (scripts/lib/rootfs.sh; never
# deleted while something is mounted under it).
rootfs_ensure "$SROOT" "$TARBALL" "$ROOT/target/systemd-debootstrap.log" "${SYSTEMD_TEST_FRESH:-0}" \
    "$SUITE" "$MIRROR" "${PACKAGES[@]}"
if [ "$ROOT_ONLY" = 1 ]; then
    log "root ready in $(($(now) - T0)) s"
    exit 0
fi

debs=("$ROOT"/target/deb/rstunnel_*.deb)
DEB="${debs[0]}"
[ -f "$DEB" ] || die "no target/deb/rstunnel_*.deb (make deb)"

# What the container sees at /srv/rstunnel-test: the .deb and two certificates.
rm -rf "$WORK"
mkdir -m 0700 "$WORK"
mkdir "$WORK/in"
cp "$DEB" "$WORK/in/"
scripts/make-cert.sh "$WORK/in/a.pem" rstunnel-test-a >/dev/null
scripts/make-cert.sh "$WORK/in/b.pem" rstunnel-test-b >/dev/null

# Cgroups of our own: CG/runner for the test, CG/ctr for systemd-nspawn (which makes
# ctr/payload and ctr/supervisor). Unified hierarchy, or the hybrid pair of the named
# systemd hierarchy and the unified one.
CG="rstunnel-test-systemd-$$"
CG_DIRS=()
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    CG_DIRS+=("/sys/fs/cgroup/$CG")
else
    [ -d /sys/fs/cgroup/systemd ] || die "no cgroup hierarchy for systemd at /sys/fs/cgroup"
    CG_DIRS+=("/sys/fs/cgroup/systemd/$CG")
    [ ! -d /sys/fs/cgroup/unified ] || CG_DIRS+=("/sys/fs/cgroup/unified/$CG")
fi

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local rc=$? d i pids
    trap - EXIT INT TERM
    # Interrupted: stage 2 gets the signal and 20 s to power the container off.
    if [ -n "$NS_PID" ] && kill -0 "$NS_PID" 2>/dev/null; then
        kill -TERM "$NS_PID" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do
            kill -0 "$NS_PID" 2>/dev/null || break
            sleep 0.1
        done
        [ "$rc" -ne 0 ] || rc=1
    fi
    # Whatever is left in our cgroups was started by this run.
    for d in "${CG_DIRS[@]}"; do
        [ -d "$d" ] || continue
        for ((i = 0; i < 50; i++)); do
            pids=$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null)
            [ -n "$pids" ] || break
            # shellcheck disable=SC2086 # a list of pids
            kill -KILL $pids 2>/dev/null || true
            sleep 0.1
        done
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [ ! -d "$d" ] || { echo "test-systemd: cgroup $d left behind" >&2; rc=1; }
    done
    rm -f "$WORK"/in/*.pem
    exit "$rc"
}
NS_PID=
trap cleanup EXIT INT TERM
for d in "${CG_DIRS[@]}"; do mkdir -p "$d/runner" "$d/ctr"; done

export SROOT ROOT WORK
export CG_DIRS_LIST="${CG_DIRS[*]}"
rc=0
# In the background and waited for, so that a signal to this script runs its trap now.
unshare --mount --propagation private -- "$ROOT/scripts/test-systemd.sh" --in-namespace &
NS_PID=$!
wait "$NS_PID" || rc=$?
NS_PID=
[ -z "$(rootfs_mounts "$SROOT")" ] || die "mounts under $SROOT leaked"
[ "$rc" -eq 0 ] || die "the systemd run failed (exit $rc)"
log "passed in $(($(now) - T0)) s"
