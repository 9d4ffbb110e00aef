//! Peer-certificate policy: stunnel's `verifyChain` (PKI chain check), `verifyPeer`
//! (the peer's own certificate must be one of the trusted ones) and the `checkHost`,
//! `checkEmail`, `checkIP` lists (any one match passes), applied in OpenSSL's verify
//! callback, which also writes stunnel's `Certificate accepted` / `Rejected by CERT` lines.

use foreign_types::ForeignTypeRef;
use openssl::ex_data::Index;
use openssl::ssl::Ssl;
use openssl::x509::X509StoreContext;
use openssl::x509::{X509Ref, X509StoreContextRef, X509};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use super::error::TlsSetupError;
use super::facts::ServiceFacts;
use super::names::name_line;
use crate::config::TlsOptions;

pub struct VerifyPolicy {
    chain: bool,
    peer: bool,
    /// `redirect`: a failed check does not fail the handshake; it is noted on the
    /// connection (`redirect_index`) and the session goes to the redirect target.
    redirect: bool,
    /// SHA-256 of every certificate in CAfile, for `verifyPeer`.
    pinned: Vec<[u8; 32]>,
    hosts: Vec<CString>,
    emails: Vec<CString>,
    ips: Vec<CString>,
    /// Server side: OCSP checks of the client's certificate (client side: see `ocsp`).
    ocsp: Option<super::ocsp::PeerCheck>,
}

fn c_strings(values: &[String]) -> Result<Vec<CString>, TlsSetupError> {
    values
        .iter()
        .map(|v| {
            CString::new(v.as_str())
                .map_err(|_| TlsSetupError::plain(format!("NUL byte in \"{v}\"")))
        })
        .collect()
}

impl VerifyPolicy {
    pub fn from_options(
        opts: &TlsOptions,
        facts: &ServiceFacts<'_>,
        load_files: bool,
    ) -> Result<Self, TlsSetupError> {
        let mut pinned = Vec::new();
        if opts.verify.peer && load_files {
            if let Some(file) = &opts.ca_file {
                let pem = std::fs::read(file).map_err(|e| {
                    TlsSetupError::plain(format!("CAfile = {}: {e}", file.display()))
                })?;
                let certs = X509::stack_from_pem(&pem)
                    .map_err(|e| TlsSetupError::new(format!("CAfile = {}", file.display()), e))?;
                for cert in certs {
                    pinned.push(sha256_of(&cert));
                }
            }
        }
        Ok(VerifyPolicy {
            chain: opts.verify.chain,
            peer: opts.verify.peer,
            redirect: facts.redirect,
            pinned,
            hosts: c_strings(&opts.check_host)?,
            emails: c_strings(&opts.check_email)?,
            ips: c_strings(&opts.check_ip)?,
            ocsp: super::ocsp::PeerCheck::for_client_certificates(opts, facts),
        })
    }

    fn identity_matches(&self, cert: &X509Ref) -> bool {
        let any = !self.hosts.is_empty() || !self.emails.is_empty() || !self.ips.is_empty();
        if !any {
            return true;
        }
        let ptr = cert.as_ptr();
        // SAFETY: X509_check_* read the certificate and a NUL-terminated string of the
        // given length; they write nothing when `peername` is null.
        unsafe {
            self.hosts.iter().any(|h| {
                openssl_sys::X509_check_host(
                    ptr,
                    h.as_ptr(),
                    h.as_bytes().len(),
                    0,
                    std::ptr::null_mut(),
                ) == 1
            }) || self
                .emails
                .iter()
                .any(|e| openssl_sys::X509_check_email(ptr, e.as_ptr(), e.as_bytes().len(), 0) == 1)
                || self
                    .ips
                    .iter()
                    .any(|ip| openssl_sys::X509_check_ip_asc(ptr, ip.as_ptr(), 0) == 1)
        }
    }
}

fn sha256_of(cert: &X509Ref) -> [u8; 32] {
    cert.to_der()
        .map(|der| openssl::sha::sha256(&der))
        .unwrap_or([0; 32])
}

/// Where a connection records that its peer failed verification (`redirect` services).
pub fn redirect_index() -> Option<Index<Ssl, AtomicBool>> {
    static INDEX: OnceLock<Option<Index<Ssl, AtomicBool>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

/// Where a probe's connection is marked (`probe`, `pauseWhenDown`): its accepted
/// certificates are logged at debug, so that a service probing a far side every few
/// seconds does not log a notice each time.
fn probe_index() -> Option<Index<Ssl, bool>> {
    static INDEX: OnceLock<Option<Index<Ssl, bool>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

/// Marks `ssl` as a probe's (see `probe_index`).
pub fn mark_probe(ssl: &mut Ssl) {
    if let Some(index) = probe_index() {
        ssl.set_ex_data(index, true);
    }
}

fn is_probe(store: &X509StoreContextRef) -> bool {
    let Some(ssl) = X509StoreContext::ssl_idx()
        .ok()
        .and_then(|i| store.ex_data(i))
    else {
        return false;
    };
    probe_index()
        .and_then(|i| ssl.ex_data(i))
        .copied()
        .unwrap_or(false)
}

/// The verify callback. Returns whether the handshake may go on: the verdict, or always
/// true for a `redirect` service, which notes a failed verdict on the connection instead.
pub fn check(policy: &VerifyPolicy, preverified: bool, store: &mut X509StoreContextRef) -> bool {
    if !policy.redirect {
        return verdict(policy, preverified, store);
    }
    // Once failed, OpenSSL's later calls for this chain change nothing (and log nothing).
    if redirect_flag(store).is_some_and(|failed| failed.load(Ordering::SeqCst)) {
        return true;
    }
    if verdict(policy, preverified, store) {
        return true;
    }
    match redirect_flag(store) {
        Some(failed) => {
            failed.store(true, Ordering::SeqCst);
            true
        }
        // Without a place to note the failure it must fail the handshake.
        None => false,
    }
}

/// The connection's "failed verification" flag, set up by the session for `redirect`.
fn redirect_flag(store: &X509StoreContextRef) -> Option<&AtomicBool> {
    let ssl = store.ex_data(X509StoreContext::ssl_idx().ok()?)?;
    ssl.ex_data(redirect_index()?)
}

fn verdict(policy: &VerifyPolicy, preverified: bool, store: &mut X509StoreContextRef) -> bool {
    let depth = store.error_depth();
    let Some(cert) = store.current_cert() else {
        return preverified;
    };
    let subject = name_line(cert.subject_name());
    if !policy.chain && !policy.peer {
        // verify = 0 or a client that checks nothing: any certificate goes (the startup
        // warning said so). OpenSSL calls us once per chain error too; log the passing call.
        if preverified {
            log_debug!("Certificate not checked at depth={depth}: {subject}");
        }
        return true;
    }
    if !preverified && policy.chain {
        log_warning!(
            "Rejected by CERT at depth={depth}: {subject}: {}",
            store.error().error_string()
        );
        return false;
    }
    if depth == 0 {
        if policy.peer && !policy.pinned.contains(&sha256_of(cert)) {
            log_warning!("Rejected by CERT at depth=0: {subject}: certificate not found in the local trust store (verifyPeer)");
            return false;
        }
        if !policy.identity_matches(cert) {
            log_warning!(
                "Rejected by CERT at depth=0: {subject}: no checkHost/checkEmail/checkIP match"
            );
            return false;
        }
        if let Some(ocsp) = &policy.ocsp {
            if !ocsp.check_in_verify_callback(store) {
                return false;
            }
        }
    } else if !preverified {
        // verifyPeer alone: chain errors above the peer's own certificate do not matter.
        return true;
    }
    if preverified || depth == 0 {
        if is_probe(store) {
            log_debug!("Certificate accepted at depth={depth}: {subject} (probe)");
        } else {
            log_notice!("Certificate accepted at depth={depth}: {subject}");
        }
    }
    true
}
