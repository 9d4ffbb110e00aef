//! What differs between OpenSSL versions in how rstunnel uses the library: how an EOF
//! without close_notify is reported, TLS 1.3 (1.1.1+), the FFI calls the `openssl` crate
//! does not wrap. The rest of the code calls plain functions. The one other file with
//! version `#[cfg]`s is `src/openssl_names.rs`: the `options =` names and bits, which
//! `config` checks while parsing and so cannot take from `tls`.
//!
//! The `#[cfg]`s are set by build.rs from the headers openssl-sys found: `ossl110`,
//! `ossl110h`, `ossl111`, `ossl300`, `ossl400` (OpenSSL at or above that version) and
//! `libressl`. Built and tested: OpenSSL 3.0 (Debian 12), 1.1.1 (`make test-openssl111`,
//! `make test-debian11`) and 4.0 (`make test-openssl40`). What 4.0 removed that rstunnel
//! would use is ENGINE, refused while parsing (`openssl_names::ENGINE_MISSING`). 1.1.0 is gated here but not tested; LibreSSL is gated as far
//! as the `openssl` crate's own gates show, and never built. openssl-sys 0.9.118 refuses
//! anything older than 1.1.0.

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::{ErrorCode, SslContextBuilder, SslOptions, SslVersion};
use openssl_sys as ffi;

use crate::config::values::TlsVersion;
use crate::openssl_names::running_version;

/// `sslVersion*`, `ciphersuites`: whether the linked library speaks TLS 1.3.
pub const HAS_TLS13: bool = cfg!(any(ossl111, libressl));

/// stunnel's default `curves`: X448 only exists from OpenSSL 1.1.1 on.
#[cfg(any(ossl111, libressl))]
pub const STUNNEL_CURVES: &str = "X25519:P-256:X448:P-521:P-384";
#[cfg(not(any(ossl111, libressl)))]
pub const STUNNEL_CURVES: &str = "X25519:P-256:P-521:P-384";

/// rstunnel's default `curves` where the running OpenSSL has ML-KEM (3.5 and later): the
/// hybrid post-quantum groups first, then stunnel's list. A session recorded today must
/// stay secret when its key exchange can be broken later ("harvest now, decrypt later");
/// syslog streams are kept for years. In OpenSSL 3.5's list syntax:
///
/// * `*` marks the groups a client sends a key share for: X25519MLKEM768 (1,216 bytes)
///   and X25519 (32 bytes), as OpenSSL 3.5's own default does. A 3.5 server takes the
///   hybrid share; a server without ML-KEM (stunnel's pinned list, any 1.1.1 or 3.0)
///   finds the X25519 share and answers at once. With the hybrid share alone every
///   classical server would cost a HelloRetryRequest, a round trip, per full handshake.
///   Measured with Debian 13's OpenSSL 3.5.9 against `s_server -groups X25519`: this list
///   sends one ClientHello of 1,526 bytes (stunnel's list: 302); `X25519MLKEM768:X25519`
///   sends 1,480, is answered with a retry and sends a second of 296. The discarded
///   hybrid share costs the client one X25519MLKEM768 key generation, 0.07 ms
///   (`openssl speed`), against 0.03 ms for X25519.
/// * `/` ends a tuple, which only matters to a server: it takes the first tuple the
///   client supports, and within a tuple any group the client sent a share for. So a
///   client that supports a hybrid group gets it (with a HelloRetryRequest if it sent no
///   hybrid share), and a classical client's X25519 or P-256 share is taken at once
///   from the second tuple, as stunnel's list (one tuple) takes it.
/// * SecP256r1MLKEM768 is offered (no share, 2 bytes in the ClientHello) for peers that
///   want a NIST curve in the hybrid; SecP384r1MLKEM1024 is not (a 1,665-byte share for
///   no gain over ML-KEM-768 at this security level), as OpenSSL's default leaves it out.
///
/// Whether the library has these groups is found at run time ([`default_curves`]), so a
/// binary built against 3.0 and run with 3.5 prefers them too.
pub const HYBRID_CURVES: &str = "*X25519MLKEM768:SecP256r1MLKEM768/*X25519:P-256:X448:P-521:P-384";

/// The `curves` rstunnel sets when a service has none: [`HYBRID_CURVES`] if the running
/// library takes that list, else [`STUNNEL_CURVES`]. Asked once per process (a throwaway
/// SSL_CTX), then remembered: the library cannot change under a running process.
pub fn default_curves() -> &'static str {
    static CHOSEN: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(|| {
        if accepts_groups_list(HYBRID_CURVES) {
            HYBRID_CURVES
        } else {
            STUNNEL_CURVES
        }
    })
}

/// Whether the running library accepts `groups` as a group list. OpenSSL before 3.5 has
/// neither ML-KEM nor the `*` and `/` syntax and refuses the list; so does a 3.5 whose
/// providers leave ML-KEM out. The refusal's error queue is emptied here.
fn accepts_groups_list(groups: &str) -> bool {
    let Ok(mut builder) = SslContextBuilder::new(openssl::ssl::SslMethod::tls()) else {
        let _ = ErrorStack::get();
        return false;
    };
    set_groups_list(&mut builder, groups).is_ok()
}

/// The group the handshake's key exchange used, as the library names it (the names
/// `curves` takes): OpenSSL 3.x asks SSL_get_negotiated_group and SSL_group_to_name
/// ("X25519MLKEM768", "x25519", "secp256r1"); 1.1.1 has neither and names the peer's
/// ephemeral key instead (SSL_get_peer_tmp_key, 1.1.1+): "X25519", "prime256v1". A
/// resumption without a key exchange of its own (any TLS 1.2 one, TLS 1.3 `psk_ke`) names
/// the original session's group on 3.x (its keys still derive from that exchange) and
/// nothing on 1.1.1 (no ephemeral key this time). `None` for TLS 1.2 RSA key transport
/// and where the library cannot say (1.1.0, LibreSSL).
pub fn negotiated_group(ssl: &openssl::ssl::SslRef) -> Option<String> {
    #[cfg(ossl300)]
    {
        extern "C" {
            fn SSL_group_to_name(ssl: *mut ffi::SSL, id: libc::c_int) -> *const libc::c_char;
        }
        // SSL_get_negotiated_group is a macro over SSL_ctrl (ssl.h, 3.0 and later).
        const SSL_CTRL_GET_NEGOTIATED_GROUP: libc::c_int = 134;
        // SAFETY: a valid SSL pointer for the duration of the calls; the name is a static
        // string of the library (or of a provider loaded for the process) or NULL.
        unsafe {
            let id = ffi::SSL_ctrl(
                ssl.as_ptr(),
                SSL_CTRL_GET_NEGOTIATED_GROUP,
                0,
                std::ptr::null_mut(),
            );
            let id = libc::c_int::try_from(id).ok().filter(|id| *id > 0)?;
            let name = SSL_group_to_name(ssl.as_ptr(), id);
            if name.is_null() {
                // No name (a group no loaded provider describes any more). OpenSSL 3.x
                // queues no error here, but an error left on this thread would make the
                // session's next SSL call look failed (stunnel 5.74 resets its hybrid
                // sessions after such a leftover), so the queue is emptied regardless.
                let _ = ErrorStack::get();
                return None;
            }
            Some(
                std::ffi::CStr::from_ptr(name)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    }
    #[cfg(all(ossl111, not(ossl300)))]
    {
        use foreign_types::ForeignType;
        use openssl::pkey::{Id, PKey, Public};
        // SSL_get_peer_tmp_key is a macro over SSL_ctrl (ssl.h, 1.1.1).
        const SSL_CTRL_GET_PEER_TMP_KEY: libc::c_int = 109;
        let mut key: *mut ffi::EVP_PKEY = std::ptr::null_mut();
        // SAFETY: a valid SSL pointer; on success `key` holds a reference we now own.
        let ok = unsafe {
            ffi::SSL_ctrl(
                ssl.as_ptr(),
                SSL_CTRL_GET_PEER_TMP_KEY,
                0,
                (&mut key as *mut *mut ffi::EVP_PKEY).cast(),
            )
        };
        if ok != 1 || key.is_null() {
            let _ = ErrorStack::get();
            return None;
        }
        // SAFETY: an owned EVP_PKEY reference (freed when `key` drops).
        let key: PKey<Public> = unsafe { PKey::from_ptr(key) };
        match key.id() {
            Id::X25519 => Some("X25519".into()),
            Id::X448 => Some("X448".into()),
            Id::EC => key
                .ec_key()
                .ok()
                .and_then(|ec| ec.group().curve_name())
                .and_then(|nid| nid.short_name().ok())
                .map(str::to_string),
            _ => None,
        }
    }
    #[cfg(not(ossl111))]
    {
        let _ = ssl;
        None
    }
}

/// The protocol version of a `sslVersion*` value; `None` where the linked library does not
/// have it (TLS 1.3 before OpenSSL 1.1.1, SSLv3 from 4.0 on; `version_missing` says why).
pub fn ssl_version(version: TlsVersion) -> Option<SslVersion> {
    match version {
        #[cfg(not(ossl400))]
        TlsVersion::Ssl3 => Some(SslVersion::SSL3),
        // OpenSSL 4.0 removed SSLv3 altogether: SSL_CTX_set_min/max_proto_version refuse
        // SSL3_VERSION as a bound (3.x took it, though its builds have no SSLv3 to offer).
        #[cfg(ossl400)]
        TlsVersion::Ssl3 => None,
        TlsVersion::Tls1 => Some(SslVersion::TLS1),
        TlsVersion::Tls1_1 => Some(SslVersion::TLS1_1),
        TlsVersion::Tls1_2 => Some(SslVersion::TLS1_2),
        #[cfg(any(ossl111, libressl))]
        TlsVersion::Tls1_3 => Some(SslVersion::TLS1_3),
        #[cfg(not(any(ossl111, libressl)))]
        TlsVersion::Tls1_3 => None,
    }
}

/// The TLS 1.3 suites (`ciphersuites`). Without TLS 1.3 in the library there is nothing to
/// set; the caller refuses an explicit `ciphersuites` first (`HAS_TLS13`).
pub fn set_ciphersuites(ctx: &mut SslContextBuilder, suites: &str) -> Result<(), ErrorStack> {
    #[cfg(any(ossl111, libressl))]
    return ctx.set_ciphersuites(suites);
    #[cfg(not(any(ossl111, libressl)))]
    {
        let _ = (ctx, suites);
        Ok(())
    }
}

/// SSL_CTRL_SET_CURVES_LIST (1.1.0 ssl.h), SSL_CTRL_SET_GROUPS_LIST from 1.1.1 on.
#[cfg(not(any(ossl111, libressl)))]
const SSL_CTRL_SET_CURVES_LIST: libc::c_int = 92;

/// `curves`: SSL_CTX_set1_groups_list, which OpenSSL 1.1.0 calls SSL_CTX_set1_curves_list
/// (the same SSL_CTX_ctrl number, 92); the `openssl` crate wraps it from 1.1.1 on only.
pub fn set_groups_list(ctx: &mut SslContextBuilder, groups: &str) -> Result<(), ErrorStack> {
    #[cfg(any(ossl111, libressl))]
    return ctx.set_groups_list(groups);
    #[cfg(not(any(ossl111, libressl)))]
    {
        let groups = std::ffi::CString::new(groups).map_err(|_| ErrorStack::get())?;
        // SAFETY: a valid SSL_CTX and a NUL-terminated list that OpenSSL copies.
        let ok = unsafe {
            ffi::SSL_CTX_ctrl(
                ctx.as_ptr(),
                SSL_CTRL_SET_CURVES_LIST,
                0,
                groups.as_ptr() as *mut libc::c_void,
            )
        };
        if ok == 1 {
            Ok(())
        } else {
            Err(ErrorStack::get())
        }
    }
}

/// A TLS 1.3 server sends session tickets unless told to send none (SSL_CTX_set_num_tickets,
/// 1.1.1+). Before 1.1.1 there is no TLS 1.3, and NO_TICKET covers TLS 1.2.
pub fn send_no_tickets(ctx: &mut SslContextBuilder) {
    send_tickets(ctx, 0);
}

/// The size of the buffer OpenSSL reads ahead into (OpenSSL 1.1.0+; older versions
/// read at most one record at a time).
pub fn set_read_buffer_len(ctx: &mut SslContextBuilder, len: usize) {
    #[cfg(all(ossl110, not(libressl)))]
    {
        extern "C" {
            fn SSL_CTX_set_default_read_buffer_len(ctx: *mut ffi::SSL_CTX, len: usize);
        }
        // SAFETY: a valid SSL_CTX pointer owned by the builder; the call only stores `len`.
        unsafe { SSL_CTX_set_default_read_buffer_len(ctx.as_ptr(), len) };
    }
    #[cfg(not(all(ossl110, not(libressl))))]
    let _ = (ctx, len);
}

/// How many TLS 1.3 tickets a server sends after a full handshake (OpenSSL 1.1.1+;
/// older versions have no TLS 1.3).
pub fn send_tickets(ctx: &mut SslContextBuilder, count: usize) {
    #[cfg(ossl111)]
    let _ = ctx.set_num_tickets(count);
    #[cfg(not(ossl111))]
    let _ = (ctx, count);
}

/// `securityLevel` (OpenSSL 1.1.0+, LibreSSL 3.6+; ignored by older LibreSSL).
pub fn set_security_level(ctx: &mut SslContextBuilder, level: u32) {
    #[cfg(any(ossl110, libressl360))]
    ctx.set_security_level(level);
    #[cfg(not(any(ossl110, libressl360)))]
    let _ = (ctx, level);
}

/// The error for `setting` (e.g. "sslVersionMin = SSLv3") whose `version` the linked
/// library lacks (`ssl_version` gave `None`).
pub fn version_missing(version: TlsVersion, setting: &str) -> String {
    match version {
        TlsVersion::Ssl3 => format!(
            "{setting} needs SSLv3, which OpenSSL 4.0 removed; rstunnel is linked with {}",
            running_version()
        ),
        _ => tls13_missing(setting),
    }
}

/// The error for a setting that needs TLS 1.3 when the linked library lacks it.
pub fn tls13_missing(setting: &str) -> String {
    format!(
        "{setting} needs TLS 1.3, which needs OpenSSL 1.1.1 or later; rstunnel is linked with {}",
        running_version()
    )
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
///
/// Before 3.0 the EOF is SSL_ERROR_SYSCALL with an empty error queue and no errno (the
/// `openssl` crate then has neither an I/O nor an SSL error to report); SYSCALL with
/// either is a real failure. 3.x reports SSL_ERROR_SSL with reason 294 from the SSL
/// library; the number must not be matched before 3.0, where reason 294 of the SSL
/// library is SSL_R_OCSP_CALLBACK_FAILURE. See SSL_get_error(3), "BUGS" (3.0) and
/// <https://github.com/openssl/openssl/issues/17004> (why 1.1.1 keeps SYSCALL).
pub fn classify_read_end(error: &openssl::ssl::Error) -> ReadEnd {
    match error.code() {
        ErrorCode::ZERO_RETURN => ReadEnd::CloseNotify,
        ErrorCode::SYSCALL if error.io_error().is_none() && error.ssl_error().is_none() => {
            ReadEnd::Truncated
        }
        ErrorCode::SSL if is_unexpected_eof(error) => ReadEnd::Truncated,
        _ => ReadEnd::Failed,
    }
}

/// Whether a failed handshake failed because of the connection (reset, EOF, an I/O error)
/// rather than of what the peer said (an alert, a certificate that did not verify): only
/// the first says the far side is down (`pauseWhenDown`).
pub fn is_transport_failure(error: &openssl::ssl::Error) -> bool {
    error.code() == ErrorCode::SYSCALL || classify_read_end(error) == ReadEnd::Truncated
}

/// Whether a failed SSL call failed on an alert the peer sent (OpenSSL files a received
/// alert as an SSL-library reason of `SSL_AD_REASON_OFFSET` + the alert number: "tlsv13
/// alert certificate required", "sslv3 alert bad certificate"…). The far side said no:
/// it is up and refuses us, a configuration problem (a client certificate it does not
/// take, a protocol it does not allow), never a sign that it is down (`pauseWhenDown`).
/// close_notify is no error (ZERO_RETURN) and never lands here.
pub fn is_alert_from_peer(error: &openssl::ssl::Error) -> bool {
    error.code() == ErrorCode::SSL
        && error.ssl_error().is_some_and(|stack| {
            stack.errors().iter().any(|e| {
                e.library_code() == ERR_LIB_SSL_ANY
                    && (SSL_AD_REASON_OFFSET..SSL_AD_REASON_OFFSET + 256).contains(&e.reason_code())
            })
        })
}

/// What a failed handshake's error says it failed on, for the metrics
/// (`metrics::HandshakeReason`). A transport failure (reset, EOF) is `Reset`, whatever the
/// certificates were (OpenSSL records a failed verify result even where our callback
/// accepted the certificate, so that result is no evidence). A certificate refused either
/// way is `Verify`: ours by the peer (a certificate alert), its by us (CERTIFICATE_VERIFY_FAILED,
/// or none sent where one is required). Anything else the SSL library said is `Protocol`
/// (no shared version, cipher or group; a plain-text client).
pub fn handshake_failure_reason(error: &openssl::ssl::Error) -> crate::metrics::HandshakeReason {
    use crate::metrics::HandshakeReason;
    if is_transport_failure(error) {
        return HandshakeReason::Reset;
    }
    let certificate_refused = error.ssl_error().is_some_and(|stack| {
        stack.errors().iter().any(|e| {
            e.library_code() == ERR_LIB_SSL_ANY
                && (CERTIFICATE_ALERTS.contains(&(e.reason_code() - SSL_AD_REASON_OFFSET))
                    || CERTIFICATE_REASONS.contains(&e.reason_code()))
        })
    });
    if certificate_refused {
        HandshakeReason::Verify
    } else if error.code() == ErrorCode::SSL {
        HandshakeReason::Protocol
    } else {
        HandshakeReason::Other
    }
}

/// The alerts (RFC 8446 §6.2 numbers) a peer sends when it refuses a certificate:
/// bad_certificate, unsupported_certificate, certificate_revoked, certificate_expired,
/// certificate_unknown, unknown_ca, access_denied, certificate_required.
const CERTIFICATE_ALERTS: [libc::c_int; 8] = [42, 43, 44, 45, 46, 48, 49, 116];
/// OpenSSL's own reasons for a certificate it refused or missed (ssl/sslerr.h, the same
/// in 1.1.1 and 3.x): CERTIFICATE_VERIFY_FAILED, PEER_DID_NOT_RETURN_A_CERTIFICATE.
const CERTIFICATE_REASONS: [libc::c_int; 2] = [134, 199];

/// ssl/ssl.h: a received alert's reason is this plus the alert's number (all versions).
const SSL_AD_REASON_OFFSET: libc::c_int = 1000;
/// ERR_LIB_SSL (err.h), the same number in 1.1.x and 3.x.
const ERR_LIB_SSL_ANY: libc::c_int = 20;

/// OpenSSL 3's reason code for an EOF without close_notify (ssl/sslerr.h), from the SSL
/// library (ERR_LIB_SSL, err.h).
#[cfg(ossl300)]
const SSL_R_UNEXPECTED_EOF_WHILE_READING: libc::c_int = 294;
#[cfg(ossl300)]
const ERR_LIB_SSL: libc::c_int = 20;

#[cfg(ossl300)]
fn is_unexpected_eof(error: &openssl::ssl::Error) -> bool {
    error.ssl_error().is_some_and(|stack| {
        stack.errors().iter().any(|e| {
            e.library_code() == ERR_LIB_SSL && e.reason_code() == SSL_R_UNEXPECTED_EOF_WHILE_READING
        })
    })
}

/// Before 3.0 an EOF is never an SSL_ERROR_SSL.
#[cfg(not(ossl300))]
fn is_unexpected_eof(_error: &openssl::ssl::Error) -> bool {
    false
}

/// Options rstunnel always sets: no renegotiation (relay rule 7, src/relay.rs), no SSLv2/3 as
/// stunnel's default set.
pub fn baseline_options() -> SslOptions {
    no_renegotiation() | SslOptions::NO_SSLV2 | SslOptions::NO_SSLV3
}

/// SSL_OP_NO_RENEGOTIATION (OpenSSL 1.1.0h and later, which is every OpenSSL that
/// openssl-sys accepts in practice: 1.1.0 before h is in no maintained distribution).
/// Without it (LibreSSL, 1.1.0 before h) nothing is set: unverified configurations.
pub fn no_renegotiation() -> SslOptions {
    #[cfg(ossl110h)]
    let options = SslOptions::NO_RENEGOTIATION;
    #[cfg(not(ossl110h))]
    let options = SslOptions::empty();
    options
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

/// Every certificate in a trust store (for finding an issuer among them).
pub fn store_certificates(store: &openssl::x509::store::X509StoreRef) -> Vec<openssl::x509::X509> {
    #[cfg(ossl300)]
    let certs = store.all_certificates().into_iter().collect();
    // X509_STORE_get1_all_certs is 3.0+. `objects()` (X509_STORE_get0_objects) is
    // deprecated by the `openssl` crate because another thread could add to the store
    // while the stack is read; rstunnel's stores are complete before the first handshake
    // and never changed afterwards.
    #[cfg(not(ossl300))]
    #[allow(deprecated)]
    let certs = store
        .objects()
        .iter()
        .filter_map(|object| object.x509().map(openssl::x509::X509Ref::to_owned))
        .collect();
    certs
}

/// Whether a handshake (or a post-handshake exchange) is in progress on `ssl`.
pub fn in_handshake(ssl: &openssl::ssl::SslRef) -> bool {
    // SAFETY: a valid SSL pointer for the duration of the call.
    unsafe { ffi::SSL_is_init_finished(ssl.as_ptr()) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls13_where_the_library_has_it() {
        assert_eq!(ssl_version(TlsVersion::Tls1_3).is_some(), HAS_TLS13);
        assert!(ssl_version(TlsVersion::Tls1_2).is_some());
    }

    #[test]
    fn sslv3_is_a_version_bound_until_openssl_4() {
        // Judged by the version the library reports and by what it does with the bound,
        // not by the cfg that `ssl_version` is built from.
        let running = running_version();
        let gone = running.starts_with("OpenSSL 4.");
        assert_eq!(ssl_version(TlsVersion::Ssl3).is_none(), gone, "{running}");
        let mut ctx = SslContextBuilder::new(openssl::ssl::SslMethod::tls()).expect("SSL_CTX");
        let refused = ctx.set_min_proto_version(Some(SslVersion::SSL3)).is_err();
        assert_eq!(refused, gone, "{running}: SSLv3 as the lowest version");
        let message = version_missing(TlsVersion::Ssl3, "sslVersion = SSLv3");
        assert!(
            message.contains("OpenSSL 4.0 removed") && message.contains(running),
            "{message}"
        );
    }
}
