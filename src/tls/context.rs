//! Builds one `SslContext` per service from its options. Defaults follow stunnel 5.68:
//! ciphers `HIGH:!aNULL:!SSLv2:!DH:!kDHEPSK`, its TLS 1.3 suites and curves, security
//! level 2, no SSLv2/SSLv3; renegotiation is always refused (relay rule 7, src/relay.rs).

use std::path::Path;
use std::sync::{Arc, Mutex};

use openssl::pkey::PKey;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslMode, SslRef, SslSession,
    SslSessionCacheMode, SslVerifyMode, SslVersion,
};

use super::compat;
use super::error::TlsSetupError;
use super::facts::ServiceFacts;
use super::files::warn_if_world_readable;
use super::psk::{self, PskTable};
use super::verify::{self, VerifyPolicy};
use crate::config::values::TlsVersion;
use crate::config::TlsOptions;

pub const DEFAULT_CIPHERS: &str = "HIGH:!aNULL:!SSLv2:!DH:!kDHEPSK";
pub const DEFAULT_CIPHERSUITES: &str =
    "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";
pub const DEFAULT_SECURITY_LEVEL: u32 = 2;

/// The `curves` a service without one gets: the hybrid post-quantum groups first where the
/// running OpenSSL has them (3.5+), then stunnel's list; stunnel's list alone elsewhere
/// (`compat::HYBRID_CURVES` says why and how).
pub fn default_curves() -> &'static str {
    compat::default_curves()
}

/// What tls applies to a service that does not set these options, by option name: what
/// `-version` prints. The option table's defaults are stunnel's texts; `curves` here
/// depends on the running library.
pub fn applied_defaults() -> [(&'static str, String); 4] {
    [
        ("ciphers", DEFAULT_CIPHERS.to_string()),
        ("ciphersuites", DEFAULT_CIPHERSUITES.to_string()),
        ("curves", default_curves().to_string()),
        ("securityLevel", DEFAULT_SECURITY_LEVEL.to_string()),
    ]
}

/// The buffer OpenSSL reads ahead into, per connection: four full TLS records, the size of
/// one relay buffer (`relay::BUFFER_SIZE` is defined as this; relay rule 9, src/relay.rs),
/// so that one `ssl_read` can fill a relay buffer.
pub const READ_AHEAD_SIZE: usize = 64 * 1024;

/// `setting = version` as OpenSSL's version; an error where the linked OpenSSL lacks it.
fn openssl_version(v: TlsVersion, setting: &str) -> Result<SslVersion, TlsSetupError> {
    compat::ssl_version(v).ok_or_else(|| {
        TlsSetupError::plain(compat::version_missing(
            v,
            &format!("{setting} = {}", v.name()),
        ))
    })
}

/// A service's TLS state: its context and, on the client side, the last session the
/// server gave us, offered again on the next connection so that reconnecting clients pay
/// for one full handshake, not one per connection.
pub struct ServiceTls {
    pub ctx: SslContext,
    resumable: Arc<Mutex<Option<SslSession>>>,
    /// Kept so that a primary service can apply it when SNI selects this context.
    policy: Arc<VerifyPolicy>,
    verify_mode: SslVerifyMode,
}

/// A server-side virtual host (`sni = PRIMARY:PATTERN`): the pattern and the TLS state
/// the primary switches to when a client asks for a matching name.
pub struct VirtualHost {
    pub pattern: String,
    pub ctx: SslContext,
    policy: Arc<VerifyPolicy>,
    verify_mode: SslVerifyMode,
}

impl VirtualHost {
    pub fn new(pattern: &str, tls: &ServiceTls) -> VirtualHost {
        VirtualHost {
            pattern: pattern.to_string(),
            ctx: tls.ctx.clone(),
            policy: Arc::clone(&tls.policy),
            verify_mode: tls.verify_mode,
        }
    }
}

/// Whether the SNI `name` matches a virtual host's `pattern`: equal ignoring case, or for
/// `*.example.org` any name ending in `.example.org` with something before it.
///
/// Compared as bytes: the name comes from the peer and may hold any bytes, so it is never
/// sliced as a `str` (a cut inside a multi-byte character would panic, and this runs in
/// OpenSSL's servername callback, where a panic aborts the process).
pub fn sni_matches(pattern: &str, name: &str) -> bool {
    let name = name.as_bytes();
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let suffix = suffix.as_bytes();
            match name.len().checked_sub(suffix.len() + 1) {
                Some(dot) if dot > 0 => {
                    name[dot] == b'.' && name[dot + 1..].eq_ignore_ascii_case(suffix)
                }
                _ => false,
            }
        }
        None => pattern.as_bytes().eq_ignore_ascii_case(name),
    }
}

impl ServiceTls {
    /// Offers the cached session (client side) for resumption.
    pub fn offer_cached_session(&self, ssl: &mut Ssl) {
        let cached = self
            .resumable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(session) = cached {
            // SAFETY: the session was made by a connection of this same context (the
            // new-session callback below), which is what SSL_set_session requires.
            let _ = unsafe { ssl.set_session(&session) };
        }
    }
}

/// Builds the context for `opts`, the TLS options of the service that `facts` describe. With `load_files = false` (`--check --no-files`) every
/// setting is applied but certificates, keys and CAs are not read. `virtual_hosts` are
/// the server sections that name this one as their SNI primary.
pub fn build_context(
    opts: &TlsOptions,
    facts: &ServiceFacts<'_>,
    load_files: bool,
    virtual_hosts: Vec<VirtualHost>,
) -> Result<ServiceTls, TlsSetupError> {
    let method = if facts.is_client() {
        SslMethod::tls_client()
    } else {
        SslMethod::tls_server()
    };
    let mut ctx = SslContext::builder(method).map_err(|e| TlsSetupError::new("SSL_CTX_new", e))?;
    apply_protocol_settings(&mut ctx, opts)?;
    if load_files {
        load_identity(&mut ctx, opts)?;
        if let Some(path) = &opts.psk_secrets {
            install_psk(&mut ctx, opts, facts, PskTable::load(path)?)?;
        }
        load_trust(&mut ctx, opts, facts)?;
    }
    super::ocsp::install(&mut ctx, opts, facts, load_files)?;
    let policy = Arc::new(VerifyPolicy::from_options(opts, facts, load_files)?);
    let mode = verify_mode(opts, facts);
    let ctx_policy = Arc::clone(&policy);
    ctx.set_verify_callback(mode, move |preverified, store| {
        verify::check(&ctx_policy, preverified, store)
    });
    // Likewise `redirect`: a resumed session would skip the check that decides where the
    // client goes.
    let in_sni_group = !virtual_hosts.is_empty() || facts.virtual_host || facts.redirect;
    if !virtual_hosts.is_empty() {
        ctx.set_servername_callback(move |ssl, _alert| {
            select_virtual_host(ssl, &virtual_hosts);
            Ok(())
        });
    }
    // OpenSSL settles resumption before the SNI callback can switch to a virtual host,
    // so a session of one section could be resumed under another and skip its client
    // checks: sections that take part in SNI virtual hosting never resume.
    configure_sessions(&mut ctx, opts, facts, in_sni_group)?;
    let resumable = Arc::new(Mutex::new(None));
    if facts.is_client() && opts.session_resume {
        let slot = Arc::clone(&resumable);
        // Called when the server issues a session (TLS 1.3: a ticket after the handshake).
        ctx.set_new_session_callback(move |_ssl, session| {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
        });
    }
    Ok(ServiceTls {
        ctx: ctx.build(),
        resumable,
        policy,
        verify_mode: mode,
    })
}

/// In the ClientHello callback: switch to the virtual host the client named, with its
/// certificate and its verification policy (OpenSSL keeps the first context's verify
/// settings on a switch, so they are set on the connection itself).
fn select_virtual_host(ssl: &mut SslRef, virtual_hosts: &[VirtualHost]) {
    let Some(name) = ssl
        .servername(openssl::ssl::NameType::HOST_NAME)
        .map(str::to_string)
    else {
        return;
    };
    // Peer-supplied: the logger neutralises control characters.
    log_info!("SNI: requested servername: {name}");
    let Some(host) = virtual_hosts
        .iter()
        .find(|v| sni_matches(&v.pattern, &name))
    else {
        return;
    };
    if ssl.set_ssl_context(&host.ctx).is_err() {
        return;
    }
    let policy = Arc::clone(&host.policy);
    ssl.set_verify_callback(host.verify_mode, move |preverified, store| {
        verify::check(&policy, preverified, store)
    });
}

fn apply_protocol_settings(
    ctx: &mut SslContextBuilder,
    opts: &TlsOptions,
) -> Result<(), TlsSetupError> {
    let mut options = compat::baseline_options();
    for edit in &opts.ssl_options {
        let bits = crate::openssl_names::ssl_option_bits(edit.name);
        if edit.set {
            options |= bits;
        } else {
            options &= !bits;
        }
    }
    // Renegotiation stays refused even if an `options = -NO_RENEGOTIATION` line asks.
    options |= compat::no_renegotiation();
    ctx.clear_options(!options);
    ctx.set_options(options);
    // Partial writes and moving buffers let the relay retry a write from any buffer;
    // RELEASE_BUFFERS frees the 34 KiB of record buffers while a session is idle.
    ctx.set_mode(
        SslMode::ENABLE_PARTIAL_WRITE
            | SslMode::ACCEPT_MOVING_WRITE_BUFFER
            | SslMode::RELEASE_BUFFERS,
    );
    // Read ahead: one read(2) takes whatever records have arrived (up to the relay's
    // buffer size), not a 5-byte header and then the body of each record. The relay
    // already treats data buffered inside OpenSSL as readable (relay rule 3).
    ctx.set_read_ahead(true);
    compat::set_read_buffer_len(ctx, READ_AHEAD_SIZE);
    let min = opts
        .ssl_version_min
        .map(|v| openssl_version(v, "sslVersionMin"));
    ctx.set_min_proto_version(min.transpose()?)
        .map_err(|e| TlsSetupError::new("sslVersionMin", e))?;
    let max = opts
        .ssl_version_max
        .map(|v| openssl_version(v, "sslVersionMax"));
    ctx.set_max_proto_version(max.transpose()?)
        .map_err(|e| TlsSetupError::new("sslVersionMax", e))?;
    let ciphers = opts.ciphers.as_deref().unwrap_or(DEFAULT_CIPHERS);
    ctx.set_cipher_list(ciphers)
        .map_err(|e| TlsSetupError::new(format!("ciphers = {ciphers}"), e))?;
    if let (Some(suites), false) = (&opts.ciphersuites, compat::HAS_TLS13) {
        return Err(TlsSetupError::plain(compat::tls13_missing(&format!(
            "ciphersuites = {suites}"
        ))));
    }
    let suites = opts.ciphersuites.as_deref().unwrap_or(DEFAULT_CIPHERSUITES);
    compat::set_ciphersuites(ctx, suites)
        .map_err(|e| TlsSetupError::new(format!("ciphersuites = {suites}"), e))?;
    let curves = opts.curves.as_deref().unwrap_or_else(|| default_curves());
    compat::set_groups_list(ctx, curves)
        .map_err(|e| TlsSetupError::new(format!("curves = {curves}"), e))?;
    compat::set_security_level(ctx, opts.security_level.unwrap_or(DEFAULT_SECURITY_LEVEL));
    Ok(())
}

/// `PSKsecrets`: the server looks the client's identity up; the client sends its
/// `PSKidentity` (or the file's first) with its key.
fn install_psk(
    ctx: &mut SslContextBuilder,
    opts: &TlsOptions,
    facts: &ServiceFacts<'_>,
    table: PskTable,
) -> Result<(), TlsSetupError> {
    if facts.is_client() {
        let (identity, key) = table
            .client_entry(opts.psk_identity.as_deref())
            .ok_or_else(|| {
                TlsSetupError::plain(format!(
                    "PSKidentity = {}: not found in PSKsecrets",
                    opts.psk_identity.as_deref().unwrap_or("")
                ))
            })?;
        ctx.set_psk_client_callback(move |_ssl, _hint, identity_buf, key_buf| {
            // OpenSSL's identity buffer has room for the terminating NUL after the slice.
            let Some(len) = psk::copy_into(identity_buf, &identity) else {
                return Ok(0);
            };
            if let Some(nul) = identity_buf.get_mut(len) {
                *nul = 0;
            }
            Ok(psk::copy_into(key_buf, &key).unwrap_or(0))
        });
    } else {
        ctx.set_psk_server_callback(move |_ssl, identity, key_buf| {
            let key = identity.and_then(|id| table.key_for(id));
            if key.is_none() {
                log_warning!(
                    "PSK identity not found: {}",
                    String::from_utf8_lossy(identity.unwrap_or_default())
                );
            }
            Ok(key.and_then(|k| psk::copy_into(key_buf, k)).unwrap_or(0))
        });
    }
    Ok(())
}

/// `cert` (a PEM chain, possibly with the key in the same file) and `key`.
fn load_identity(ctx: &mut SslContextBuilder, opts: &TlsOptions) -> Result<(), TlsSetupError> {
    let Some(cert) = &opts.cert else {
        return Ok(());
    };
    if is_pkcs12(cert) {
        return load_pkcs12(ctx, cert);
    }
    ctx.set_certificate_chain_file(cert)
        .map_err(|e| TlsSetupError::new(format!("cert = {}", cert.display()), e))?;
    let key_path = opts.key_file().unwrap_or(cert);
    warn_if_world_readable(key_path);
    let key = load_private_key(key_path)?;
    ctx.set_private_key(&key)
        .map_err(|e| TlsSetupError::new(format!("key = {}", key_path.display()), e))?;
    ctx.check_private_key().map_err(|e| {
        TlsSetupError::new(
            format!(
                "key = {}: private key does not match the certificate",
                key_path.display()
            ),
            e,
        )
    })
}

/// A `cert` file that is DER rather than PEM, or named `.p12`/`.pfx`, is read as PKCS#12
/// (certificate, key and chain in one file), as stunnel does.
fn is_pkcs12(path: &Path) -> bool {
    let named = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("p12") || e.eq_ignore_ascii_case("pfx"));
    named
        || std::fs::read(path).is_ok_and(|bytes| {
            // PEM files are text starting with "-----BEGIN" (after blanks); PKCS#12 is DER.
            bytes.first() == Some(&0x30)
        })
}

/// Loads a PKCS#12 bundle with an empty password. One with a password is refused with a
/// clear message: there is no terminal to ask on.
fn load_pkcs12(ctx: &mut SslContextBuilder, path: &Path) -> Result<(), TlsSetupError> {
    let what = || format!("cert = {}", path.display());
    let der = std::fs::read(path).map_err(|e| TlsSetupError::plain(format!("{}: {e}", what())))?;
    let bundle =
        openssl::pkcs12::Pkcs12::from_der(&der).map_err(|e| TlsSetupError::new(what(), e))?;
    let parsed = bundle.parse2("").map_err(|e| {
        TlsSetupError::new(
            format!("{}: cannot open the PKCS#12 file without a password (rstunnel needs one with an empty password)", what()),
            e,
        )
    })?;
    let (Some(cert), Some(key)) = (parsed.cert, parsed.pkey) else {
        return Err(TlsSetupError::plain(format!(
            "{}: the PKCS#12 file lacks a certificate or a key",
            what()
        )));
    };
    warn_if_world_readable(path);
    ctx.set_certificate(&cert)
        .map_err(|e| TlsSetupError::new(what(), e))?;
    for ca in parsed.ca.into_iter().flatten() {
        ctx.add_extra_chain_cert(ca)
            .map_err(|e| TlsSetupError::new(what(), e))?;
    }
    ctx.set_private_key(&key)
        .map_err(|e| TlsSetupError::new(what(), e))?;
    ctx.check_private_key().map_err(|e| {
        TlsSetupError::new(format!("{}: key does not match the certificate", what()), e)
    })
}

/// Reads a PEM private key. An encrypted key is refused with a clear message instead of
/// OpenSSL prompting for a passphrase on a terminal that a daemon does not have.
fn load_private_key(path: &Path) -> Result<PKey<openssl::pkey::Private>, TlsSetupError> {
    let pem = std::fs::read(path)
        .map_err(|e| TlsSetupError::plain(format!("key = {}: {e}", path.display())))?;
    let mut asked_for_passphrase = false;
    let key = PKey::private_key_from_pem_callback(&pem, |_buf| {
        asked_for_passphrase = true;
        Ok(0)
    });
    match key {
        Ok(key) => Ok(key),
        Err(_) if asked_for_passphrase => Err(TlsSetupError::plain(format!(
            "key = {}: the private key is encrypted; rstunnel needs an unencrypted key \
             (decrypt it with `openssl pkey -in KEY -out NEWKEY`)",
            path.display()
        ))),
        Err(e) => Err(TlsSetupError::new(
            format!("key = {}: no usable private key", path.display()),
            e,
        )),
    }
}

/// `CAfile`/`CApath`: trust anchors, and in server mode the CA names sent to clients.
fn load_trust(
    ctx: &mut SslContextBuilder,
    opts: &TlsOptions,
    facts: &ServiceFacts<'_>,
) -> Result<(), TlsSetupError> {
    if let Some(file) = &opts.ca_file {
        ctx.set_ca_file(file)
            .map_err(|e| TlsSetupError::new(format!("CAfile = {}", file.display()), e))?;
        if !facts.is_client() {
            let names = openssl::x509::X509Name::load_client_ca_file(file)
                .map_err(|e| TlsSetupError::new(format!("CAfile = {}", file.display()), e))?;
            ctx.set_client_ca_list(names);
        }
    }
    if let Some(dir) = &opts.ca_path {
        ctx.load_verify_locations(None, Some(dir))
            .map_err(|e| TlsSetupError::new(format!("CApath = {}", dir.display()), e))?;
    }
    if opts.ca_file.is_none() && opts.ca_path.is_none() {
        log_err!("No trusted certificates found");
    }
    load_crls(ctx, opts)
}

/// `CRLfile`/`CRLpath`: revocation lists checked for every certificate of the chain.
fn load_crls(ctx: &mut SslContextBuilder, opts: &TlsOptions) -> Result<(), TlsSetupError> {
    use openssl::x509::store::X509Lookup;
    use openssl::x509::verify::X509VerifyFlags;
    if opts.crl_file.is_none() && opts.crl_path.is_none() {
        return Ok(());
    }
    let store = ctx.cert_store_mut();
    if let Some(file) = &opts.crl_file {
        let what = || format!("CRLfile = {}", file.display());
        store
            .add_lookup(X509Lookup::file())
            .map_err(|e| TlsSetupError::new(what(), e))?
            .load_crl_file(file, SslFiletype::PEM)
            .map_err(|e| TlsSetupError::new(what(), e))?;
    }
    if let Some(dir) = &opts.crl_path {
        let what = || format!("CRLpath = {}", dir.display());
        let dir_text = dir.to_str().ok_or_else(|| TlsSetupError::plain(what()))?;
        store
            .add_lookup(X509Lookup::hash_dir())
            .map_err(|e| TlsSetupError::new(what(), e))?
            .add_dir(dir_text, SslFiletype::PEM)
            .map_err(|e| TlsSetupError::new(what(), e))?;
    }
    store
        .set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)
        .map_err(|e| TlsSetupError::new("CRL checking", e))
}

fn verify_mode(opts: &TlsOptions, facts: &ServiceFacts<'_>) -> SslVerifyMode {
    let v = &opts.verify;
    if facts.is_client() {
        // A client always receives the server's certificate; PEER makes OpenSSL run the
        // callback so that the policy (or "accept anything") decides.
        return if v.any_check() {
            SslVerifyMode::PEER
        } else {
            SslVerifyMode::NONE
        };
    }
    let mut mode = SslVerifyMode::NONE;
    if v.request_cert {
        mode |= SslVerifyMode::PEER;
    }
    if v.require_cert {
        mode |= SslVerifyMode::PEER;
        // With `redirect` a client without a certificate is redirected, not refused.
        if !facts.redirect {
            mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
        }
    }
    mode
}

fn configure_sessions(
    ctx: &mut SslContextBuilder,
    opts: &TlsOptions,
    facts: &ServiceFacts<'_>,
    in_sni_group: bool,
) -> Result<(), TlsSetupError> {
    if !opts.session_resume || in_sni_group {
        ctx.set_session_cache_mode(SslSessionCacheMode::OFF);
        ctx.set_options(openssl::ssl::SslOptions::NO_TICKET);
        // TLS 1.3 servers still send tickets unless told to send none.
        compat::send_no_tickets(ctx);
    } else if facts.is_client() {
        // The new-session callback keeps the one session a client tunnel offers next;
        // OpenSSL's own client-side store would only pile up every ticket received (up
        // to sessionCacheSize of them, each with the peer's chain), never to be looked up.
        ctx.set_session_cache_mode(
            SslSessionCacheMode::CLIENT | SslSessionCacheMode::NO_INTERNAL_STORE,
        );
    } else {
        ctx.set_session_cache_mode(SslSessionCacheMode::SERVER);
        // One TLS 1.3 ticket per handshake, not OpenSSL's two: a client tunnel keeps only
        // the newest, and each ticket costs the server an encryption and the client a parse.
        compat::send_tickets(ctx, 1);
        // Resumed sessions must belong to this service: a session from another service
        // (other CA, other checks) would skip this one's verification.
        let id = openssl::sha::sha256(facts.name.as_bytes());
        ctx.set_session_id_context(&id[..16])
            .map_err(|e| TlsSetupError::new("session id context", e))?;
    }
    ctx.set_session_cache_size(i32::try_from(opts.session_cache_size).unwrap_or(i32::MAX));
    compat::set_session_timeout(ctx, opts.session_cache_timeout);
    Ok(())
}

/// After a handshake: the lines stunnel logs at INFO about what was negotiated.
pub fn describe_session(ssl: &SslRef, server: bool) -> Vec<String> {
    let mut lines = vec![format!(
        "TLS {}: {}",
        if server { "accepted" } else { "connected" },
        if ssl.session_reused() {
            "previous session reused"
        } else {
            "new session negotiated"
        }
    )];
    if let Some(cipher) = ssl.current_cipher() {
        lines.push(format!(
            "{} ciphersuite: {} ({}-bit encryption)",
            ssl.version_str(),
            cipher.name(),
            cipher.bits().secret
        ));
    }
    // rstunnel's own line (stunnel has none like it): whether a session recorded now
    // could be decrypted once its key exchange is broken depends on this group.
    if let Some(group) = compat::negotiated_group(ssl) {
        lines.push(format!("Key exchange group: {group}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::{applied_defaults, compat, sni_matches};
    use crate::config::options;

    /// `-version` prints these; all but `curves` must be the option table's (stunnel's)
    /// texts, and `curves` is stunnel's list, after the hybrid groups where the library
    /// has them.
    #[test]
    fn applied_defaults_are_the_tables_but_curves_may_lead_with_hybrids() {
        for (name, applied) in applied_defaults() {
            let row = options::OPTIONS
                .iter()
                .find(|spec| spec.name == name)
                .unwrap_or_else(|| panic!("no option row {name}"));
            let table = row.default.unwrap_or_else(|| panic!("{name}: no default"));
            if name == "curves" {
                assert_eq!(table, "X25519:P-256:X448:P-521:P-384");
                assert!(
                    applied == compat::STUNNEL_CURVES || applied == compat::HYBRID_CURVES,
                    "curves default {applied}"
                );
            } else {
                assert_eq!(applied, table, "{name}");
            }
        }
    }

    #[test]
    fn sni_patterns() {
        assert!(sni_matches("www.example.org", "WWW.example.org"));
        assert!(!sni_matches("www.example.org", "example.org"));
        assert!(sni_matches("*.example.org", "a.example.org"));
        assert!(sni_matches("*.example.org", "a.b.example.org"));
        assert!(!sni_matches("*.example.org", "example.org"));
        assert!(!sni_matches("*.example.org", ".example.org"));
        assert!(!sni_matches("*.example.org", "aexample.org"));
        // A peer's name cut inside a multi-byte character must not panic.
        assert!(!sni_matches("*.example.org", "a\u{9b}xample.org"));
        assert!(!sni_matches("*.example.org", "\u{9b}"));
        assert!(sni_matches("*.example.org", "\u{e9}.example.org"));
    }
}
