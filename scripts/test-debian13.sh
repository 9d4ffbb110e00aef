#!/usr/bin/env bash
# test-debian13.sh - build and test rstunnel on Debian 13 (trixie), whose OpenSSL is 3.5
# (ML-KEM, the hybrid post-quantum groups) and whose stunnel4 is 5.7x, in a chroot made
# with debootstrap. The same steps as scripts/test-debian11.sh, shared with it:
#
#   1. target/debian13-root: a trixie minbase root from http://deb.debian.org/debian with
#      the build and test packages (below), bootstrapped once and also kept as
#      target/debian13-rootfs.tar.gz (scripts/lib/rootfs.sh).
#   2. In a private mount namespace, the repository read-only at /src, the host's toolchain
#      and cargo registry mounted in (scripts/lib/chroot-test.sh).
#   3. Inside, as Debian 13 sees it (gcc 14, glibc 2.41, libssl-dev 3.5),
#      scripts/lib/chroot-inside.sh:
#        cargo build --release --locked; `rstunnel -version` must say 3.5 both ways and
#        the binary must link libssl.so.3;
#        make install DESTDIR=/tmp/inst PREFIX=/usr; make deb NOBUILD=1, whose Depends
#        must name libssl3t64 (trixie's name for libssl3), installed with dpkg -i, run,
#        purged;
#        cargo test --release --locked $DEBIAN13_TESTS (default: the stunnel4 interop
#        tests against trixie's stunnel, the OpenSSL version tests, and
#        tests/tls_key_exchange.rs: the hybrid ML-KEM groups against trixie's openssl
#        s_client/s_server and stunnel4 both ways, and the default groups);
#        scripts/e2e-syslog.sh with trixie's rsyslog, tcpdump, iproute2.
#
# Needs root (debootstrap, mounts, namespaces). Not root: prints SKIPPED and exits 0.
#
# Environment:
#   DEBIAN13_MIRROR   default http://deb.debian.org/debian
#   DEBIAN13_TESTS    cargo test target selection (default "--test stunnel4_interop
#                     --test openssl_versions --test tls_key_exchange"; "--tests" for all)
#   DEBIAN13_E2E=0    skip scripts/e2e-syslog.sh
#   DEBIAN13_FRESH=1  bootstrap again (ignores the cached root and tarball)
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=trixie
MIRROR="${DEBIAN13_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=(
    libssl-dev pkgconf gcc libc6-dev make      # the build (openssl-sys, cc)
    openssl stunnel4                           # interop tests, certificates
    rsyslog bsdutils iproute2 tcpdump procps   # e2e-syslog.sh
    python3                                    # e2e-syslog.sh (its syslog sink helper)
    binutils                                   # objdump for `make deb`
)
# The root's stamp is what it was made from (suite, mirror, this list): another list means
# another root (scripts/lib/rootfs.sh). pkgconf, not pkg-config: in trixie pkg-config is a
# transitional package, which debootstrap's resolver would only add pkgconf for.

NAME=test-debian13
LABEL="Debian 13"
CHROOT="$ROOT/target/debian13-root"
TARBALL="$ROOT/target/debian13-rootfs.tar.gz"
BOOTSTRAP_LOG="$ROOT/target/debian13-debootstrap.log"
FRESH="${DEBIAN13_FRESH:-0}"
SCRIPT="$ROOT/scripts/test-debian13.sh"
# What chroot-inside.sh expects of trixie's build (the 64-bit time_t transition renamed
# libssl3 to libssl3t64; make deb names both).
CHROOT_SSL_SONAME='libssl\.so\.3'
CHROOT_SSL_VERSION='3\.5\.'
CHROOT_DEB_DEPENDS=libssl3t64
CHROOT_TESTS="${DEBIAN13_TESTS:---test stunnel4_interop --test openssl_versions --test tls_key_exchange}"
CHROOT_E2E="${DEBIAN13_E2E:-1}"

# shellcheck source=scripts/lib/chroot-test.sh
. "$ROOT/scripts/lib/chroot-test.sh"
chroot_test_main "$@"
