#!/usr/bin/env bash
# test-install.sh - check `make install`/`make uninstall` for both layouts, the
# installed files themselves, `make deb` and `make rpm`.
#
# Everything happens in a temporary directory (removed at the end) and under
# target/deb and target/rpm; the system itself is not touched: the .deb goes
# into a throwaway dpkg root (dpkg --root), the .rpm into a throwaway rpm root,
# nothing is started under systemd. rpmbuild comes from Debian's "rpm" package,
# which is installed with apt-get if missing (root only).
#
# Uses target/release/rstunnel as it is (builds it only if it is missing).
# Prints "test-install: N passed, 0 failed"; exits 1 if anything failed.
#
# Usage: scripts/test-install.sh [-v]     -v: show the output of every step
#
# shellcheck disable=SC2016  # the bash -c '...' snippets get their values as $1, $2...
set -uo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD

verbose=0
case "${1:-}" in
    -v) verbose=1 ;;
    "") ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test-install.sh: unknown argument: $1" >&2; exit 2 ;;
esac

# Only the settings given below may reach make: nothing from a calling make or
# from the environment (an exported BINDIR would change every expected path).
unset MAKEFLAGS MFLAGS MAKELEVEL PREFIX DESTDIR sysconfdir LAYOUT NOBUILD \
      BINDIR MANDIR DOCDIR LICENSEDIR UNITDIR CONFDIR LOGROTATEDIR
export LC_ALL=C

BIN=target/release/rstunnel
VERSION=$(awk -F'"' '/^\[/ { p = ($0 == "[package]") } p && /^version *=/ { print $2; exit }' Cargo.toml)
PKG_VERSION=${VERSION//-/\~}

TMP=$(mktemp -d /tmp/rstunnel-test-install.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
LOG="$TMP/step.log"

ok()   { passed=$((passed + 1)); echo "ok   $*"; }
bad()  { failed=$((failed + 1)); echo "FAIL $*"; }

# check DESCRIPTION COMMAND...: runs COMMAND with its output in $LOG; shown on failure.
check() {
    local what=$1
    shift
    if "$@" >"$LOG" 2>&1; then
        ok "$what"
        [ "$verbose" -eq 0 ] || sed 's/^/     | /' "$LOG"
    else
        bad "$what"
        sed 's/^/     | /' "$LOG" | tail -n 40
    fi
}

# same_list DESCRIPTION EXPECTED ACTUAL (newline-separated lists, any order)
same_list() {
    local e a
    e=$(printf '%s\n' "$2" | sed '/^$/d' | sort)
    a=$(printf '%s\n' "$3" | sed '/^$/d' | sort)
    if [ "$e" = "$a" ]; then
        ok "$1"
    else
        bad "$1"
        diff <(printf '%s\n' "$e" | sed '/^$/d') <(printf '%s\n' "$a" | sed '/^$/d') \
            | sed -n 's/^</     | missing:/p; s/^>/     | unexpected:/p'
    fi
}

# Files and symlinks under a directory, as /relative/paths.
files_in() { (cd "$1" && find . -mindepth 1 \( -type f -o -type l \) | sed 's|^\.||' | sort); }

mk() { make --no-print-directory "$@"; }

# --- prerequisites ------------------------------------------------------------
if [ ! -x "$BIN" ]; then
    echo "== $BIN is missing: cargo build --release"
    cargo build --release || { echo "test-install: build failed" >&2; exit 1; }
fi
echo "== rstunnel $VERSION, binary $BIN"

# A certificate for the full --check of the installed server sample.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-install \
    -keyout "$TMP/stunnel.pem" -out "$TMP/cert.pem" >/dev/null 2>&1 \
    && cat "$TMP/cert.pem" >>"$TMP/stunnel.pem"

# --- make install / uninstall ------------------------------------------------
COMMON_FILES="/usr/bin/rstunnel
/usr/share/man/man8/rstunnel.8.gz
/usr/share/doc/rstunnel/README.md
/usr/share/doc/rstunnel/examples/rsyslog/client-forward-relp.conf
/usr/share/doc/rstunnel/examples/rsyslog/client-forward-tcp.conf
/usr/share/doc/rstunnel/examples/rsyslog/server-input-relp.conf
/usr/share/doc/rstunnel/examples/rsyslog/server-input-tcp.conf
/usr/share/doc/rstunnel/examples/prometheus/rstunnel-alerts.yml
/etc/stunnel/stunnel.conf
/etc/stunnel/syslog-server.conf
/etc/stunnel/syslog-client.conf
/etc/logrotate.d/rstunnel"

expected_files() {
    case "$1" in
    debian) printf '%s\n' "$COMMON_FILES" \
        /lib/systemd/system/rstunnel.service /lib/systemd/system/rstunnel@.service \
        /usr/share/doc/rstunnel/LICENSE-MIT /usr/share/doc/rstunnel/LICENSE-APACHE ;;
    redhat) printf '%s\n' "$COMMON_FILES" \
        /usr/lib/systemd/system/rstunnel.service /usr/lib/systemd/system/rstunnel@.service \
        /usr/share/licenses/rstunnel/LICENSE-MIT /usr/share/licenses/rstunnel/LICENSE-APACHE ;;
    esac
}
unit_dir() { case "$1" in debian) echo /lib/systemd/system ;; redhat) echo /usr/lib/systemd/system ;; esac; }

# Checks on an installed tree ($1 = DESTDIR, $2 = layout).
check_tree() {
    local d=$1 layout=$2 units
    units=$(unit_dir "$layout")

    check "$layout: binary mode 0755, other files 0644" bash -c '
        cd "$1" || exit 1
        [ "$(stat -c %a usr/bin/rstunnel)" = 755 ] || { echo "usr/bin/rstunnel: $(stat -c %a usr/bin/rstunnel)"; exit 1; }
        bad=$(find . -type f ! -path ./usr/bin/rstunnel ! -perm 0644)
        [ -z "$bad" ] || { echo "not 0644: $bad"; exit 1; }' _ "$d"

    check "$layout: installed binary -version" bash -c '
        out=$("$1/usr/bin/rstunnel" -version 2>&1) || { echo "rc=$?"; echo "$out"; exit 1; }
        echo "$out" | head -n 1
        echo "$out" | grep -q "^rstunnel $2 "' _ "$d" "$VERSION"

    local f
    for f in stunnel.conf syslog-server.conf syslog-client.conf; do
        check "$layout: rstunnel --check --no-files /etc/stunnel/$f" \
            "$d/usr/bin/rstunnel" --check --no-files "$d/etc/stunnel/$f"
    done
    if [ -s "$TMP/stunnel.pem" ]; then
        check "$layout: rstunnel --check syslog-server.conf (with a certificate)" bash -c '
            sed "s|^cert = .*|cert = $2|" "$1/etc/stunnel/syslog-server.conf" >"$3/server-check.conf"
            "$1/usr/bin/rstunnel" --check "$3/server-check.conf"' _ "$d" "$TMP/stunnel.pem" "$TMP"
    fi
    check "$layout: rstunnel --check syslog-client.conf" \
        "$d/usr/bin/rstunnel" --check "$d/etc/stunnel/syslog-client.conf"

    check "$layout: units run /usr/bin/rstunnel on /etc/stunnel files, Type=notify, reload by HUP" bash -c '
        set -e
        grep -qx "ExecStart=/usr/bin/rstunnel /etc/stunnel/%i.conf" "$1/rstunnel@.service"
        grep -qx "ExecStart=/usr/bin/rstunnel /etc/stunnel/stunnel.conf" "$1/rstunnel.service"
        for u in "$1/rstunnel.service" "$1/rstunnel@.service"; do
            grep -qx "Type=notify" "$u"
            grep -qxF "ExecReload=+/bin/sh -c '\''kill -HUP \"\$MAINPID\"'\''" "$u"
            grep -qx "LimitNOFILE=65536" "$u"
            grep -qx "Restart=on-failure" "$u"
            grep -qx "NoNewPrivileges=yes" "$u"
        done' _ "$d$units"

    if command -v systemd-analyze >/dev/null 2>&1; then
        # verify wants the ExecStart binary and the Documentation= man page to exist.
        check "$layout: systemd-analyze verify (units and man:rstunnel(8))" bash -c '
            mkdir -p "$3" && for u in rstunnel.service rstunnel@.service; do
                sed "s|^ExecStart=/usr/bin/rstunnel|ExecStart=$1/usr/bin/rstunnel|" "$1$2/$u" >"$3/$u"
            done
            out=$(cd "$3" && MANPATH="$1/usr/share/man:$(manpath 2>/dev/null)" \
                systemd-analyze verify ./rstunnel.service ./rstunnel@.service 2>&1)
            rc=$?; echo "$out"; [ $rc -eq 0 ] && [ -z "$out" ]' _ "$d" "$units" "$TMP/verify-$layout"
    else
        bad "$layout: systemd-analyze verify: systemd-analyze not found: run scripts/deps.sh (Debian package systemd)"
    fi

    check "$layout: man page: gzip -9n, version $VERSION, groff -ww clean" bash -c '
        set -e
        gz="$1/usr/share/man/man8/rstunnel.8.gz"
        gzip -t "$gz"
        [ "$(od -An -tx1 -j4 -N4 "$gz" | tr -d " ")" = 00000000 ]   # -n: no time stamp
        zcat "$gz" | grep -q "^\.TH RSTUNNEL 8 .*\"rstunnel $2\""
        warn=$(zcat "$gz" | groff -man -Tutf8 -ww -z 2>&1)
        [ -z "$warn" ] || { echo "$warn"; exit 1; }' _ "$d" "$VERSION"
}

for layout in debian redhat; do
    echo "== make install LAYOUT=$layout PREFIX=/usr"
    d="$TMP/install-$layout"
    args=(DESTDIR="$d" PREFIX=/usr sysconfdir=/etc LAYOUT="$layout" NOBUILD=1)
    check "$layout: make install" mk install "${args[@]}"
    same_list "$layout: installed file list" "$(expected_files "$layout")" "$(files_in "$d")"
    check_tree "$d" "$layout"

    check "$layout: make uninstall" mk uninstall "${args[@]}"
    same_list "$layout: nothing left after uninstall" "" "$(files_in "$d")"
    check "$layout: no empty doc/licenses directory left" bash -c '
        ! [ -e "$1/usr/share/doc/rstunnel" ] && ! [ -e "$1/usr/share/licenses/rstunnel" ]' _ "$d"

    echo "== edited configuration over two installs, LAYOUT=$layout"
    check "$layout: install (1)" mk install "${args[@]}"
    printf '\n; edited by test-install\n' >>"$d/etc/stunnel/stunnel.conf"
    printf '# edited by test-install\n' >>"$d/etc/logrotate.d/rstunnel"
    cp "$d/etc/stunnel/stunnel.conf" "$TMP/edited.conf"
    cp "$d/etc/logrotate.d/rstunnel" "$TMP/edited.logrotate"
    rm -f "$d/etc/stunnel/syslog-client.conf"     # a removed sample comes back
    check "$layout: install (2) over the edited files" mk install "${args[@]}"
    check "$layout: edited stunnel.conf and logrotate file kept" bash -c '
        cmp "$1/etc/stunnel/stunnel.conf" "$2" && cmp "$1/etc/logrotate.d/rstunnel" "$3"' \
        _ "$d" "$TMP/edited.conf" "$TMP/edited.logrotate"
    check "$layout: removed sample reinstalled" cmp conf/syslog-client.conf "$d/etc/stunnel/syslog-client.conf"
    same_list "$layout: file list after the second install" "$(expected_files "$layout")" "$(files_in "$d")"
    check "$layout: make uninstall" mk uninstall "${args[@]}"
    same_list "$layout: only the edited files left" \
        "$(printf '%s\n' /etc/stunnel/stunnel.conf /etc/logrotate.d/rstunnel)" "$(files_in "$d")"
done

echo "== other PREFIX and sysconfdir: paths inside the units follow"
d="$TMP/install-opt"
check "make install PREFIX=/opt/rst sysconfdir=/etc/alt LAYOUT=debian" \
    mk install DESTDIR="$d" PREFIX=/opt/rst sysconfdir=/etc/alt LAYOUT=debian NOBUILD=1
same_list "PREFIX=/opt/rst: installed file list" "$(printf '%s\n' \
    /opt/rst/bin/rstunnel /opt/rst/share/man/man8/rstunnel.8.gz \
    /opt/rst/lib/systemd/system/rstunnel.service /opt/rst/lib/systemd/system/rstunnel@.service \
    /opt/rst/share/doc/rstunnel/README.md /opt/rst/share/doc/rstunnel/LICENSE-MIT \
    /opt/rst/share/doc/rstunnel/LICENSE-APACHE /etc/alt/stunnel/stunnel.conf \
    /opt/rst/share/doc/rstunnel/examples/rsyslog/client-forward-relp.conf \
    /opt/rst/share/doc/rstunnel/examples/rsyslog/client-forward-tcp.conf \
    /opt/rst/share/doc/rstunnel/examples/rsyslog/server-input-relp.conf \
    /opt/rst/share/doc/rstunnel/examples/rsyslog/server-input-tcp.conf \
    /opt/rst/share/doc/rstunnel/examples/prometheus/rstunnel-alerts.yml \
    /etc/alt/stunnel/syslog-server.conf /etc/alt/stunnel/syslog-client.conf \
    /etc/alt/logrotate.d/rstunnel)" "$(files_in "$d")"
check "PREFIX=/opt/rst: ExecStart and paths rewritten" bash -c '
    set -e
    u="$1/opt/rst/lib/systemd/system"
    grep -qx "ExecStart=/opt/rst/bin/rstunnel /etc/alt/stunnel/%i.conf" "$u/rstunnel@.service"
    grep -qx "ExecStart=/opt/rst/bin/rstunnel /etc/alt/stunnel/stunnel.conf" "$u/rstunnel.service"
    ! grep -n "/usr/bin/rstunnel\|/etc/stunnel/\|/etc/logrotate.d/" "$u/rstunnel.service" "$u/rstunnel@.service"' _ "$d"
check "PREFIX=/opt/rst: make uninstall" \
    mk uninstall DESTDIR="$d" PREFIX=/opt/rst sysconfdir=/etc/alt LAYOUT=debian
same_list "PREFIX=/opt/rst: nothing left after uninstall" "" "$(files_in "$d")"
check "unknown LAYOUT refused" bash -c '! make --no-print-directory install NOBUILD=1 DESTDIR="$1" LAYOUT=slackware' _ "$TMP/bad-layout"
d="$TMP/install-default"
check "make install without PREFIX (LAYOUT=debian)" mk install DESTDIR="$d" LAYOUT=debian NOBUILD=1
check "default PREFIX is /usr/local, units in /usr/local/lib/systemd/system" bash -c '
    set -e
    test -x "$1/usr/local/bin/rstunnel"
    test -f "$1/usr/local/share/man/man8/rstunnel.8.gz"
    grep -qx "ExecStart=/usr/local/bin/rstunnel /etc/stunnel/%i.conf" \
        "$1/usr/local/lib/systemd/system/rstunnel@.service"
    test -f "$1/etc/stunnel/stunnel.conf"' _ "$d"
check "make uninstall without PREFIX" mk uninstall DESTDIR="$d" LAYOUT=debian
same_list "default PREFIX: nothing left after uninstall" "" "$(files_in "$d")"

# --- logrotate ------------------------------------------------------------------
echo "== logrotate file"
logrotate_tests() {
lr="$TMP/logrotate"
mkdir -p "$lr/log" "$lr/run" "$lr/fake"
# The same file with its directories moved into $TMP, and the systemctl part
# disabled: on a host with systemd it would signal the host's real rstunnel units.
sed -e "s|/var/log/rstunnel|$lr/log|g" -e "s|/run/rstunnel|$lr/run|g" \
    -e "s|\[ -d /run/systemd/system \]|[ -d $lr/no-systemd ]|" \
    conf/logrotate/rstunnel >"$lr/rstunnel.conf"
check "logrotate -d accepts conf/logrotate/rstunnel" logrotate -d -s "$lr/state" "$lr/rstunnel.conf"
check "logrotate: nothing to rotate, nothing running: exit 0" logrotate -f -s "$lr/state" "$lr/rstunnel.conf"

# A stand-in process named "rstunnel" that records SIGUSR1, a process with
# another name behind a (stale-looking) pid file, and a pid file with junk.
cat >"$lr/fake/rstunnel" <<'EOF'
#!/bin/sh
trap 'echo USR1 >>"$1"' USR1
while :; do sleep 0.1; done
EOF
chmod 0755 "$lr/fake/rstunnel"
"$lr/fake/rstunnel" "$lr/fake.usr1" &
fake=$!
PIDS+=("$fake")
sleep 1000 &
other=$!
PIDS+=("$other")
echo "$fake" >"$lr/run/fake.pid"
echo "$other" >"$lr/run/other.pid"
echo "not-a-pid" >"$lr/run/junk.pid"
echo "first line" >"$lr/log/fake.log"
sleep 0.2
check "logrotate -f: rotates, exit 0" logrotate -f -s "$lr/state" "$lr/rstunnel.conf"
check "logrotate: log renamed to .1, no new file created by logrotate (nocreate)" bash -c '
    [ -f "$1/fake.log.1" ] && ! [ -e "$1/fake.log" ]' _ "$lr/log"
check "logrotate: the rstunnel process got SIGUSR1" bash -c '
    for _ in $(seq 30); do [ -s "$1" ] && exit 0; sleep 0.1; done; exit 1' _ "$lr/fake.usr1"
check "logrotate: a process with another name was not signalled" kill -0 "$other"

# The real binary: output file in the rotated directory, pid file in the run directory.
cat >"$lr/real.conf" <<EOF
foreground = quiet
syslog = no
debug = notice
output = $lr/log/real.log
pid = $lr/run/real.pid
[test-install]
client = yes
accept = 127.0.0.1:0
connect = 127.0.0.1:9
EOF
"$ROOT/$BIN" "$lr/real.conf" >"$lr/real.stderr" 2>&1 &
real=$!
PIDS+=("$real")
for _ in $(seq 50); do [ -s "$lr/run/real.pid" ] && break; sleep 0.1; done
if [ -s "$lr/run/real.pid" ] && kill -0 "$real" 2>/dev/null; then
    check "logrotate -f with a running rstunnel: exit 0" logrotate -f -s "$lr/state" "$lr/rstunnel.conf"
    for _ in $(seq 30); do grep -qs "Log file reopened" "$lr/log/real.log" && break; sleep 0.1; done
    if ! kill -0 "$real" 2>/dev/null; then
        bad "logrotate: rstunnel died on SIGUSR1"
    elif grep -qs "Log file reopened" "$lr/log/real.log"; then
        ok "logrotate: rstunnel reopened its log file (new real.log says 'Log file reopened')"
    else
        # rstunnel reopens its output file on SIGUSR1 (src/runtime.rs); logrotate's
        # postrotate signals it, so no new file means the signal or the reopen failed.
        bad "logrotate: rstunnel alive but real.log was not reopened after logrotate's SIGUSR1"
        sed 's/^/     | /' "$lr/real.stderr"
        ls -l "$lr/log" | sed 's/^/     | /'
    fi
else
    bad "could not start rstunnel for the logrotate test"
    sed 's/^/     | /' "$lr/real.stderr"
fi
kill "$real" "$fake" "$other" 2>/dev/null
}
# A missing logrotate is a missing dependency (scripts/deps.sh installs it): one failure
# that says so, not one per step of logrotate_tests.
if command -v logrotate >/dev/null 2>&1; then
    logrotate_tests
else
    bad "logrotate: command not found: run scripts/deps.sh (Debian package logrotate)"
fi

# --- make deb -----------------------------------------------------------------
echo "== make deb"
if command -v dpkg-deb >/dev/null 2>&1; then
    ARCH=$(dpkg --print-architecture)
    DEB="target/deb/rstunnel_${PKG_VERSION}_${ARCH}.deb"
    check "make deb" mk deb NOBUILD=1
    check "$DEB exists" test -s "$DEB"
    check "control fields" bash -c '
        set -e
        [ "$(dpkg-deb -f "$1" Package)" = rstunnel ]
        [ "$(dpkg-deb -f "$1" Version)" = "$2" ]
        [ "$(dpkg-deb -f "$1" Architecture)" = "$3" ]
        [ "$(dpkg-deb -f "$1" Maintainer)" = "rstunnel developers <dev@rstunnel.invalid>" ]
        dpkg-deb -f "$1" Depends | grep -Eq "(^|, )libssl(3|1\.1)"
        dpkg-deb -f "$1" Depends' _ "$DEB" "$PKG_VERSION" "$ARCH"
    check "conffiles lists the /etc files" bash -c '
        diff <(dpkg-deb --ctrl-tarfile "$1" | tar -xOf - ./conffiles) - <<EOF
/etc/logrotate.d/rstunnel
/etc/stunnel/stunnel.conf
/etc/stunnel/syslog-client.conf
/etc/stunnel/syslog-server.conf
EOF' _ "$DEB"
    same_list ".deb file list" "$(expected_files debian; echo /usr/share/doc/rstunnel/copyright)" \
        "$(dpkg-deb -c "$DEB" | awk '$1 !~ /^d/ { print $6 }' | sed 's|^\.||')"
    check ".deb files owned by root:root" bash -c '! dpkg-deb -c "$1" | awk "{ print \$2 }" | grep -v "^root/root$"' _ "$DEB"

    # A throwaway dpkg root: its own database; maintainer scripts run outside a
    # chroot with DPKG_ROOT set, and ours do nothing then.
    droot="$TMP/dpkg-root"
    mkdir -p "$droot/var/lib/dpkg/info" "$droot/var/lib/dpkg/updates" "$droot/var/lib/dpkg/triggers"
    touch "$droot/var/lib/dpkg/status" "$droot/var/lib/dpkg/available"
    DPKG=(dpkg --root="$droot" --log="$TMP/dpkg.log" --force-not-root --force-script-chrootless)
    host_before=$(dpkg-query -W -f='${Status} ${Version}' rstunnel 2>/dev/null || true)
    check "dpkg --root -i (throwaway root)" "${DPKG[@]}" --force-depends -i "$DEB"
    check "dpkg --root: rstunnel installed" bash -c '
        dpkg-query --root="$1" -W -f="\${Status}" rstunnel | grep -qx "install ok installed"' _ "$droot"
    same_list "dpkg -L lists the package's files" \
        "$(expected_files debian; echo /usr/share/doc/rstunnel/copyright)" \
        "$(dpkg --root="$droot" -L rstunnel | while read -r f; do [ -d "$droot$f" ] || echo "$f"; done)"
    check "files present in the root" bash -c '
        set -e
        cd "$1"; test -x usr/bin/rstunnel; test -f lib/systemd/system/rstunnel@.service
        test -f usr/share/man/man8/rstunnel.8.gz; test -f etc/stunnel/syslog-server.conf' _ "$droot"
    check "binary from the .deb runs -version" "$droot/usr/bin/rstunnel" -version
    printf '; edited\n' >>"$droot/etc/stunnel/syslog-server.conf"
    check "dpkg --root -r" "${DPKG[@]}" -r rstunnel
    same_list "after -r only the conffiles remain" \
        "$(printf '%s\n' /etc/logrotate.d/rstunnel /etc/stunnel/stunnel.conf \
            /etc/stunnel/syslog-client.conf /etc/stunnel/syslog-server.conf)" \
        "$(files_in "$droot" | grep -v '^/var/lib/dpkg/')"
    check "dpkg --root -P" "${DPKG[@]}" -P rstunnel
    same_list "after -P nothing remains" "" "$(files_in "$droot" | grep -v '^/var/lib/dpkg/')"
    host_after=$(dpkg-query -W -f='${Status} ${Version}' rstunnel 2>/dev/null || true)
    check "the host's dpkg database was not touched" test "$host_before" = "$host_after"
else
    bad "make deb: dpkg-deb not found (Debian's Essential package dpkg has it)"
fi

# --- make rpm -----------------------------------------------------------------
echo "== make rpm"
if ! command -v rpmbuild >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "rpmbuild missing: apt-get install -y rpm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rpm >"$LOG" 2>&1 \
        || { apt-get update >>"$LOG" 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rpm >>"$LOG" 2>&1; } \
        || tail -n 5 "$LOG"
fi
if command -v rpmbuild >/dev/null 2>&1; then
    RPM_ARCH=$(rpm --eval '%{_arch}')
    RPMFILE="target/rpm/RPMS/$RPM_ARCH/rstunnel-$PKG_VERSION-1.$RPM_ARCH.rpm"
    # Queries use a private database: Debian's rpm would otherwise create ~/.rpmdb.
    RPMQ=(rpm --dbpath "$TMP/rpmdb")
    check "make rpm" mk rpm NOBUILD=1
    check "$RPMFILE exists" test -s "$RPMFILE"
    same_list "rpm -qlp: files" "$(expected_files redhat)" \
        "$("${RPMQ[@]}" -qlp "$RPMFILE" 2>/dev/null | while read -r f; do
            case "$f" in /etc/stunnel|/usr/share/doc/rstunnel|/usr/share/doc/rstunnel/examples|/usr/share/doc/rstunnel/examples/rsyslog|/usr/share/doc/rstunnel/examples/prometheus|/usr/share/licenses/rstunnel) ;; *) echo "$f" ;; esac
        done)"
    check "rpm -qlp: owns /etc/stunnel and its doc directories" bash -c '
        l=$("${@:2}" -qlp "$1") && for x in /etc/stunnel /usr/share/doc/rstunnel /usr/share/licenses/rstunnel; do
            echo "$l" | grep -qx "$x" || { echo "missing $x"; exit 1; }; done' _ "$RPMFILE" "${RPMQ[@]}"
    same_list "rpm -qcp: config files" \
        "$(printf '%s\n' /etc/logrotate.d/rstunnel /etc/stunnel/stunnel.conf \
            /etc/stunnel/syslog-client.conf /etc/stunnel/syslog-server.conf)" \
        "$("${RPMQ[@]}" -qcp "$RPMFILE" 2>/dev/null)"
    check "rpm -qp: name, version, requires libssl.so.3 or .1.1" bash -c '
        set -e
        [ "$("${@:3}" -qp --qf "%{NAME} %{VERSION}" "$1")" = "rstunnel $2" ]
        "${@:3}" -qp --requires "$1" | grep -Eq "^libssl\.so\.(3|1\.1)"' _ "$RPMFILE" "$PKG_VERSION" "${RPMQ[@]}"

    # Install into a throwaway root (scriptlets would run chrooted there: skipped).
    rroot="$TMP/rpm-root"
    mkdir -p "$rroot"
    RPMR=(rpm --root "$rroot" --dbpath /var/lib/rpm)
    check "rpm --root --initdb" "${RPMR[@]}" --initdb
    check "rpm --root -i (throwaway root)" "${RPMR[@]}" -i --nodeps --noscripts "$RPMFILE"
    same_list "rpm --root: installed files" "$(expected_files redhat)" \
        "$(files_in "$rroot" | grep -v '^/var/lib/rpm/')"
    check "binary from the .rpm runs -version" "$rroot/usr/bin/rstunnel" -version
    check "rpm --root -e" "${RPMR[@]}" -e --nodeps --noscripts rstunnel
    same_list "rpm --root: nothing left after -e" "" "$(files_in "$rroot" | grep -v '^/var/lib/rpm/')"
else
    bad "make rpm: rpmbuild not available (apt-get install rpm)"
fi

echo
echo "test-install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
