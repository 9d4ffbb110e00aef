#!/usr/bin/env bash
# deps.sh - make sure the Debian packages that the build, the tests, the demo and
# the benchmark need are installed, and that the Rust toolchain has clippy and
# rustfmt (.ci/run's lint steps).
#
# Idempotent: each package is checked with `dpkg -s`; only missing ones are
# installed, with a single `apt-get update` first. Nothing is started: if the
# rsyslog package's maintainer scripts start the system daemon, that is the
# package's business; no test in this repository talks to it (they all run
# private rsyslogd instances with their own config, pid file and ports).
#
# Usage: scripts/deps.sh [--check]
#   --check   only report what is missing; exit 1 if anything is.
set -euo pipefail

# What is installed, and why. Libraries and packages whose commands are listed in
# COMMANDS below.
PACKAGES=(
    libssl-dev         # openssl-sys links against it
    pkg-config         # openssl-sys finds libssl with it
    gcc                # cc: links the crates, builds OpenSSL 1.1.1 and 4.0 (test-openssl.sh)
    g++                # libfuzzer-sys compiles libFuzzer (scripts/fuzz.sh, make test-faults)
    make               # the Makefile; the OpenSSL builds of test-openssl.sh
    binutils           # objdump: the .deb's Depends (make deb)
    git                # the commit in target/faults-summary.md (test-faults.sh)
    openssl            # certificates for tests, make-cert.sh, bench.sh; s_client/s_server interop
    stunnel4           # interop tests and the benchmark baseline
    gnutls-bin         # gnutls-cli/gnutls-serv: GnuTLS as a peer (tests/gnutls_interop.rs)
    rsyslog            # demo.sh and e2e-syslog.sh syslog endpoints, fault tests
    rsyslog-relp       # omrelp/imrelp: test-outages.sh measures the RELP chain
    rsyslog-gnutls     # StreamDriver "gtls": rsyslog's own TLS in tests/mixed_fleet_rsyslog.rs
    rsyslog-openssl    # StreamDriver "ossl": the same with OpenSSL
    libivykis0         # syslog-ng-core's libraries (it is unpacked, see UNPACKED below) ...
    libnet1            #
    libpcre3           #
    libglib2.0-0       #
    libjson-c5         #
    libwrap0           # ... the rest of its Depends is in every Debian 12 with systemd
    tcpdump            # e2e-syslog.sh and the fault tests prove the wire is encrypted
    iproute2           # ip netns / veth (e2e-syslog.sh, tests), ss (port checks)
    iptables           # REDIRECT / socket-mark rules in the transparent-proxy tests (tests/transport_transparent.rs)
    procps             # sysctl (bench.sh)
    mawk               # awk (not Essential: only "required", so absent from minimal roots)
    mount              # mount/umount (test-debian11.sh, the tests' private mount namespaces)
    python3            # fallback syslog sink in demo.sh, e2e-syslog.sh helpers, check-deps.py
    rpm                # rpmbuild for `make rpm` (test-install.sh)
    groff-base         # renders the man page (test-install.sh)
    man-db             # manpath for systemd-analyze verify's man page lookup (test-install.sh)
    systemd            # systemd-analyze verify of the units (test-install.sh)
    systemd-container  # systemd-nspawn: boots the .deb under a real systemd (make test-systemd)
    logrotate          # the logrotate file, run for real (test-install.sh)
    debootstrap        # the Debian 11 and 13 chroots, the minimal Debian 12 root (test-debian11/13.sh, test-systemd)
    gnuplot-nox        # the ratio chart of scripts/bench.sh
    curl               # GETs on the status endpoint (tests/status_*.rs, bench.sh's scraper)
    prometheus         # promtool check metrics (tests/status_metrics.rs), a real Prometheus (tests/status_prometheus.rs)
    apt                # apt-get: this script, bench.sh, test-install.sh, lib/chroot-test.sh
)

# Every external command that scripts/*.sh, .ci/run, the Makefile and tests/ run, and the
# package that provides it ("(rustup)": the Rust toolchain, see below). Commands of
# Debian's Essential packages (coreutils, util-linux, dpkg, ...) are not listed.
# scripts/check-deps.py (run by `make test`) finds the commands in those files and fails
# if one is neither here nor Essential, or if a row's package is not in PACKAGES.
COMMANDS=(
    "apt-get          apt"
    "apt-cache        apt"
    "curl             curl"
    "awk              mawk"
    "cc               gcc"
    "gcc              gcc"
    "c++              g++"
    "make             make"
    "objdump          binutils"
    "git              git"
    "openssl          openssl"
    "stunnel4         stunnel4"
    "gnutls-cli       gnutls-bin"
    "gnutls-serv      gnutls-bin"
    "rsyslogd         rsyslog"
    "syslog-ng        syslog-ng-core"
    "tcpdump          tcpdump"
    "ip               iproute2"
    "ss               iproute2"
    "iptables         iptables"
    "sysctl           procps"
    "mount            mount"
    "umount           mount"
    "python3          python3"
    "rpm              rpm"
    "rpmbuild         rpm"
    "groff            groff-base"
    "manpath          man-db"
    "systemd-analyze  systemd"
    "systemd-nspawn   systemd-container"
    "logrotate        logrotate"
    "debootstrap      debootstrap"
    "gnuplot          gnuplot-nox"
    "promtool         prometheus"
    "prometheus       prometheus"
    "cargo            (rustup)"
    "rustc            (rustup)"
    "rustup           (rustup)"
)

# Packages that cannot be installed next to PACKAGES, unpacked instead (dpkg-deb -x) into
# $UNPACK_ROOT/<package>/: no maintainer scripts, nothing on PATH, nothing started, dpkg
# does not know them. syslog-ng-core Conflicts with rsyslog (both Provide
# system-log-daemon), so `apt-get install syslog-ng-core` would remove rsyslog, which the
# whole suite needs. The tests run the unpacked binary with LD_LIBRARY_PATH and
# --module-path pointing into the tree (tests/common/tools.rs, syslog_ng); its library
# dependencies are ordinary packages in PACKAGES. Under /usr/local/lib rather than
# target/: it outlives `cargo clean` and serves every checkout, as the packages do.
# Each row: package, then its program (relative to the tree) that must run `--version`
# with the tree's libraries; the row's COMMANDS entries name the package.
# scripts/check-deps.py reads UNPACK_ROOT and this table.
UNPACK_ROOT=/usr/local/lib/rstunnel-test
UNPACKED=(
    "syslog-ng-core  usr/sbin/syslog-ng"   # tests/mixed_fleet_syslog_ng.rs
)

# The Rust toolchain is not a Debian package here (Debian 12's cargo is older than
# Cargo.toml's rust-version): it comes from rustup, with the clippy and rustfmt
# components that .ci/run's lint steps use.
RUST_COMPONENTS=(clippy rustfmt)

check_only=0
case "${1:-}" in
    --check) check_only=1 ;;
    "") ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "deps.sh: unknown argument: $1" >&2; exit 2 ;;
esac

if ! command -v dpkg >/dev/null 2>&1; then
    echo "deps.sh: dpkg not found; this script supports Debian and derivatives only." >&2
    echo "deps.sh: install by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

# --- Debian packages -------------------------------------------------------------------
installed_ok() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

missing=()
for p in "${PACKAGES[@]}"; do
    # dpkg -s succeeds for removed-but-not-purged packages too; check the status.
    installed_ok "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps.sh: all ${#PACKAGES[@]} packages present"
elif [ "$check_only" -eq 1 ]; then
    echo "deps.sh: missing: ${missing[*]}"
    exit 1
elif [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing: ${missing[*]}"
    echo "deps.sh: not root; cannot install. Run as root, or:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
else
    echo "deps.sh: missing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive

    # Keep the packages' maintainer scripts from starting system services
    # (rsyslog would otherwise take over /dev/log): the standard Debian
    # policy-rc.d hook, exit 101 = "action forbidden". Only when no policy is in
    # place already, and removed again whatever happens.
    POLICY=/usr/sbin/policy-rc.d
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\n# temporary, from rstunnel scripts/deps.sh\nexit 101\n' >"$POLICY"
        chmod 0755 "$POLICY"
        trap 'rm -f "$POLICY"' EXIT
    fi

    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"

    # Verify: a package that apt could not find would otherwise pass silently.
    still=()
    for p in "${missing[@]}"; do
        installed_ok "$p" || still+=("$p")
    done
    if [ "${#still[@]}" -ne 0 ]; then
        echo "deps.sh: still missing after install: ${still[*]}" >&2
        exit 1
    fi
    echo "deps.sh: installed: ${missing[*]}"
fi

# --- unpacked packages (see UNPACKED) ----------------------------------------------------
# The tree of package P is $UNPACK_ROOT/P; $UNPACK_ROOT/P.version holds the version
# unpacked, so a run is a no-op until Debian ships a new one.
unpacked_lib_path() { echo "$1/usr/lib/syslog-ng"; }   # where the tree's libraries are
for row in "${UNPACKED[@]}"; do
    read -r p prog <<<"$row"
    tree=$UNPACK_ROOT/$p
    have=$(cat "$tree.version" 2>/dev/null || true)
    want=$(apt-cache show --no-all-versions "$p" 2>/dev/null | sed -n 's/^Version: //p' | head -n1)
    if [ -n "$have" ] && { [ -z "$want" ] || [ "$have" = "$want" ]; }; then
        continue
    fi
    if [ "$check_only" -eq 1 ]; then
        echo "deps.sh: $p not unpacked in $tree (have '${have:-none}', want '${want:-?}')"
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps.sh: not root; cannot unpack $p into $tree" >&2
        exit 1
    fi
    if [ -z "$want" ]; then
        apt-get update
        want=$(apt-cache show --no-all-versions "$p" | sed -n 's/^Version: //p' | head -n1)
    fi
    dl=$(mktemp -d)
    chmod 0755 "$dl"   # apt-get download fetches as _apt where it can
    chown _apt "$dl" 2>/dev/null || true
    (cd "$dl" && apt-get download "$p")
    rm -rf "$tree.new"
    mkdir -p "$tree.new"
    dpkg-deb -x "$dl"/"${p}"_*.deb "$tree.new"
    rm -rf "$dl"
    if ! LD_LIBRARY_PATH=$(unpacked_lib_path "$tree.new") "$tree.new/$prog" --version >/dev/null; then
        echo "deps.sh: unpacked $p does not run ($tree.new/$prog --version): a library missing from PACKAGES?" >&2
        exit 1
    fi
    rm -rf "$tree"
    mv "$tree.new" "$tree"
    echo "$want" >"$tree.version"
    echo "deps.sh: unpacked $p $want into $tree"
done

# --- the Rust toolchain and its lint components ----------------------------------------
for c in cargo rustc; do
    if ! command -v "$c" >/dev/null 2>&1; then
        echo "deps.sh: $c not found: install Rust with rustup (https://rustup.rs; Debian 12's" >&2
        echo "  cargo is older than Cargo.toml's rust-version), then run this again" >&2
        exit 1
    fi
done
want=()
if command -v rustup >/dev/null 2>&1; then
    have=$(rustup component list --installed 2>/dev/null || true)
    for c in "${RUST_COMPONENTS[@]}"; do
        grep -q "^$c-" <<<"$have" || want+=("$c")
    done
    if [ "${#want[@]}" -ne 0 ]; then
        if [ "$check_only" -eq 1 ]; then
            echo "deps.sh: missing Rust components: ${want[*]} (rustup component add ${want[*]})"
            exit 1
        fi
        echo "deps.sh: rustup component add ${want[*]}"
        if ! rustup component add "${want[@]}"; then
            echo "deps.sh: rustup could not install ${want[*]} (is static.rust-lang.org reachable?);" >&2
            echo "  .ci/run's cargo fmt / cargo clippy steps need them" >&2
            exit 1
        fi
    fi
fi
# With or without rustup, the subcommands must run.
for sub in clippy fmt; do
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        echo "deps.sh: 'cargo $sub' does not run: install the ${sub/fmt/rustfmt} component" >&2
        echo "  (rustup component add ${sub/fmt/rustfmt}, or your distribution's package)" >&2
        exit 1
    fi
done
echo "deps.sh: $(cargo --version), clippy and rustfmt present"
