//! The names stunnel.conf gives OpenSSL's own settings, and what they are in the linked
//! library: `options =` (SSL_OP_* names with their bits, and the names only newer versions
//! have), `OCSPflag =` (OCSP_* verification flags), whether the ENGINE options can exist
//! at all, and the library's version as text.
//!
//! A leaf: imports nothing from the crate, so `config` checks these names while parsing
//! without depending on `tls`, and `tls` (`compat`, `context`, `ocsp`) turns them into bits.
//! Besides `tls/compat.rs`, the one file with `#[cfg]`s on the OpenSSL version (set by
//! build.rs; see that file's header): the option table differs between versions. Makes no
//! OpenSSL call but the version query.

use libc::c_ulong;
use openssl::ocsp::OcspFlag;
use openssl::ssl::SslOptions;
use openssl_sys as ffi;

/// OpenSSL option names as `options =` accepts them (stunnel lists them with `-options`),
/// with their bits in the linked OpenSSL. Obsolete names that OpenSSL keeps as 0 are
/// accepted and do nothing, as in stunnel. Names the linked OpenSSL does not have are left
/// out (as stunnel compiles them out) and listed in `SSL_OPTIONS_NEWER` instead; the raw
/// bits are those of `ssl.h` where openssl-sys only binds the constant for newer versions.
#[allow(clippy::unnecessary_cast)] // the constants' type differs between OpenSSL versions
pub const SSL_OPTION_NAMES: &[(&str, u64)] = &[
    ("ALL", ffi::SSL_OP_ALL as u64),
    #[cfg(ossl300)]
    ("ALLOW_CLIENT_RENEGOTIATION", 0x0000_0100),
    #[cfg(ossl111)]
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
    #[cfg(ossl300)]
    ("CLEANSE_PLAINTEXT", 0x0000_0002),
    ("COOKIE_EXCHANGE", ffi::SSL_OP_COOKIE_EXCHANGE as u64),
    (
        "CRYPTOPRO_TLSEXT_BUG",
        ffi::SSL_OP_CRYPTOPRO_TLSEXT_BUG as u64,
    ),
    #[cfg(ossl300)]
    ("DISABLE_TLSEXT_CA_NAMES", 0x0000_0200),
    (
        "DONT_INSERT_EMPTY_FRAGMENTS",
        ffi::SSL_OP_DONT_INSERT_EMPTY_FRAGMENTS as u64,
    ),
    #[cfg(ossl300)]
    ("ENABLE_KTLS", 0x0000_0008),
    #[cfg(ossl111)]
    (
        "ENABLE_MIDDLEBOX_COMPAT",
        ffi::SSL_OP_ENABLE_MIDDLEBOX_COMPAT as u64,
    ),
    ("EPHEMERAL_RSA", 0),
    #[cfg(ossl300)]
    ("IGNORE_UNEXPECTED_EOF", 0x0000_0080),
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
    #[cfg(ossl111)]
    ("NO_ANTI_REPLAY", 0x0100_0000),
    ("NO_COMPRESSION", ffi::SSL_OP_NO_COMPRESSION as u64),
    (
        "NO_DTLS_MASK",
        (ffi::SSL_OP_NO_DTLSv1 | ffi::SSL_OP_NO_DTLSv1_2) as u64,
    ),
    ("NO_DTLSv1", ffi::SSL_OP_NO_DTLSv1 as u64),
    ("NO_DTLSv1_2", ffi::SSL_OP_NO_DTLSv1_2 as u64),
    #[cfg(ossl111)]
    ("NO_ENCRYPT_THEN_MAC", 0x0008_0000),
    #[cfg(ossl300)]
    ("NO_EXTENDED_MASTER_SECRET", 0x0000_0001),
    ("NO_QUERY_MTU", ffi::SSL_OP_NO_QUERY_MTU as u64),
    #[cfg(ossl110h)]
    ("NO_RENEGOTIATION", ffi::SSL_OP_NO_RENEGOTIATION as u64),
    (
        "NO_SESSION_RESUMPTION_ON_RENEGOTIATION",
        ffi::SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION as u64,
    ),
    #[cfg(ossl110)]
    ("NO_SSL_MASK", ffi::SSL_OP_NO_SSL_MASK as u64),
    ("NO_SSLv2", ffi::SSL_OP_NO_SSLv2 as u64),
    ("NO_SSLv3", ffi::SSL_OP_NO_SSLv3 as u64),
    ("NO_TICKET", ffi::SSL_OP_NO_TICKET as u64),
    ("NO_TLSv1", ffi::SSL_OP_NO_TLSv1 as u64),
    ("NO_TLSv1_1", ffi::SSL_OP_NO_TLSv1_1 as u64),
    ("NO_TLSv1_2", ffi::SSL_OP_NO_TLSv1_2 as u64),
    #[cfg(any(ossl111, libressl))]
    ("NO_TLSv1_3", ffi::SSL_OP_NO_TLSv1_3 as u64),
    ("PKCS1_CHECK_1", 0),
    ("PKCS1_CHECK_2", 0),
    #[cfg(ossl111)]
    ("PRIORITIZE_CHACHA", ffi::SSL_OP_PRIORITIZE_CHACHA as u64),
    #[cfg(ossl110)]
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

/// Option names of newer OpenSSL versions that the linked one does not have, with the
/// version that brought them (from `ssl.h` of 1.1.1 and 3.0).
pub const SSL_OPTIONS_NEWER: &[(&str, &str)] = &[
    #[cfg(not(ossl300))]
    ("ALLOW_CLIENT_RENEGOTIATION", "OpenSSL 3.0"),
    #[cfg(not(ossl111))]
    ("ALLOW_NO_DHE_KEX", "OpenSSL 1.1.1"),
    #[cfg(not(ossl300))]
    ("CLEANSE_PLAINTEXT", "OpenSSL 3.0"),
    #[cfg(not(ossl300))]
    ("DISABLE_TLSEXT_CA_NAMES", "OpenSSL 3.0"),
    #[cfg(not(ossl300))]
    ("ENABLE_KTLS", "OpenSSL 3.0"),
    #[cfg(not(ossl111))]
    ("ENABLE_MIDDLEBOX_COMPAT", "OpenSSL 1.1.1"),
    #[cfg(not(ossl300))]
    ("IGNORE_UNEXPECTED_EOF", "OpenSSL 3.0"),
    #[cfg(not(ossl111))]
    ("NO_ANTI_REPLAY", "OpenSSL 1.1.1"),
    #[cfg(not(ossl111))]
    ("NO_ENCRYPT_THEN_MAC", "OpenSSL 1.1.1"),
    #[cfg(not(ossl300))]
    ("NO_EXTENDED_MASTER_SECRET", "OpenSSL 3.0"),
    #[cfg(not(ossl110h))]
    ("NO_RENEGOTIATION", "OpenSSL 1.1.0h"),
    #[cfg(not(ossl110))]
    ("NO_SSL_MASK", "OpenSSL 1.1.0"),
    #[cfg(not(any(ossl111, libressl)))]
    ("NO_TLSv1_3", "OpenSSL 1.1.1"),
    #[cfg(not(ossl111))]
    ("PRIORITIZE_CHACHA", "OpenSSL 1.1.1"),
    #[cfg(not(ossl110))]
    ("SAFARI_ECDHE_ECDSA_BUG", "OpenSSL 1.1.0"),
];

/// The canonical spelling of an `options` name (case-insensitive), if OpenSSL has it.
pub fn ssl_option_name(name: &str) -> Option<&'static str> {
    SSL_OPTION_NAMES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|&(known, _)| known)
}

/// `options = NAME`: the canonical name, or why it cannot be used: unknown ("Illegal TLS
/// option", stunnel's words), or only in a newer OpenSSL than the linked one (named, with
/// the version that has it, so an old distribution's user knows it is not a typo).
pub fn ssl_option(name: &str) -> Result<&'static str, String> {
    if let Some(known) = ssl_option_name(name) {
        return Ok(known);
    }
    match SSL_OPTIONS_NEWER
        .iter()
        .find(|(newer, _)| newer.eq_ignore_ascii_case(name))
    {
        Some((newer, since)) => Err(format!(
            "TLS option {newer} needs {since} or later; rstunnel is linked with {}",
            running_version()
        )),
        None => Err("Illegal TLS option".to_string()),
    }
}

/// The bits of a canonical option name.
pub fn ssl_option_bits(name: &str) -> SslOptions {
    let bits = SSL_OPTION_NAMES
        .iter()
        .find(|(known, _)| *known == name)
        .map_or(0, |&(_, bits)| bits);
    SslOptions::from_bits_retain(bits as _)
}

/// `OCSPflag` names: OpenSSL's `OCSP_*` verification flags without the prefix.
const OCSP_FLAGS: &[(&str, c_ulong)] = &[
    ("NOCERTS", ffi::OCSP_NOCERTS),
    ("NOINTERN", ffi::OCSP_NOINTERN),
    ("NOSIGS", ffi::OCSP_NOSIGS),
    ("NOCHAIN", ffi::OCSP_NOCHAIN),
    ("NOVERIFY", ffi::OCSP_NOVERIFY),
    ("NOEXPLICIT", ffi::OCSP_NOEXPLICIT),
    ("NOCASIGN", ffi::OCSP_NOCASIGN),
    ("NODELEGATED", ffi::OCSP_NODELEGATED),
    ("NOCHECKS", ffi::OCSP_NOCHECKS),
    ("TRUSTOTHER", ffi::OCSP_TRUSTOTHER),
    ("RESPID_KEY", ffi::OCSP_RESPID_KEY),
    ("NOTIME", ffi::OCSP_NOTIME),
];

/// The canonical spelling of an `OCSPflag` name (case-insensitive), or `None`.
pub fn ocsp_flag_name(name: &str) -> Option<&'static str> {
    OCSP_FLAGS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(n, _)| n)
}

/// The OCSP verification flags of canonical `OCSPflag` names.
pub fn ocsp_flag_bits(names: &[&str]) -> OcspFlag {
    let bits = names
        .iter()
        .filter_map(|name| OCSP_FLAGS.iter().find(|(n, _)| n == name))
        .fold(0, |acc, &(_, bit)| acc | bit);
    OcspFlag::from_bits_retain(bits)
}

/// Why the linked OpenSSL cannot take the ENGINE options (`engine`, `engineCtrl`,
/// `engineDefault`, `engineId`, `engineNum`, `CAengine`) at all, whatever rstunnel
/// builds; `None` where it has the ENGINE API. OpenSSL 4.0 removed ENGINE (deprecated
/// since 3.0 in favour of providers): no `ENGINE_*` function is left, `openssl/engine.h`
/// keeps only no-op stubs for source compatibility.
/// Here and not in `tls/compat.rs` because `config` refuses these lines while parsing.
pub const ENGINE_MISSING: Option<&str> = if cfg!(ossl400) {
    Some("OpenSSL 4.0 has no ENGINE API")
} else {
    None
};

/// Runtime OpenSSL version text, for `-version`.
pub fn running_version() -> &'static str {
    openssl::version::version()
}

/// The OpenSSL version the crate was built against (the headers' OPENSSL_VERSION_NUMBER,
/// passed on by build.rs), as "OpenSSL 1.1.1w" or "OpenSSL 3.0.19".
pub fn built_version() -> String {
    let number = |text: &str| u64::from_str_radix(text, 16).unwrap_or(0);
    let libressl = number(env!("RSTUNNEL_LIBRESSL_VERSION_NUMBER"));
    if libressl != 0 {
        return format!("LibreSSL {}", version_text(libressl, false));
    }
    format!(
        "OpenSSL {}",
        version_text(number(env!("RSTUNNEL_OPENSSL_VERSION_NUMBER")), true)
    )
}

/// OPENSSL_VERSION_NUMBER as text. From 3.0 on it is 0xMNN00PP0 (major, minor, patch);
/// before, and in LibreSSL, 0xMNNFFPPS (major, minor, fix, then the patch letter that
/// OpenSSL 1.x appends: 1 is "a").
fn version_text(n: u64, openssl: bool) -> String {
    let (major, minor) = (n >> 28, (n >> 20) & 0xff);
    if openssl && major >= 3 {
        return format!("{major}.{minor}.{}", (n >> 4) & 0xff);
    }
    let fix = (n >> 12) & 0xff;
    let letter = (n >> 4) & 0xff;
    match u8::try_from(letter) {
        Ok(l @ 1..=26) if openssl => format!("{major}.{minor}.{fix}{}", char::from(b'a' + l - 1)),
        _ => format!("{major}.{minor}.{fix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_as_text() {
        assert_eq!(version_text(0x1010_117f, true), "1.1.1w");
        assert_eq!(version_text(0x1010_009f, true), "1.1.0i");
        assert_eq!(version_text(0x1010_1000, true), "1.1.1");
        assert_eq!(version_text(0x3000_0130, true), "3.0.19");
        assert_eq!(version_text(0x3050_0010, true), "3.5.1");
        assert_eq!(version_text(0x3080_200f, false), "3.8.2");
    }

    #[test]
    fn built_version_is_the_running_major_and_minor() {
        // The same library at build and run time (a distribution's libssl1.1 and libssl3
        // have different sonames), so major.minor always agree.
        let built = built_version();
        let major_minor = built.rsplit_once('.').map_or(built.as_str(), |(mm, _)| mm);
        assert!(
            running_version().starts_with(&format!("{major_minor}.")),
            "built {built}, running {}",
            running_version()
        );
    }

    #[test]
    fn option_tables_are_disjoint_and_unique() {
        let mut names: Vec<&str> = SSL_OPTION_NAMES.iter().map(|(n, _)| *n).collect();
        names.extend(SSL_OPTIONS_NEWER.iter().map(|(n, _)| *n));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a name is listed twice");
    }

    #[test]
    fn option_lookup() {
        assert_eq!(ssl_option("no_tlsv1"), Ok("NO_TLSv1"));
        assert_eq!(ssl_option("NO_TLSv1.1"), Err("Illegal TLS option".into()));
        #[cfg(ossl300)]
        assert_eq!(ssl_option("enable_ktls"), Ok("ENABLE_KTLS"));
        #[cfg(not(ossl300))]
        {
            let e = ssl_option("enable_ktls").unwrap_err();
            assert!(
                e.contains("ENABLE_KTLS") && e.contains("OpenSSL 3.0"),
                "{e}"
            );
            assert!(e.contains(running_version()), "{e}");
        }
        #[cfg(ossl111)]
        assert_eq!(ssl_option("NO_TLSv1_3"), Ok("NO_TLSv1_3"));
    }

    #[test]
    fn flags_by_name() {
        assert_eq!(ocsp_flag_name("nochain"), Some("NOCHAIN"));
        assert_eq!(ocsp_flag_name("RESPID_KEY"), Some("RESPID_KEY"));
        assert_eq!(ocsp_flag_name("OCSP_NOCHAIN"), None);
        assert_eq!(
            ocsp_flag_bits(&["NOVERIFY", "TRUSTOTHER"]),
            OcspFlag::NO_VERIFY | OcspFlag::TRUST_OTHER
        );
        assert_eq!(ocsp_flag_bits(&[]), OcspFlag::empty());
        assert_eq!(ocsp_flag_bits(&["NOSIGS"]).bits(), ffi::OCSP_NOSIGS);
    }
}
