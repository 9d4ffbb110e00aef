# shellcheck shell=bash
# scripts/lib/chroot-test.sh - build, install, package and test rstunnel inside a
# debootstrapped Debian root, as that release sees it: its gcc, glibc, libssl, stunnel4
# and rsyslog, with the host's Rust toolchain mounted in. Sourced by
# scripts/test-debian11.sh (bullseye, OpenSSL 1.1.1) and scripts/test-debian13.sh
# (trixie, OpenSSL 3.5), which only say which release and what to expect of it; the
# steps run inside the root are scripts/lib/chroot-inside.sh.
#
# The caller sets, then calls `chroot_test_main "$@"`:
#   ROOT          the repository
#   NAME          the log prefix (test-debian11)
#   LABEL         the release in messages (Debian 11)
#   SUITE MIRROR  what to bootstrap, from where
#   PACKAGES      (array) what the root gets beyond minbase; the root's stamp, so another
#                 list means another root (scripts/lib/rootfs.sh)
#   CHROOT TARBALL BOOTSTRAP_LOG  target/<name>-root, -rootfs.tar.gz, -debootstrap.log
#   FRESH         1: bootstrap again (ignores the cached root and tarball)
#   SCRIPT        the caller's own path: stage 2 runs it again with --in-namespace
#   and for chroot-inside.sh (exported to it, see there): CHROOT_SSL_SONAME,
#   CHROOT_SSL_VERSION, CHROOT_DEB_DEPENDS, CHROOT_TESTS, CHROOT_E2E.
#
#   Stage 1, on the host: needs root (else prints SKIPPED and returns 0); installs
#     debootstrap if missing; finds the host's toolchain (through rustup when it is
#     there: its symlinks are absolute, so it is mounted at the same path); makes or
#     reuses the root (rootfs_ensure); runs stage 2 under `unshare --mount`; then checks
#     that nothing stayed mounted under the root.
#   Stage 2, in the private mount namespace (no mount is visible outside, and all go away
#     with it; a trap also ends the root's processes by pid and unmounts in order):
#       the root bind-mounted on itself (so `ip netns exec` can remount / as a slave),
#       proc, sys, dev (with dev/pts), tmpfs on /tmp and /run;
#       the repository read-only at /src with a writable target dir of the root's own
#       (/build/target) over /src/target, so nothing built here touches the host's
#       target/release; ../shared beside it read-only at /shared;
#       the toolchain read-only at its host path; CARGO_HOME=/build/cargo-home, into which
#       the host's ~/.cargo/registry is copied (updated each run: no download for what
#       the host has);
#     then chroot-inside.sh in a clean environment, as a login on that release would have.
#
# Defines log, die and now for the caller (prefixed with NAME), and sources rootfs.sh.

# shellcheck source=scripts/lib/rootfs.sh
. "$ROOT/scripts/lib/rootfs.sh"

log() { echo "$NAME: $*"; }
die() { echo "$NAME: FAIL: $*" >&2; exit 1; }
now() { date +%s; }

chroot_in_namespace() {
    MOUNTS=()
    # shellcheck disable=SC2317 # called by the trap
    cleanup_ns() {
        local rc=$? m p i
        trap - EXIT INT TERM
        # Processes left in the root (a daemon of a failed test) hold the mounts: end
        # them by pid. Only processes whose root is this root; all were started here.
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
    if [ -d "$CARGO_REGISTRY" ]; then
        cp -a -u "$CARGO_REGISTRY" "$CHROOT/build/cargo-home/"
    fi

    chroot "$CHROOT" /usr/bin/env -i \
        PATH="$TOOLCHAIN_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        HOME=/root USER=root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
        CARGO_HOME=/build/cargo-home CARGO_TERM_COLOR=never \
        RUSTC="$TOOLCHAIN_BIN/rustc" \
        CHROOT_TAG="$NAME [$SUITE]" \
        CHROOT_SSL_SONAME="$CHROOT_SSL_SONAME" CHROOT_SSL_VERSION="$CHROOT_SSL_VERSION" \
        CHROOT_DEB_DEPENDS="$CHROOT_DEB_DEPENDS" \
        CHROOT_TESTS="$CHROOT_TESTS" CHROOT_E2E="$CHROOT_E2E" \
        E2E_KEEP=0 \
        /bin/bash /src/scripts/lib/chroot-inside.sh
    exit 0
}

chroot_on_host() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$NAME: SKIPPED: needs root (debootstrap, chroot, mounts)"
        exit 0
    fi
    local t0 rc leaked
    t0=$(now)
    cd "$ROOT"

    command -v unshare >/dev/null || die "unshare not found (util-linux)"
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends debootstrap >/dev/null 2>&1 \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends debootstrap; } \
            || die "cannot install debootstrap"
    fi

    # The toolchain the host uses here, resolved through rustup if it is there. The
    # host's rustc runs in the root: rustc needs glibc 2.17 or later.
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

    # Mounts only ever exist in the namespace of stage 2; a root that has one is never
    # deleted (the repository is bind-mounted into it).
    rootfs_ensure "$CHROOT" "$TARBALL" "$BOOTSTRAP_LOG" "$FRESH" "$SUITE" "$MIRROR" "${PACKAGES[@]}"
    if [ "${ROOT_ONLY:-0}" = 1 ]; then
        log "root ready in $(($(now) - t0)) s"
        return 0
    fi

    export CHROOT ROOT RUSTUP_DIR TOOLCHAIN_BIN CARGO_REGISTRY
    export CHROOT_SSL_SONAME CHROOT_SSL_VERSION CHROOT_DEB_DEPENDS CHROOT_TESTS CHROOT_E2E
    rc=0
    unshare --mount --propagation private -- "$SCRIPT" --in-namespace || rc=$?
    # Nothing may be left mounted under the root (the namespace is gone; this checks it).
    leaked=$(rootfs_mounts "$CHROOT")
    [ -z "$leaked" ] || die "mounts under $CHROOT leaked: ${leaked//$'\n'/ }"
    [ "$rc" -eq 0 ] || die "the $LABEL run failed (exit $rc)"
    log "passed on $LABEL in $(($(now) - t0)) s"
}

# --root-only: make (or check) the cached root and stop (.ci/run runs it in the background
# while `make test` builds, so the debootstrap's network wait is off CI's path).
chroot_test_main() {
    case "${1:-}" in
        --in-namespace) chroot_in_namespace ;;
        --root-only) ROOT_ONLY=1 chroot_on_host ;;
        *) chroot_on_host ;;
    esac
}
