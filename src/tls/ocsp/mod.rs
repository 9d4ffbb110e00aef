//! OCSP: revocation checks of the peer's certificate and stapling of our own (stunnel's
//! `OCSP`, `OCSPaia`, `OCSPflag`, `OCSPnonce`, `OCSPrequire` and `TIMEOUTocsp`).
//!
//! * **Peer checks.** Only when `verifyChain` or `verifyPeer` is on (a chain that nobody
//!   verifies has nothing to check; `install` warns at startup). A client asks the server to
//!   staple (status_request) and judges the server in OpenSSL's status callback, which runs
//!   after the chain was verified: a valid stapled response is used, else the responders are
//!   asked. A server judges client certificates in the verify callback at depth 0
//!   ([`PeerCheck::check_in_verify_callback`], called by `verify::check`). The peer's own
//!   certificate is always checked; with `OCSPaia = yes` also each CA certificate below the
//!   root whose AIA names a responder. Revoked fails the handshake; no conclusive answer fails
//!   it unless `OCSPrequire = no`.
//! * **Stapling.** A server whose certificate names an AIA responder, or whose section has
//!   `OCSP = URL`, fetches a response for its own certificate at startup, caches it, and
//!   staples it when a client asks. The handshake that finds it due refetches it; the others
//!   staple the cached one meanwhile. If none can be had, the server serves without stapling.
//! * **Transport.** HTTP/1.0 POST (`application/ocsp-request`) over plain TCP, each exchange
//!   within TIMEOUTocsp. An `https://` responder is accepted in the config but counts as giving
//!   no answer.
//!
//! Called by `context::build_context` ([`install`]) and by `verify` ([`PeerCheck`]). This
//! blocks the handshake's thread on the responder, as stunnel does; the handshake deadline
//! (TIMEOUTbusy) keeps running meanwhile. Opens no listening socket.
//!
//! One job per file: `settings` (the options), `http` (the transport), `response` (building
//! requests, judging answers), `peer` (the peer checks), `staple` (our own response),
//! `ffi` (the raw calls); this file only wires them onto a context.

mod ffi;
mod http;
mod peer;
mod response;
mod settings;
mod staple;

use std::sync::Arc;

use openssl::ssl::SslContextBuilder;

use super::error::TlsSetupError;
use super::facts::ServiceFacts;
use crate::config::TlsOptions;
pub use peer::PeerCheck;
use settings::Settings;
use staple::Stapler;

/// Sets up OCSP on a service's context (see the module docs): the client's status request
/// and callback, or the server's stapling (whose first fetch happens here, blocking up to
/// TIMEOUTocsp). Server checks of client certificates are made by `verify` instead. With
/// `load_files = false` nothing is fetched.
pub fn install(
    ctx: &mut SslContextBuilder,
    opts: &TlsOptions,
    facts: &ServiceFacts<'_>,
    load_files: bool,
) -> Result<(), TlsSetupError> {
    let asks = opts.ocsp_url.is_some() || opts.ocsp_aia;
    let settings = Settings::from_options(opts, facts.ocsp_timeout);
    if facts.is_client() {
        if !asks {
            return Ok(());
        }
        if !opts.verify.any_check() {
            log_warning!(
                "Service [{}]: OCSP is configured but verifyChain and verifyPeer are off: \
                 server certificates are not checked for revocation",
                facts.name
            );
            return Ok(());
        }
        ffi::request_status(ctx).map_err(|e| TlsSetupError::new("OCSP status request", e))?;
        let check = PeerCheck { settings };
        return ctx
            .set_status_callback(move |ssl| Ok(check.check_in_status_callback(ssl)))
            .map_err(|e| TlsSetupError::new("OCSP status callback", e));
    }
    if asks && !opts.verify.any_check() {
        log_info!(
            "Service [{}]: verifyChain and verifyPeer are off: client certificates are not \
             checked for revocation",
            facts.name
        );
    }
    if !load_files {
        return Ok(());
    }
    let Some(stapler) = Stapler::for_service(opts, facts.name, &settings) else {
        return Ok(());
    };
    log_info!(
        "Service [{}]: OCSP stapling from {}",
        facts.name,
        stapler.url
    );
    stapler.refresh();
    let stapler = Arc::new(stapler);
    ctx.set_status_callback(move |ssl| match stapler.current() {
        Some(der) => ssl.set_ocsp_status(&der).map(|()| true),
        None => Ok(false),
    })
    .map_err(|e| TlsSetupError::new("OCSP stapling callback", e))
}
