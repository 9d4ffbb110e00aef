#!/bin/bash
# scripts/lib/chroot-inside.sh - the steps scripts/lib/chroot-test.sh runs inside a
# Debian root (test-debian11.sh, test-debian13.sh), at /src, as root, in a clean
# environment. Not meant to be run on the host.
#
#   cargo build --release --locked; the binary must link CHROOT_SSL_SONAME and
#   `rstunnel -version` must say CHROOT_SSL_VERSION both ways ("Compiled with",
#   "Running  with");
#   make install DESTDIR=/tmp/inst PREFIX=/usr (the files that must be there, and the
#   installed binary runs); make deb NOBUILD=1, whose Depends must name
#   CHROOT_DEB_DEPENDS, installed with dpkg -i, run, purged;
#   cargo test --release --locked $CHROOT_TESTS;
#   scripts/e2e-syslog.sh with the release's rsyslog, unless CHROOT_E2E=0.
#
# Environment (from chroot-test.sh): CHROOT_TAG (log prefix), CHROOT_SSL_SONAME (an ERE
# for ldd's output, e.g. libssl\.so\.3), CHROOT_SSL_VERSION (an ERE for the version after
# "OpenSSL ", e.g. 3\.5\.), CHROOT_DEB_DEPENDS (a text the Depends line must contain),
# CHROOT_TESTS (cargo test arguments), CHROOT_E2E.
set -euo pipefail
log() { echo "$CHROOT_TAG: $*"; }
die() { echo "$CHROOT_TAG: FAIL: $*" >&2; exit 1; }
now() { date +%s; }
cd /src
log "$(sed 's/^/Debian /' /etc/debian_version), $(ldd --version | head -n 1)"
log "$(openssl version), $(stunnel4 -version 2>&1 | grep -m1 '^stunnel')"
log "$(rustc --version), $(cargo --version)"

T=$(now)
cargo build --release --locked
BIN=/src/target/release/rstunnel
# (grep reads a variable, never a pipe: under pipefail `cmd | grep -q` fails when
# grep's early exit kills cmd with SIGPIPE.)
libs=$(ldd "$BIN")
grep -Eq "$CHROOT_SSL_SONAME" <<<"$libs" || { echo "$libs"; die "$BIN does not link $CHROOT_SSL_SONAME"; }
v=$("$BIN" -version 2>&1 || true)
echo "$v" | sed -n '1,3s/^/    /p'
grep -Eq "^Compiled with OpenSSL $CHROOT_SSL_VERSION" <<<"$v" || die "-version: not compiled with OpenSSL $CHROOT_SSL_VERSION"
grep -Eq "^Running +with OpenSSL $CHROOT_SSL_VERSION" <<<"$v" || die "-version: not running with OpenSSL $CHROOT_SSL_VERSION"
log "built ($(($(now) - T)) s)"

T=$(now)
rm -rf /tmp/inst
make --no-print-directory install DESTDIR=/tmp/inst PREFIX=/usr >/tmp/install.log 2>&1 \
    || { cat /tmp/install.log; die "make install failed"; }
for f in /tmp/inst/usr/bin/rstunnel /tmp/inst/usr/share/man/man8/rstunnel.8.gz \
    /tmp/inst/lib/systemd/system/rstunnel@.service /tmp/inst/etc/stunnel/syslog-server.conf; do
    [ -e "$f" ] || { cat /tmp/install.log; die "make install did not install $f"; }
done
v=$(/tmp/inst/usr/bin/rstunnel -version 2>&1 || true)
grep -Eq "^Running  with OpenSSL $CHROOT_SSL_VERSION" <<<"$v" || die "the installed binary does not run"
make --no-print-directory deb NOBUILD=1 >/tmp/deb.log 2>&1 || { cat /tmp/deb.log; die "make deb failed"; }
deb=$(ls /src/target/deb/rstunnel_*.deb)
depends=$(dpkg-deb -f "$deb" Depends)
log "make install: ok; $(basename "$deb"): Depends: $depends"
case "$depends" in *"$CHROOT_DEB_DEPENDS"*) ;; *) die "the .deb does not depend on $CHROOT_DEB_DEPENDS" ;; esac
dpkg -i "$deb" >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; die "dpkg -i failed"; }
v=$(/usr/bin/rstunnel -version 2>&1 || true)
grep -Eq "^Running  with OpenSSL $CHROOT_SSL_VERSION" <<<"$v" || die "the packaged binary does not run"
dpkg --purge rstunnel >>/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; die "dpkg --purge failed"; }
log "install and package ok ($(($(now) - T)) s)"

T=$(now)
# shellcheck disable=SC2086 # a list of cargo arguments
cargo test --release --locked $CHROOT_TESTS
log "tests passed ($(($(now) - T)) s)"

if [ "$CHROOT_E2E" != 0 ]; then
    T=$(now)
    RSTUNNEL="$BIN" scripts/e2e-syslog.sh
    log "e2e-syslog passed ($(($(now) - T)) s)"
fi
