#!/usr/bin/env bash
# test-debian11.sh - build and test rstunnel on Debian 11 (bullseye), whose OpenSSL is
# 1.1.1 and whose stunnel4 is 5.56, in a chroot made with debootstrap.
#
#   1. target/debian11-root: a bullseye minbase root from http://deb.debian.org/debian with
#      the build and test packages (below). Bootstrapped once; the bootstrapped tree is
#      also kept as target/debian11-rootfs.tar.gz, from which a lost or damaged root is
#      unpacked again instead of downloaded (scripts/lib/rootfs.sh, shared with
#      scripts/test-systemd.sh).
#   2. In a private mount namespace (unshare --mount: no mount is visible outside, and
#      all go away with the namespace; a trap also unmounts them in order):
#        the root bind-mounted on itself (so `ip netns exec` can remount / as a slave),
#        proc, sys, dev (with dev/pts), tmpfs on /tmp and /run,
#        this repository read-only at /src with a writable target dir of the root's own
#        (/build/target) mounted over /src/target, so nothing built here touches the
#        host's target/release; ../shared beside it read-only at /shared,
#        the host's rustup toolchain read-only at the same path (its symlinks are
#        absolute); CARGO_HOME=/build/cargo-home, a writable directory of the root into
#        which the host's ~/.cargo/registry is copied (updated each run).
#   3. Inside, as Debian 11 sees it (gcc 10, glibc 2.31, libssl-dev 1.1.1w, pkg-config):
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
CHROOT="$ROOT/target/debian11-root"
TARBALL="$ROOT/target/debian11-rootfs.tar.gz"
PACKAGES=(
    libssl-dev pkg-config gcc libc6-dev make   # the build (openssl-sys, cc)
    openssl stunnel4                           # interop tests, certificates
    rsyslog bsdutils iproute2 tcpdump procps   # e2e-syslog.sh
    python3                                    # e2e-syslog.sh (its syslog sink helper)
    binutils                                   # objdump for `make deb`
)
# The root's stamp is what it was made from (suite, mirror, this list): another list means
# another root (scripts/lib/rootfs.sh).

# shellcheck source=scripts/lib/rootfs.sh
. "$ROOT/scripts/lib/rootfs.sh"

log() { echo "test-debian11: $*"; }
die() { echo "test-debian11: FAIL: $*" >&2; exit 1; }
now() { date +%s; }

# --- Stage 2: inside the private mount namespace ----------------------------------------
if [ "${1:-}" = "--in-namespace" ]; then
    MOUNTS=()
    # shellcheck disable=SC2317 # called by the trap
    cleanup_ns() {
        local rc=$? m p
        trap - EXIT INT TERM
        # Processes left in the chroot (a daemon of a failed test) hold the mounts: end
        # them by pid. Only processes whose root is this chroot; all were started here.
        for p in /proc/[0-9]*; do
            if [ "$(readlink "$p/root" 2>/dev/null)" = "$CHROOT" ]; then
                kill -KILL "${p#/proc/}" 2>/dev/null || true
            fi
        done
        for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
            m="${MOUNTS[$i]}"
            umount -R "$m" 2>/dev/null || umount -R -l "$m" 2>/dev/null || true
        done
        exit "$rc"
    }
    trap cleanup_ns EXIT INT TERM
    mnt() { # mnt TARGET mount-args...: mount and remember for the cleanup
        local target="$1"
        shift
        mount "$@" "$target"
        MOUNTS+=("$target")
    }

    mnt "$CHROOT" --bind "$CHROOT"
    mnt "$CHROOT/proc" -t proc proc
    mnt "$CHROOT/sys" --rbind /sys
    mount --make-rslave "$CHROOT/sys"
    mnt "$CHROOT/dev" --rbind /dev
    mount --make-rslave "$CHROOT/dev"
    mnt "$CHROOT/tmp" -t tmpfs -o mode=1777 tmpfs
    mnt "$CHROOT/run" -t tmpfs -o mode=0755 tmpfs
    mkdir -p "$CHROOT/run/netns" "$CHROOT/src" "$CHROOT/build/target" "$CHROOT/build/cargo-home"

    mnt "$CHROOT/src" --bind "$ROOT"
    mount -o remount,bind,ro "$CHROOT/src"
    [ -d "$CHROOT/src/target" ] || die "$ROOT/target is missing"
    mnt "$CHROOT/src/target" --bind "$CHROOT/build/target"

    # ../shared beside the repository (the stunnel config corpus of tests/compat_corpus.rs
    # is read from <repo>/../shared/compat), read-only at /shared, where /src/.. points.
    if [ -d "$ROOT/../shared" ]; then
        mkdir -p "$CHROOT/shared"
        mnt "$CHROOT/shared" --bind "$ROOT/../shared"
        mount -o remount,bind,ro "$CHROOT/shared"
    fi

    mkdir -p "$CHROOT$RUSTUP_DIR"
    mnt "$CHROOT$RUSTUP_DIR" --bind "$RUSTUP_DIR"
    mount -o remount,bind,ro "$CHROOT$RUSTUP_DIR"

    cp -L /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true
    # The host's registry (index and .crate files): no download for what the host has.
    if [ -d "$CARGO_REGISTRY" ]; then
        cp -a -u "$CARGO_REGISTRY" "$CHROOT/build/cargo-home/"
    fi

    cat >"$CHROOT/build/inside.sh" <<'INSIDE'
#!/bin/bash
# Generated by scripts/test-debian11.sh; runs inside the Debian 11 chroot.
set -euo pipefail
log() { echo "test-debian11 [bullseye]: $*"; }
die() { echo "test-debian11 [bullseye]: FAIL: $*" >&2; exit 1; }
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
grep -q 'libssl\.so\.1\.1' <<<"$libs" || { echo "$libs"; die "$BIN does not link libssl.so.1.1"; }
v=$("$BIN" -version 2>&1 || true)
echo "$v" | sed -n '1,3s/^/    /p'
grep -Eq '^Compiled with OpenSSL 1\.1\.1' <<<"$v" || die "-version: not compiled with OpenSSL 1.1.1"
grep -Eq '^Running +with OpenSSL 1\.1\.1' <<<"$v" || die "-version: not running with OpenSSL 1.1.1"
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
grep -q '^Running  with OpenSSL 1\.1\.1' <<<"$v" || die "the installed binary does not run"
make --no-print-directory deb NOBUILD=1 >/tmp/deb.log 2>&1 || { cat /tmp/deb.log; die "make deb failed"; }
deb=$(ls /src/target/deb/rstunnel_*.deb)
depends=$(dpkg-deb -f "$deb" Depends)
log "make install: ok; $(basename "$deb"): Depends: $depends"
case "$depends" in *"libssl1.1"*) ;; *) die "the .deb does not depend on libssl1.1" ;; esac
dpkg -i "$deb" >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; die "dpkg -i failed"; }
v=$(/usr/bin/rstunnel -version 2>&1 || true)
grep -q '^Running  with OpenSSL 1\.1\.1' <<<"$v" || die "the packaged binary does not run"
dpkg --purge rstunnel >>/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; die "dpkg --purge failed"; }
log "install and package ok ($(($(now) - T)) s)"

T=$(now)
# shellcheck disable=SC2086 # a list of cargo arguments
cargo test --release --locked $DEBIAN11_TESTS
log "tests passed ($(($(now) - T)) s)"

if [ "$DEBIAN11_E2E" != 0 ]; then
    T=$(now)
    RSTUNNEL="$BIN" scripts/e2e-syslog.sh
    log "e2e-syslog passed ($(($(now) - T)) s)"
fi
INSIDE
    chmod 0755 "$CHROOT/build/inside.sh"

    # A clean environment, as a login on the old system would have.
    chroot "$CHROOT" /usr/bin/env -i \
        PATH="$TOOLCHAIN_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        HOME=/root USER=root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
        CARGO_HOME=/build/cargo-home CARGO_TERM_COLOR=never \
        RUSTC="$TOOLCHAIN_BIN/rustc" \
        DEBIAN11_TESTS="$DEBIAN11_TESTS" DEBIAN11_E2E="$DEBIAN11_E2E" \
        E2E_KEEP=0 \
        /build/inside.sh
    exit 0
fi

# --- Stage 1: on the host ---------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    echo "test-debian11: SKIPPED: needs root (debootstrap, chroot, mounts)"
    exit 0
fi
T0=$(now)
cd "$ROOT"

command -v unshare >/dev/null || die "unshare not found (util-linux)"
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends debootstrap >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends debootstrap; } \
        || die "cannot install debootstrap"
fi

# The toolchain the host uses here, resolved through rustup if it is there.
if command -v rustup >/dev/null; then
    TOOLCHAIN_BIN="$(dirname -- "$(cd "$ROOT" && rustup which cargo)")"
    RUSTUP_DIR="${RUSTUP_HOME:-$HOME/.rustup}"
else
    TOOLCHAIN_BIN="$(dirname -- "$(readlink -f "$(command -v cargo)")")"
    RUSTUP_DIR="$(dirname -- "$TOOLCHAIN_BIN")"
fi
RUSTUP_DIR="$(readlink -f "$RUSTUP_DIR")"
case "$(readlink -f "$TOOLCHAIN_BIN")" in
    "$RUSTUP_DIR"/*) ;;
    *) die "toolchain $TOOLCHAIN_BIN is not under $RUSTUP_DIR" ;;
esac
if [ ! -x "$TOOLCHAIN_BIN/cargo" ] || [ ! -x "$TOOLCHAIN_BIN/rustc" ]; then
    die "no cargo/rustc in $TOOLCHAIN_BIN"
fi
CARGO_REGISTRY="${CARGO_HOME:-$HOME/.cargo}/registry"

# The root: reuse, unpack from the tarball, or bootstrap (scripts/lib/rootfs.sh). Mounts
# only ever exist in the namespace of stage 2; a root that has one is never deleted (the
# repository is bind-mounted into it).
rootfs_ensure "$CHROOT" "$TARBALL" "$ROOT/target/debian11-debootstrap.log" "${DEBIAN11_FRESH:-0}" \
    "$SUITE" "$MIRROR" "${PACKAGES[@]}"

export CHROOT ROOT RUSTUP_DIR TOOLCHAIN_BIN CARGO_REGISTRY
export DEBIAN11_TESTS="${DEBIAN11_TESTS:---test stunnel4_interop --test openssl_versions}"
export DEBIAN11_E2E="${DEBIAN11_E2E:-1}"
rc=0
unshare --mount --propagation private -- "$ROOT/scripts/test-debian11.sh" --in-namespace || rc=$?
# Nothing may be left mounted under the root (the namespace is gone; this checks it).
leaked=$(rootfs_mounts "$CHROOT")
[ -z "$leaked" ] || die "mounts under $CHROOT leaked: ${leaked//$'\n'/ }"
[ "$rc" -eq 0 ] || die "the Debian 11 run failed (exit $rc)"
log "passed on Debian 11 in $(($(now) - T0)) s"
