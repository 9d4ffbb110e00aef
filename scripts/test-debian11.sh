#!/usr/bin/env bash
# test-debian11.sh - build and test rstunnel on Debian 11 (bullseye), whose OpenSSL is
# 1.1.1 and whose stunnel4 is 5.56, in a chroot made with debootstrap.
#
#   1. target/debian11-root: a bullseye minbase root from http://deb.debian.org/debian with
#      the build and test packages (below). Bootstrapped once; the bootstrapped tree is
#      also kept as target/debian11-rootfs.tar.gz, from which a lost or damaged root is
#      unpacked again instead of downloaded (scripts/lib/rootfs.sh, shared with
#      scripts/test-systemd.sh).
#   2. In a private mount namespace, the repository read-only at /src, the host's toolchain
#      and cargo registry mounted in (scripts/lib/chroot-test.sh, shared with
#      scripts/test-debian13.sh, which says how).
#   3. Inside, as Debian 11 sees it (gcc 10, glibc 2.31, libssl-dev 1.1.1w, pkg-config),
#      scripts/lib/chroot-inside.sh:
#        cargo build --release --locked; `rstunnel -version` must say 1.1.1 both ways and
#        the binary must link libssl.so.1.1;
#        make install DESTDIR=/tmp/inst PREFIX=/usr; make deb NOBUILD=1, whose Depends
#        must name libssl1.1, installed with dpkg -i, run, purged;
#        cargo test --release --locked $DEBIAN11_TESTS (default: the stunnel4 interop
#        tests against bullseye's stunnel 5.56, and the OpenSSL version tests);
#        scripts/e2e-syslog.sh with bullseye's rsyslog, tcpdump, iproute2 (network
#        namespaces work in the chroot: /proc and /run are there).
#
# The host's rustc runs in the chroot: rustc needs glibc 2.17 or later, bullseye has 2.31.
# Needs root (debootstrap, mounts, namespaces). Not root: prints SKIPPED and exits 0.
#
# Environment:
#   DEBIAN11_MIRROR   default http://deb.debian.org/debian
#   DEBIAN11_TESTS    cargo test target selection (default
#                     "--test stunnel4_interop --test openssl_versions"; "--tests" for all).
#                     The whole suite here fails only where a test drives a tool newer
#                     than bullseye's: tests/ocsp.rs (`openssl ocsp -port 0` is refused
#                     by the 1.1.1 CLI), `s_server -trace` (not built in), stunnel 5.56
#                     refusing `sessionResume` in a server section and ignoring `curves`
#                     on a client, iptables (not in this root) for the transparent tests.
#   DEBIAN11_E2E=0    skip scripts/e2e-syslog.sh
#   DEBIAN11_FRESH=1  bootstrap again (ignores the cached root and tarball)
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=bullseye
MIRROR="${DEBIAN11_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=(
    libssl-dev pkg-config gcc libc6-dev make   # the build (openssl-sys, cc)
    openssl stunnel4                           # interop tests, certificates
    rsyslog bsdutils iproute2 tcpdump procps   # e2e-syslog.sh
    python3                                    # e2e-syslog.sh (its syslog sink helper)
    binutils                                   # objdump for `make deb`
)
# The root's stamp is what it was made from (suite, mirror, this list): another list means
# another root (scripts/lib/rootfs.sh).

NAME=test-debian11
LABEL="Debian 11"
CHROOT="$ROOT/target/debian11-root"
TARBALL="$ROOT/target/debian11-rootfs.tar.gz"
BOOTSTRAP_LOG="$ROOT/target/debian11-debootstrap.log"
FRESH="${DEBIAN11_FRESH:-0}"
SCRIPT="$ROOT/scripts/test-debian11.sh"
# What chroot-inside.sh expects of bullseye's build (make deb names libssl1.1 there).
CHROOT_SSL_SONAME='libssl\.so\.1\.1'
CHROOT_SSL_VERSION='1\.1\.1'
CHROOT_DEB_DEPENDS=libssl1.1
CHROOT_TESTS="${DEBIAN11_TESTS:---test stunnel4_interop --test openssl_versions}"
CHROOT_E2E="${DEBIAN11_E2E:-1}"

# shellcheck source=scripts/lib/chroot-test.sh
. "$ROOT/scripts/lib/chroot-test.sh"
chroot_test_main "$@"
