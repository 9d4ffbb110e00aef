# shellcheck shell=bash
# scripts/lib/rootfs.sh - a Debian root made once with debootstrap and cached under
# target/, for scripts/lib/chroot-test.sh (the bullseye and trixie chroots of
# scripts/test-debian11.sh and test-debian13.sh) and scripts/test-systemd.sh
# (a bookworm root booted by systemd-nspawn). Sourced by both; defines functions only.
#
# The caller defines log MESSAGE, die MESSAGE and now (seconds), and ROOT (the
# repository, to print paths below it relative to it).
#
# rootfs_ensure DIR TARBALL BOOTSTRAP_LOG FRESH SUITE MIRROR PACKAGE...
#   Leaves in DIR a minbase root of SUITE from MIRROR with PACKAGEs added. What it was
#   made from ("SUITE MIRROR minbase PACKAGE...") is its stamp, kept in DIR/.rstunnel-root
#   and TARBALL.stamp: another package list or mirror means another root. In order:
#     * something mounted under DIR: die (the repository may be bind-mounted into it,
#       and a root with mounts is never deleted);
#     * FRESH = 1: DIR, TARBALL and its stamp are removed first;
#     * DIR with the same stamp: reused as it is;
#     * else TARBALL with the same stamp: unpacked into DIR.new, then renamed to DIR;
#     * else debootstrap --variant=minbase into DIR.new (its output in BOOTSTRAP_LOG, the
#       last 30 lines printed if it fails), the downloaded .debs removed, the tree packed
#       into TARBALL (so a lost or damaged root is unpacked, not downloaded, next time),
#       then renamed to DIR.
#
# rootfs_mounts DIR
#   Prints the mount points at or under DIR in this mount namespace, one a line (nothing
#   when there are none).

rootfs_mounts() {
    local dir="$1" dev mnt rest
    while read -r dev mnt rest; do
        case "$mnt" in "$dir" | "$dir"/*) echo "$mnt" ;; esac
    done </proc/self/mounts
}

rootfs_ensure() {
    local dir="$1" tarball="$2" bootstrap_log="$3" fresh="$4" suite="$5" mirror="$6"
    shift 6
    local packages=("$@") stamp include t
    stamp="$suite $mirror minbase ${packages[*]}"

    if [ -n "$(rootfs_mounts "$dir")" ]; then
        die "something is mounted under $dir; unmount it first"
    fi
    if [ "$fresh" = 1 ]; then
        rm -rf "$dir" "$tarball" "$tarball.stamp"
    fi
    if [ -s "$dir/.rstunnel-root" ] && [ "$(cat "$dir/.rstunnel-root")" = "$stamp" ]; then
        log "reusing ${dir#"$ROOT"/}"
        return 0
    fi
    rm -rf "$dir" "$dir.new"
    if [ -s "$tarball" ] && [ "$(cat "$tarball.stamp" 2>/dev/null)" = "$stamp" ]; then
        log "unpacking ${tarball#"$ROOT"/}"
        mkdir -p "$dir.new"
        tar -C "$dir.new" -xzf "$tarball"
    else
        log "debootstrap $suite (minbase + ${#packages[@]} packages: ${packages[*]}) from $mirror"
        t=$(now)
        include=$(IFS=,; echo "${packages[*]}")
        debootstrap --variant=minbase --include="$include" "$suite" "$dir.new" "$mirror" \
            >"$bootstrap_log" 2>&1 \
            || { tail -n 30 "$bootstrap_log" >&2; die "debootstrap failed (log: ${bootstrap_log#"$ROOT"/})"; }
        rm -rf "$dir.new/var/cache/apt/archives/"*.deb
        log "bootstrapped ($(($(now) - t)) s); caching it as ${tarball#"$ROOT"/}"
        tar -C "$dir.new" --one-file-system -czf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        echo "$stamp" >"$tarball.stamp"
    fi
    echo "$stamp" >"$dir.new/.rstunnel-root"
    mv "$dir.new" "$dir"
}
