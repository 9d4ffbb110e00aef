//! Revocation checks of the peer's certificates: a client judges the server in OpenSSL's
//! status callback (a valid stapled response first, else the responders), a server judges
//! client certificates in the verify callback at depth 0 (`PeerCheck`, called by
//! `tls::verify`). The peer's own certificate always, CA certificates below the root with
//! `OCSPaia = yes`; revoked fails the handshake, no conclusive answer fails it unless
//! `OCSPrequire = no`. Writes the `OCSP:` log lines. Blocks the handshake's thread on the
//! responders; never caches an answer.

use libc::c_int;
use openssl::hash::MessageDigest;
use openssl::ocsp::OcspCertId;
use openssl::ssl::SslRef;
use openssl::stack::StackRef;
use openssl::x509::store::X509StoreRef;
use openssl::x509::{X509Ref, X509StoreContext, X509StoreContextRef, X509VerifyResult, X509};
use openssl_sys as ffi_sys;

use super::ffi::verify_error;
use super::http::http_post;
use super::response::{judge, new_request, openssl_reason, stack_of, Answer};
use super::settings::Settings;
use crate::config::url::ResponderUrl;
use crate::config::TlsOptions;
use crate::tls::facts::ServiceFacts;
use crate::tls::names::name_line;

/// Whether a peer may go on, and if not, the verification error to report.
enum Verdict {
    Accept,
    Reject(X509VerifyResult),
}

/// Revocation checks of a peer's certificates (see the module docs).
pub struct PeerCheck {
    pub(super) settings: Settings,
}

impl PeerCheck {
    /// For a server section: checks of client certificates in the verify callback, when a
    /// responder is configured and the chain is verified at all.
    pub fn for_client_certificates(
        opts: &TlsOptions,
        facts: &ServiceFacts<'_>,
    ) -> Option<PeerCheck> {
        let asks = opts.ocsp_url.is_some() || opts.ocsp_aia;
        (!facts.is_client() && asks && opts.verify.any_check()).then(|| PeerCheck {
            settings: Settings::from_options(opts, facts.ocsp_timeout),
        })
    }

    /// In the verify callback at depth 0, after the other checks passed: judges the chain
    /// OpenSSL built. On rejection sets the store's error and returns false. Blocks on the
    /// responders.
    pub fn check_in_verify_callback(&self, store: &mut X509StoreContextRef) -> bool {
        let verdict = {
            let chain: Vec<X509> = store
                .chain()
                .map(|c| c.iter().map(X509Ref::to_owned).collect())
                .unwrap_or_default();
            let ssl = X509StoreContext::ssl_idx()
                .ok()
                .and_then(|idx| store.ex_data(idx));
            let (Some(ssl), false) = (ssl, chain.is_empty()) else {
                log_warning!("OCSP: no certificate chain to check");
                return !self.settings.require;
            };
            let untrusted = match stack_of(&chain) {
                Ok(s) => s,
                Err(_) => return !self.settings.require,
            };
            self.check_chain(&chain, &untrusted, ssl.ssl_context().cert_store(), None)
        };
        match verdict {
            Verdict::Accept => true,
            Verdict::Reject(error) => {
                store.set_error(error);
                false
            }
        }
    }

    /// Client side, in the status callback (after the chain was verified): judges the
    /// server with its stapled response if it sent a valid one, else by asking the
    /// responders. Returns whether the handshake may go on.
    pub(super) fn check_in_status_callback(&self, ssl: &SslRef) -> bool {
        let Some(peer) = ssl.peer_certificate() else {
            // No certificate (PSK): nothing to check.
            return true;
        };
        let mut chain: Vec<X509> = ssl
            .verified_chain()
            .map(|c| c.iter().map(X509Ref::to_owned).collect())
            .unwrap_or_default();
        if chain.is_empty() {
            chain.push(peer);
        }
        let untrusted = match ssl.peer_cert_chain() {
            Some(sent) => stack_of(&sent.iter().map(X509Ref::to_owned).collect::<Vec<_>>()),
            None => stack_of(&chain),
        };
        let Ok(untrusted) = untrusted else {
            return !self.settings.require;
        };
        let stapled = ssl.ocsp_status();
        if stapled.is_some() {
            log_info!("OCSP: the server stapled a response");
        }
        let trust = ssl.ssl_context().cert_store();
        matches!(
            self.check_chain(&chain, &untrusted, trust, stapled),
            Verdict::Accept
        )
    }

    /// Judges `chain` (the peer's certificate first, each next one its issuer): the peer's
    /// own certificate always, the CA certificates below the root when `OCSPaia = yes` finds
    /// them a responder. `stapled` is the server's response for its own certificate.
    fn check_chain(
        &self,
        chain: &[X509],
        untrusted: &StackRef<X509>,
        trust: &X509StoreRef,
        stapled: Option<&[u8]>,
    ) -> Verdict {
        for (depth, cert) in chain.iter().enumerate() {
            let self_issued = cert.issued(cert) == X509VerifyResult::OK;
            if depth > 0 && (!self.settings.aia || self_issued) {
                continue;
            }
            let issuer = chain
                .get(depth + 1)
                .cloned()
                .or_else(|| find_issuer(cert, untrusted, trust));
            let responders = match (&self.settings.url, depth) {
                (Some(url), 0) => vec![url.clone()],
                _ if self.settings.aia => Settings::aia_responders(cert),
                _ => Vec::new(),
            };
            if depth > 0 && responders.is_empty() {
                continue;
            }
            let subject = name_line(cert.subject_name());
            let answer = match issuer {
                Some(issuer) => self.ask(
                    cert,
                    &issuer,
                    &responders,
                    untrusted,
                    trust,
                    stapled.filter(|_| depth == 0),
                ),
                None => Answer::Unusable("the issuer certificate is not available".into()),
            };
            if let Verdict::Reject(error) = self.decide(depth, &subject, answer) {
                return Verdict::Reject(error);
            }
        }
        Verdict::Accept
    }

    /// The answer for one certificate: the stapled response if it is conclusive, else the
    /// first conclusive answer of `responders`, else why none was.
    fn ask(
        &self,
        cert: &X509Ref,
        issuer: &X509Ref,
        responders: &[ResponderUrl],
        untrusted: &StackRef<X509>,
        trust: &X509StoreRef,
        stapled: Option<&[u8]>,
    ) -> Answer {
        let s = &self.settings;
        if let Some(der) = stapled {
            let answer = match OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer) {
                Ok(id) => judge(der, &id, None, untrusted, trust, s.flags),
                Err(e) => Answer::Unusable(format!("certificate id: {}", openssl_reason(&e))),
            };
            match answer {
                Answer::Unusable(why) => {
                    log_warning!("OCSP: stapled response not usable: {why}");
                }
                conclusive => return conclusive,
            }
        }
        if responders.is_empty() {
            return Answer::Unusable("no OCSP responder for the certificate".into());
        }
        let mut last = Answer::Unusable("no responder answered".into());
        for url in responders {
            let (request, id) = match new_request(cert, issuer, s.nonce) {
                Ok(r) => r,
                Err(e) => return Answer::Unusable(format!("request: {}", openssl_reason(&e))),
            };
            let der = match request.to_der() {
                Ok(d) => d,
                Err(e) => return Answer::Unusable(format!("request: {}", openssl_reason(&e))),
            };
            log_debug!("OCSP: asking {url}");
            let answer = match http_post(url, &der, s.timeout) {
                Ok(body) => judge(
                    &body,
                    &id,
                    s.nonce.then_some(&*request),
                    untrusted,
                    trust,
                    s.flags,
                ),
                Err(why) => Answer::Unusable(why),
            };
            match answer {
                Answer::Unusable(why) => {
                    log_info!("OCSP: {url}: {why}");
                    last = Answer::Unusable(format!("{url}: {why}"));
                }
                conclusive => return conclusive,
            }
        }
        last
    }

    /// Logs the outcome for one certificate and applies `OCSPrequire`.
    fn decide(&self, depth: usize, subject: &str, answer: Answer) -> Verdict {
        match answer {
            Answer::Good => {
                log_notice!("OCSP: Certificate good at depth={depth}: {subject}");
                Verdict::Accept
            }
            Answer::Revoked(detail) => {
                log_warning!("OCSP: Certificate revoked at depth={depth}: {subject} ({detail})");
                Verdict::Reject(verify_error(ffi_sys::X509_V_ERR_CERT_REVOKED))
            }
            Answer::Unusable(why) if self.settings.require => {
                log_warning!(
                    "OCSP: Rejected at depth={depth}: {subject}: no conclusive answer ({why}); \
                     OCSPrequire = yes"
                );
                Verdict::Reject(verify_error(X509_V_ERR_OCSP_VERIFY_FAILED))
            }
            Answer::Unusable(why) => {
                log_warning!(
                    "OCSP: Accepted at depth={depth} without a revocation check: {subject}: \
                     {why}; OCSPrequire = no"
                );
                Verdict::Accept
            }
        }
    }
}

/// X509_V_ERR_OCSP_VERIFY_FAILED (OpenSSL 3.0+; older versions print it as an unknown code).
const X509_V_ERR_OCSP_VERIFY_FAILED: c_int = 74;

/// An issuer of `cert` among the certificates the peer sent and the trusted ones.
fn find_issuer(cert: &X509Ref, untrusted: &StackRef<X509>, trust: &X509StoreRef) -> Option<X509> {
    untrusted
        .iter()
        .map(X509Ref::to_owned)
        .chain(crate::tls::compat::store_certificates(trust))
        .find(|candidate| candidate.issued(cert) == X509VerifyResult::OK)
}
