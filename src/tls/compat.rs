//! Everything that differs between OpenSSL versions, in one place (STYLE.md practice 9):
//! option bits by stunnel's names, how an EOF without close_notify is reported, the FFI
//! calls the `openssl` crate does not wrap. The rest of the code calls plain functions.

use foreign_types::ForeignTypeRef;
use openssl::ssl::{ErrorCode, SslOptions};
use openssl_sys as ffi;

/// OpenSSL option names as `options =` accepts them (stunnel lists them with `-options`),
/// with their bits in the linked OpenSSL. Obsolete names that OpenSSL keeps as 0 are
/// accepted and do nothing, as in stunnel.
#[allow(clippy::unnecessary_cast)] // the constants' type differs between OpenSSL versions
pub const SSL_OPTION_NAMES: &[(&str, u64)] = &[
    ("ALL", ffi::SSL_OP_ALL as u64),
    ("ALLOW_CLIENT_RENEGOTIATION", 0x0000_0100),
    ("ALLOW_NO_DHE_KEX", 0x0000_0400),
    (
        "ALLOW_UNSAFE_LEGACY_RENEGOTIATION",
        ffi::SSL_OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION as u64,
    ),
    (
        "CIPHER_SERVER_PREFERENCE",
        ffi::SSL_OP_CIPHER_SERVER_PREFERENCE as u64,
    ),
    ("CISCO_ANYCONNECT", ffi::SSL_OP_CISCO_ANYCONNECT as u64),
    ("CLEANSE_PLAINTEXT", 0x0000_0002),
    ("COOKIE_EXCHANGE", ffi::SSL_OP_COOKIE_EXCHANGE as u64),
    (
        "CRYPTOPRO_TLSEXT_BUG",
        ffi::SSL_OP_CRYPTOPRO_TLSEXT_BUG as u64,
    ),
    ("DISABLE_TLSEXT_CA_NAMES", 0x0000_0200),
    (
        "DONT_INSERT_EMPTY_FRAGMENTS",
        ffi::SSL_OP_DONT_INSERT_EMPTY_FRAGMENTS as u64,
    ),
    ("ENABLE_KTLS", 0x0000_0008),
    (
        "ENABLE_MIDDLEBOX_COMPAT",
        ffi::SSL_OP_ENABLE_MIDDLEBOX_COMPAT as u64,
    ),
    ("EPHEMERAL_RSA", 0),
    (
        "IGNORE_UNEXPECTED_EOF",
        ffi::SSL_OP_IGNORE_UNEXPECTED_EOF as u64,
    ),
    (
        "LEGACY_SERVER_CONNECT",
        ffi::SSL_OP_LEGACY_SERVER_CONNECT as u64,
    ),
    (
        "MICROSOFT_BIG_SSLV3_BUFFER",
        ffi::SSL_OP_MICROSOFT_BIG_SSLV3_BUFFER as u64,
    ),
    (
        "MICROSOFT_SESS_ID_BUG",
        ffi::SSL_OP_MICROSOFT_SESS_ID_BUG as u64,
    ),
    ("MSIE_SSLV2_RSA_PADDING", 0),
    ("NETSCAPE_CA_DN_BUG", 0),
    (
        "NETSCAPE_CHALLENGE_BUG",
        ffi::SSL_OP_NETSCAPE_CHALLENGE_BUG as u64,
    ),
    ("NETSCAPE_DEMO_CIPHER_CHANGE_BUG", 0),
    (
        "NETSCAPE_REUSE_CIPHER_CHANGE_BUG",
        ffi::SSL_OP_NETSCAPE_REUSE_CIPHER_CHANGE_BUG as u64,
    ),
    ("NO_ANTI_REPLAY", 0x0100_0000),
    ("NO_COMPRESSION", ffi::SSL_OP_NO_COMPRESSION as u64),
    (
        "NO_DTLS_MASK",
        (ffi::SSL_OP_NO_DTLSv1 | ffi::SSL_OP_NO_DTLSv1_2) as u64,
    ),
    ("NO_DTLSv1", ffi::SSL_OP_NO_DTLSv1 as u64),
    ("NO_DTLSv1_2", ffi::SSL_OP_NO_DTLSv1_2 as u64),
    ("NO_ENCRYPT_THEN_MAC", 0x0008_0000),
    ("NO_EXTENDED_MASTER_SECRET", 0x0000_0001),
    ("NO_QUERY_MTU", ffi::SSL_OP_NO_QUERY_MTU as u64),
    ("NO_RENEGOTIATION", ffi::SSL_OP_NO_RENEGOTIATION as u64),
    (
        "NO_SESSION_RESUMPTION_ON_RENEGOTIATION",
        ffi::SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION as u64,
    ),
    ("NO_SSL_MASK", ffi::SSL_OP_NO_SSL_MASK as u64),
    ("NO_SSLv2", ffi::SSL_OP_NO_SSLv2 as u64),
    ("NO_SSLv3", ffi::SSL_OP_NO_SSLv3 as u64),
    ("NO_TICKET", ffi::SSL_OP_NO_TICKET as u64),
    ("NO_TLSv1", ffi::SSL_OP_NO_TLSv1 as u64),
    ("NO_TLSv1_1", ffi::SSL_OP_NO_TLSv1_1 as u64),
    ("NO_TLSv1_2", ffi::SSL_OP_NO_TLSv1_2 as u64),
    ("NO_TLSv1_3", ffi::SSL_OP_NO_TLSv1_3 as u64),
    ("PKCS1_CHECK_1", 0),
    ("PKCS1_CHECK_2", 0),
    ("PRIORITIZE_CHACHA", ffi::SSL_OP_PRIORITIZE_CHACHA as u64),
    (
        "SAFARI_ECDHE_ECDSA_BUG",
        ffi::SSL_OP_SAFARI_ECDHE_ECDSA_BUG as u64,
    ),
    ("SINGLE_DH_USE", ffi::SSL_OP_SINGLE_DH_USE as u64),
    ("SINGLE_ECDH_USE", ffi::SSL_OP_SINGLE_ECDH_USE as u64),
    (
        "SSLEAY_080_CLIENT_DH_BUG",
        ffi::SSL_OP_SSLEAY_080_CLIENT_DH_BUG as u64,
    ),
    ("SSLREF2_REUSE_CERT_TYPE_BUG", 0),
    (
        "TLS_BLOCK_PADDING_BUG",
        ffi::SSL_OP_TLS_BLOCK_PADDING_BUG as u64,
    ),
    ("TLS_D5_BUG", ffi::SSL_OP_TLS_D5_BUG as u64),
    ("TLSEXT_PADDING", ffi::SSL_OP_TLSEXT_PADDING as u64),
    ("TLS_ROLLBACK_BUG", ffi::SSL_OP_TLS_ROLLBACK_BUG as u64),
];

/// The canonical spelling of an `options` name (case-insensitive), if OpenSSL has it.
pub fn ssl_option_name(name: &str) -> Option<&'static str> {
    SSL_OPTION_NAMES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|&(known, _)| known)
}

/// The bits of a canonical option name.
pub fn ssl_option_bits(name: &str) -> SslOptions {
    let bits = SSL_OPTION_NAMES
        .iter()
        .find(|(known, _)| *known == name)
        .map_or(0, |&(_, bits)| bits);
    SslOptions::from_bits_retain(bits as _)
}

/// What an `ssl_read` error means for the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// The peer sent close_notify.
    CloseNotify,
    /// The TCP stream ended without close_notify. OpenSSL 1.1.1 reports this as
    /// SSL_ERROR_SYSCALL with no errno, 3.x as SSL_ERROR_SSL "unexpected eof while
    /// reading" (SSL_R_UNEXPECTED_EOF_WHILE_READING); both are the same event.
    Truncated,
    /// Anything else: a protocol or socket error.
    Failed,
}

/// Classifies a failed `ssl_read` that was not WANT_READ/WANT_WRITE.
pub fn classify_read_end(error: &openssl::ssl::Error) -> ReadEnd {
    match error.code() {
        ErrorCode::ZERO_RETURN => ReadEnd::CloseNotify,
        ErrorCode::SYSCALL if error.io_error().is_none() => ReadEnd::Truncated,
        ErrorCode::SSL if is_unexpected_eof(error) => ReadEnd::Truncated,
        _ => ReadEnd::Failed,
    }
}

/// OpenSSL 3's reason code for an EOF without close_notify (ssl/sslerr.h).
const SSL_R_UNEXPECTED_EOF_WHILE_READING: libc::c_int = 294;

fn is_unexpected_eof(error: &openssl::ssl::Error) -> bool {
    error.ssl_error().is_some_and(|stack| {
        stack
            .errors()
            .iter()
            .any(|e| e.reason_code() == SSL_R_UNEXPECTED_EOF_WHILE_READING)
    })
}

/// Options rstunnel always sets: no renegotiation (DESIGN.md relay rule 7), no SSLv2/3 as
/// stunnel's default set.
pub fn baseline_options() -> SslOptions {
    SslOptions::NO_RENEGOTIATION | SslOptions::NO_SSLV2 | SslOptions::NO_SSLV3
}

/// Runtime OpenSSL version text, for `-version`.
pub fn running_version() -> &'static str {
    openssl::version::version()
}

/// The OpenSSL version the crate was built against.
pub fn built_version() -> String {
    let n = u64::from_str_radix(env!("RSTUNNEL_OPENSSL_VERSION_NUMBER"), 16).unwrap_or(0);
    format!(
        "OpenSSL {}.{}.{}",
        (n >> 28) & 0xf,
        (n >> 20) & 0xff,
        (n >> 12) & 0xff
    )
}

extern "C" {
    // Present as a function in OpenSSL 1.0.2 through 3.x; openssl-sys does not bind it.
    fn SSL_CTX_set_timeout(ctx: *mut ffi::SSL_CTX, seconds: libc::c_long) -> libc::c_long;
    // OpenSSL 1.1.0 and later; openssl-sys does not bind it.
    fn SSL_has_pending(ssl: *const ffi::SSL) -> libc::c_int;
}

/// How long a cached session may be resumed (`sessionCacheTimeout`).
pub fn set_session_timeout(
    ctx: &mut openssl::ssl::SslContextBuilder,
    timeout: std::time::Duration,
) {
    let secs = libc::c_long::try_from(timeout.as_secs()).unwrap_or(libc::c_long::MAX);
    // SAFETY: the builder owns a valid SSL_CTX for the duration of the call.
    unsafe { SSL_CTX_set_timeout(ctx.as_ptr(), secs) };
}

/// Whether OpenSSL holds received bytes (decrypted or not) that `poll` cannot see.
/// `SSL_has_pending` exists since OpenSSL 1.1.0.
pub fn has_pending(ssl: &openssl::ssl::SslRef) -> bool {
    // SAFETY: a valid SSL pointer for the duration of the call.
    unsafe { SSL_has_pending(ssl.as_ptr()) == 1 }
}

/// Whether a handshake (or a post-handshake exchange) is in progress on `ssl`.
pub fn in_handshake(ssl: &openssl::ssl::SslRef) -> bool {
    // SAFETY: a valid SSL pointer for the duration of the call.
    unsafe { ffi::SSL_is_init_finished(ssl.as_ptr()) == 0 }
}
