#!/usr/bin/env bash
# deps.sh - make sure the Debian packages that the build, the tests, the demo and
# the benchmark need are installed.
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

PACKAGES=(
    libssl-dev     # openssl-sys links against it
    pkg-config     # openssl-sys finds libssl with it
    openssl        # make-cert.sh, bench.sh certificates
    stunnel4       # interop tests and the benchmark baseline
    rsyslog        # demo.sh and e2e-syslog.sh syslog endpoints
    bsdutils       # logger(1)
    tcpdump        # e2e-syslog.sh proves the wire is encrypted
    iproute2       # ip netns / veth for e2e-syslog.sh
    iptables       # REDIRECT / socket-mark rules in the transparent-proxy tests (tests/transport_extras.rs)
    procps         # pgrep/ps for scripts
    python3        # fallback syslog sink in demo.sh
    rpm            # rpmbuild for `make rpm` (test-install.sh)
    groff-base     # renders the man page (test-install.sh)
    systemd        # systemd-analyze verify of the units (test-install.sh)
    g++            # libfuzzer-sys compiles libFuzzer (scripts/fuzz.sh, make test-faults)
    gnuplot-nox    # the ratio chart of scripts/bench.sh
)

check_only=0
case "${1:-}" in
    --check) check_only=1 ;;
    "") ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "deps.sh: unknown argument: $1" >&2; exit 2 ;;
esac

if ! command -v dpkg >/dev/null 2>&1; then
    echo "deps.sh: dpkg not found; this script supports Debian and derivatives only." >&2
    echo "deps.sh: install by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    # dpkg -s succeeds for removed-but-not-purged packages too; check the status.
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        :
    else
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps.sh: all ${#PACKAGES[@]} packages present"
    exit 0
fi

echo "deps.sh: missing: ${missing[*]}"
if [ "$check_only" -eq 1 ]; then
    exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: not root; cannot install. Run as root, or:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

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
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || still+=("$p")
done
if [ "${#still[@]}" -ne 0 ]; then
    echo "deps.sh: still missing after install: ${still[*]}" >&2
    exit 1
fi
echo "deps.sh: installed: ${missing[*]}"
