#!/usr/bin/env bash
# make-cert.sh - the one-command self-signed certificate of the classic
# "syslog over stunnel" setup: private key and certificate in one PEM file
# (`key` defaults to `cert`, so a config needs only `cert = FILE`).
#
# Usage: scripts/make-cert.sh [OUT.pem] [CN]
#   OUT.pem  default: ./stunnel.pem   (written with mode 0600)
#   CN       default: the host name
#
# Equivalent to the article's
#   openssl req -new -x509 -days 3650 -nodes -out stunnel.pem -keyout stunnel.pem
# but non-interactive (-subj) and never world-readable.
set -euo pipefail

case "${1:-}" in
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

out="${1:-stunnel.pem}"
cn="${2:-$(hostname 2>/dev/null || echo localhost)}"
OPENSSL="${OPENSSL:-openssl}"

if ! command -v "$OPENSSL" >/dev/null 2>&1; then
    echo "make-cert.sh: openssl not found (apt-get install openssl)" >&2
    exit 1
fi

dir="$(dirname -- "$out")"
mkdir -p -- "$dir"

# Build in a private temp file next to the target, then rename: the key is
# never readable by others, not even for a moment, and a failed run leaves no
# half-written file behind.
umask 077
tmp="$(mktemp "$dir/.make-cert.XXXXXX")"
trap 'rm -f -- "$tmp"' EXIT

# -keyout and -out name the same file: openssl writes the key first, then
# appends the certificate.
if ! err="$("$OPENSSL" req -new -x509 -days 3650 -nodes \
        -newkey rsa:2048 \
        -subj "/CN=${cn}" \
        -out "$tmp" -keyout "$tmp" 2>&1)"; then
    echo "make-cert.sh: openssl req failed:" >&2
    printf '%s\n' "$err" >&2
    exit 1
fi

chmod 0600 "$tmp"
mv -f -- "$tmp" "$out"
trap - EXIT
echo "make-cert.sh: wrote $out (CN=${cn}, 3650 days, mode 0600)"
