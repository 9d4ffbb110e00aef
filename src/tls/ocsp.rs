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

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use libc::{c_int, c_uchar};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::ocsp::{
    OcspCertId, OcspCertIdRef, OcspCertStatus, OcspFlag, OcspRequest, OcspRequestRef, OcspResponse,
    OcspResponseStatus, OcspRevokedStatus,
};
use openssl::ssl::{SslContextBuilder, SslRef};
use openssl::stack::{Stack, StackRef};
use openssl::x509::store::{X509Store, X509StoreBuilder, X509StoreRef};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Ref, X509StoreContext, X509StoreContextRef, X509VerifyResult, X509};
use openssl_sys as ffi;

use super::error::TlsSetupError;
use super::names::name_line;
use crate::config::url::ResponderUrl;
use crate::config::ServiceOptions;
use crate::openssl_names::ocsp_flag_bits;

/// Slack for clock differences when checking a response's thisUpdate/nextUpdate (OpenSSL's
/// `ocsp` tool uses the same five minutes).
const VALIDITY_LEEWAY_SECS: u32 = 300;
/// A stapled response without nextUpdate is refetched after this; one with nextUpdate when
/// half its remaining lifetime is gone, but at least this often.
const STAPLE_REFRESH: Duration = Duration::from_secs(3600);
/// Lower bound on the refresh interval, so a response about to expire is not refetched by
/// every handshake.
const STAPLE_MIN_REFRESH: Duration = Duration::from_secs(10);
/// After a failed fetch for stapling, the next attempt waits this long.
const STAPLE_RETRY: Duration = Duration::from_secs(60);
/// Largest responder answer read (real ones are a few KiB).
const MAX_HTTP_RESPONSE: usize = 1 << 20;

// Not wrapped by openssl-sys; present in every OpenSSL this crate builds against.
extern "C" {
    fn OCSP_request_add1_nonce(req: *mut ffi::OCSP_REQUEST, val: *mut c_uchar, len: c_int)
        -> c_int;
    fn OCSP_check_nonce(req: *mut ffi::OCSP_REQUEST, bs: *mut ffi::OCSP_BASICRESP) -> c_int;
}

fn time_left(deadline: Instant) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
        .ok_or_else(|| "TIMEOUTocsp exceeded".to_string())
}

/// POSTs a DER request to `url` and returns the response body. Blocks for at most `timeout`
/// (resolving the name aside); the connection is closed on return.
fn http_post(url: &ResponderUrl, request: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    if url.https {
        return Err("https responders are not supported".into());
    }
    let deadline = Instant::now() + timeout;
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", url.host))?;
    let mut last_error = format!("{}: no address", url.host);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, time_left(deadline)?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = format!("connect {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_error)?;
    let head = format!(
        "POST {} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/ocsp-request\r\n\
         Accept: application/ocsp-response\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host_header(),
        request.len()
    );
    let mut message = head.into_bytes();
    message.extend_from_slice(request);
    stream
        .set_write_timeout(Some(time_left(deadline)?))
        .and_then(|()| stream.write_all(&message))
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(body) = complete_body(&received)? {
            return Ok(body);
        }
        stream
            .set_read_timeout(Some(time_left(deadline)?))
            .map_err(|e| format!("reading the response: {e}"))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if received.len() + n > MAX_HTTP_RESPONSE => {
                return Err("response too large".into())
            }
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
    parse_http_response(&received, true)?.ok_or_else(|| "truncated HTTP response".into())
}

/// The body once `received` holds a whole response with a Content-Length; `None` while more
/// is needed (or the length is only known at EOF).
fn complete_body(received: &[u8]) -> Result<Option<Vec<u8>>, String> {
    parse_http_response(received, false)
}

/// Parses an HTTP/1.x response: a 200 status, headers, then the body (by Content-Length, or
/// everything until EOF when `at_eof`). `Ok(None)`: incomplete.
fn parse_http_response(data: &[u8], at_eof: bool) -> Result<Option<Vec<u8>>, String> {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&data[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let version_ok = words.next().is_some_and(|v| v.starts_with("HTTP/1."));
    let code = words.next().and_then(|c| c.parse::<u16>().ok());
    match (version_ok, code) {
        (true, Some(200)) => {}
        (true, Some(_)) => return Err(format!("responder answered \"{status_line}\"")),
        _ => return Err("not an HTTP response".into()),
    }
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| String::from("bad Content-Length"))?;
    let body = &data[end + 4..];
    match length {
        Some(n) if body.len() >= n => Ok(Some(body[..n].to_vec())),
        Some(_) if at_eof => Err("truncated HTTP response".into()),
        Some(_) => Ok(None),
        None if at_eof => Ok(Some(body.to_vec())),
        None => Ok(None),
    }
}

/// What a responder (or a stapled response) said about one certificate.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Good,
    /// Revoked, with the reason and time.
    Revoked(String),
    /// No conclusive answer, and why.
    Unusable(String),
}

fn reason_name(reason: OcspRevokedStatus) -> &'static str {
    match reason {
        OcspRevokedStatus::KEY_COMPROMISE => "keyCompromise",
        OcspRevokedStatus::CA_COMPROMISE => "cACompromise",
        OcspRevokedStatus::AFFILIATION_CHANGED => "affiliationChanged",
        OcspRevokedStatus::STATUS_SUPERSEDED => "superseded",
        OcspRevokedStatus::STATUS_CESSATION_OF_OPERATION => "cessationOfOperation",
        OcspRevokedStatus::STATUS_CERTIFICATE_HOLD => "certificateHold",
        OcspRevokedStatus::REMOVE_FROM_CRL => "removeFromCRL",
        _ => "unspecified",
    }
}

fn response_status_name(status: OcspResponseStatus) -> &'static str {
    match status {
        OcspResponseStatus::MALFORMED_REQUEST => "malformedRequest",
        OcspResponseStatus::INTERNAL_ERROR => "internalError",
        OcspResponseStatus::TRY_LATER => "tryLater",
        OcspResponseStatus::SIG_REQUIRED => "sigRequired",
        OcspResponseStatus::UNAUTHORIZED => "unauthorized",
        _ => "unknown response status",
    }
}

fn openssl_reason(e: &ErrorStack) -> String {
    e.errors()
        .iter()
        .filter_map(|e| e.reason())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Checks a DER response for `id`: successful, the nonce of `request` (if given) echoed, the
/// signature by a responder `trust` accepts (with `untrusted` as extra certificates), a status
/// for `id` inside its validity window.
fn judge(
    der: &[u8],
    id: &OcspCertIdRef,
    request: Option<&OcspRequestRef>,
    untrusted: &StackRef<X509>,
    trust: &X509StoreRef,
    flags: OcspFlag,
) -> Answer {
    let unusable = |why: String| Answer::Unusable(why);
    let response = match OcspResponse::from_der(der) {
        Ok(r) => r,
        Err(_) => return unusable("not an OCSP response".into()),
    };
    if response.status() != OcspResponseStatus::SUCCESSFUL {
        return unusable(format!(
            "responder error: {}",
            response_status_name(response.status())
        ));
    }
    let basic = match response.basic() {
        Ok(b) => b,
        Err(e) => return unusable(format!("no basic response: {}", openssl_reason(&e))),
    };
    if let Some(request) = request {
        // SAFETY: both pointers are live objects owned by the caller and `basic`; the call
        // only reads them.
        let nonce = unsafe { OCSP_check_nonce(request.as_ptr(), basic.as_ptr()) };
        match nonce {
            1 => {}
            -1 => return unusable("no nonce in the response (OCSPnonce = yes)".into()),
            _ => return unusable("nonce mismatch".into()),
        }
    }
    if let Err(e) = basic.verify(untrusted, trust, flags) {
        return unusable(format!(
            "response verification failed: {}",
            openssl_reason(&e)
        ));
    }
    let Some(status) = basic.find_status(id) else {
        return unusable("no status for the certificate in the response".into());
    };
    if status.check_validity(VALIDITY_LEEWAY_SECS, None).is_err() {
        return unusable("response outside its validity period".into());
    }
    match status.status {
        OcspCertStatus::GOOD => Answer::Good,
        OcspCertStatus::REVOKED => Answer::Revoked(format!(
            "reason {}, revoked {}",
            reason_name(status.reason),
            status
                .revocation_time
                .map_or_else(|| "at an unknown time".into(), |t| format!("on {t}"))
        )),
        _ => unusable("certificate status unknown to the responder".into()),
    }
}

/// A new request for `cert` (issued by `issuer`), with a nonce if asked, and the id to find
/// its answer by.
fn new_request(
    cert: &X509Ref,
    issuer: &X509Ref,
    nonce: bool,
) -> Result<(OcspRequest, OcspCertId), ErrorStack> {
    let mut request = OcspRequest::new()?;
    request.add_id(OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer)?)?;
    if nonce {
        // SAFETY: a live request; a null value with a non-positive length makes OpenSSL
        // generate a random 16-byte nonce.
        if unsafe { OCSP_request_add1_nonce(request.as_ptr(), std::ptr::null_mut(), -1) } != 1 {
            return Err(ErrorStack::get());
        }
    }
    let id = OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer)?;
    Ok((request, id))
}

/// The OCSP options of one service, as used by both the peer checks and stapling.
#[derive(Clone)]
struct Settings {
    url: Option<ResponderUrl>,
    aia: bool,
    flags: OcspFlag,
    nonce: bool,
    require: bool,
    timeout: Duration,
}

impl Settings {
    fn from_options(opts: &ServiceOptions) -> Settings {
        Settings {
            // The config checked the URL when it was read.
            url: opts
                .ocsp_url
                .as_deref()
                .and_then(|u| ResponderUrl::parse(u).ok()),
            aia: opts.ocsp_aia,
            flags: ocsp_flag_bits(&opts.ocsp_flags),
            nonce: opts.ocsp_nonce,
            require: opts.ocsp_require,
            timeout: opts.timeouts.ocsp,
        }
    }

    /// The responders of `cert`'s AIA extension that this module can ask, in order.
    fn aia_responders(cert: &X509Ref) -> Vec<ResponderUrl> {
        cert.ocsp_responders()
            .map(|list| {
                list.iter()
                    .filter_map(|u| ResponderUrl::parse(u).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether a peer may go on, and if not, the verification error to report.
enum Verdict {
    Accept,
    Reject(X509VerifyResult),
}

/// Revocation checks of a peer's certificates (see the module docs).
pub struct PeerCheck {
    settings: Settings,
}

impl PeerCheck {
    /// For a server section: checks of client certificates in the verify callback, when a
    /// responder is configured and the chain is verified at all.
    pub fn for_client_certificates(opts: &ServiceOptions) -> Option<PeerCheck> {
        let asks = opts.ocsp_url.is_some() || opts.ocsp_aia;
        (!opts.client && asks && opts.verify.any_check()).then(|| PeerCheck {
            settings: Settings::from_options(opts),
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
    fn check_in_status_callback(&self, ssl: &SslRef) -> bool {
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
                Verdict::Reject(verify_error(ffi::X509_V_ERR_CERT_REVOKED))
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

fn verify_error(code: c_int) -> X509VerifyResult {
    // SAFETY: a verify result is a plain code; OpenSSL prints unknown ones as such.
    unsafe { X509VerifyResult::from_raw(code) }
}

fn stack_of(certs: &[X509]) -> Result<Stack<X509>, ErrorStack> {
    let mut stack = Stack::new()?;
    for cert in certs {
        stack.push(cert.clone())?;
    }
    Ok(stack)
}

/// An issuer of `cert` among the certificates the peer sent and the trusted ones.
fn find_issuer(cert: &X509Ref, untrusted: &StackRef<X509>, trust: &X509StoreRef) -> Option<X509> {
    untrusted
        .iter()
        .map(X509Ref::to_owned)
        .chain(super::compat::store_certificates(trust))
        .find(|candidate| candidate.issued(cert) == X509VerifyResult::OK)
}

/// The cached stapled response of a server.
struct Staple {
    der: Option<Vec<u8>>,
    /// Not stapled from then on (its nextUpdate); `None`: no nextUpdate in the response.
    expires: Option<Instant>,
    /// When to fetch again.
    refresh_at: Instant,
    /// The last fetch failed (logged once per streak of failures).
    failing: bool,
}

/// Server side: fetches, caches and staples the response for our own certificate.
struct Stapler {
    service: String,
    url: ResponderUrl,
    cert: X509,
    issuer: X509,
    /// Our chain (without the certificate itself), trusted for checking our own responses:
    /// they must be signed by our issuer or a responder it delegated to.
    trust: X509Store,
    chain: Vec<X509>,
    timeout: Duration,
    cache: Mutex<Staple>,
    /// Held by the one handshake that refetches; the others staple the cached response.
    fetching: Mutex<()>,
}

impl Stapler {
    /// A stapler for a server section, when its certificate names a responder (or `OCSP =`
    /// does) and its issuer is known (cert file chain or CAfile). Reads files; no network.
    fn for_service(opts: &ServiceOptions, settings: &Settings) -> Option<Stapler> {
        let cert_file = opts.cert.as_ref()?;
        let pem = std::fs::read(cert_file).ok()?;
        let mut certs = X509::stack_from_pem(&pem).ok()?.into_iter();
        let cert = certs.next()?;
        let chain: Vec<X509> = certs.collect();
        let url = match &settings.url {
            Some(url) => url.clone(),
            None => Settings::aia_responders(&cert).into_iter().next()?,
        };
        let from_ca_file = opts
            .ca_file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|pem| X509::stack_from_pem(&pem).ok())
            .unwrap_or_default();
        let Some(issuer) = chain
            .iter()
            .chain(&from_ca_file)
            .find(|c| c.issued(&cert) == X509VerifyResult::OK)
            .cloned()
        else {
            log_warning!(
                "Service [{}]: OCSP stapling off: the issuer of the certificate is neither \
                 in the cert file nor in CAfile",
                opts.name
            );
            return None;
        };
        let trust = (|| {
            let mut b = X509StoreBuilder::new()?;
            b.add_cert(issuer.clone())?;
            let issuer_der = issuer.to_der()?;
            for c in &chain {
                if c.to_der()? != issuer_der {
                    b.add_cert(c.clone())?;
                }
            }
            // Our issuer need not be a root: trust it as it is.
            b.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
            Ok::<_, ErrorStack>(b.build())
        })()
        .ok()?;
        Some(Stapler {
            service: opts.name.clone(),
            url,
            cert,
            issuer,
            trust,
            chain,
            timeout: settings.timeout,
            cache: Mutex::new(Staple {
                der: None,
                expires: None,
                refresh_at: Instant::now(),
                failing: false,
            }),
            fetching: Mutex::new(()),
        })
    }

    /// One exchange with the responder; the response must be valid for our certificate.
    /// Returns it with how long it stays valid (`None`: no nextUpdate) and the status.
    fn fetch(&self) -> Result<(Vec<u8>, Option<Duration>, &'static str), String> {
        let reason = |e: ErrorStack| openssl_reason(&e);
        let (request, id) = new_request(&self.cert, &self.issuer, false).map_err(reason)?;
        let body = http_post(&self.url, &request.to_der().map_err(reason)?, self.timeout)?;
        let untrusted = stack_of(&self.chain).map_err(reason)?;
        let status = match judge(&body, &id, None, &untrusted, &self.trust, OcspFlag::empty()) {
            Answer::Good => "good",
            Answer::Revoked(_) => "revoked",
            Answer::Unusable(why) => return Err(why),
        };
        let response = OcspResponse::from_der(&body).map_err(reason)?;
        let basic = response.basic().map_err(reason)?;
        let single = basic
            .find_status(&id)
            .ok_or("no status for the certificate")?;
        let valid_for = match single.next_update() {
            None => None,
            Some(next) => {
                // SAFETY: ASN1_GENERALIZEDTIME and ASN1_TIME are the same C type
                // (asn1_string_st); ASN1_TIME_diff accepts either form.
                let next = unsafe { Asn1TimeRef::from_ptr(next.as_ptr().cast()) };
                let diff = Asn1Time::days_from_now(0)
                    .and_then(|now| now.diff(next))
                    .map_err(reason)?;
                let secs = i64::from(diff.days) * 86400 + i64::from(diff.secs);
                Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
            }
        };
        Ok((body, valid_for, status))
    }

    /// Fetches now and updates the cache; logs the first failure of a streak at LOG4.
    fn refresh(&self) {
        let result = self.fetch();
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((der, valid_for, status)) => {
                let refresh_in = valid_for
                    .map_or(STAPLE_REFRESH, |v| (v / 2).min(STAPLE_REFRESH))
                    .max(STAPLE_MIN_REFRESH);
                let line = format!(
                    "Service [{}]: OCSP stapling: response from {} (certificate {status})",
                    self.service, self.url
                );
                if cache.failing || status != "good" {
                    log_notice!("{line}");
                } else {
                    log_info!("{line}");
                }
                *cache = Staple {
                    der: Some(der),
                    expires: valid_for.map(|v| now + v),
                    refresh_at: now + refresh_in,
                    failing: false,
                };
            }
            Err(why) => {
                if cache.failing {
                    log_debug!(
                        "Service [{}]: OCSP stapling: {}: {why}",
                        self.service,
                        self.url
                    );
                } else {
                    log_warning!(
                        "Service [{}]: OCSP stapling: no response from {}: {why}; serving \
                         without stapling until a fetch succeeds",
                        self.service,
                        self.url
                    );
                }
                cache.failing = true;
                cache.refresh_at = now + STAPLE_RETRY;
            }
        }
    }

    /// The response to staple now, refetching it first when due (unless another handshake
    /// is already doing so). Blocks up to TIMEOUTocsp when it refetches.
    fn current(&self) -> Option<Vec<u8>> {
        let due = |s: &Self| {
            Instant::now() >= s.cache.lock().unwrap_or_else(|e| e.into_inner()).refresh_at
        };
        if due(self) {
            if let Ok(_guard) = self.fetching.try_lock() {
                // Another handshake may have refreshed it between the check and the lock.
                if due(self) {
                    self.refresh();
                }
            }
        }
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match (&cache.der, cache.expires) {
            (Some(der), Some(expires)) if Instant::now() < expires => Some(der.clone()),
            (Some(der), None) => Some(der.clone()),
            _ => None,
        }
    }
}

/// Sets up OCSP on a service's context (see the module docs): the client's status request
/// and callback, or the server's stapling (whose first fetch happens here, blocking up to
/// TIMEOUTocsp). Server checks of client certificates are made by `verify` instead. With
/// `load_files = false` nothing is fetched.
pub fn install(
    ctx: &mut SslContextBuilder,
    opts: &ServiceOptions,
    load_files: bool,
) -> Result<(), TlsSetupError> {
    let asks = opts.ocsp_url.is_some() || opts.ocsp_aia;
    let settings = Settings::from_options(opts);
    if opts.client {
        if !asks {
            return Ok(());
        }
        if !opts.verify.any_check() {
            log_warning!(
                "Service [{}]: OCSP is configured but verifyChain and verifyPeer are off: \
                 server certificates are not checked for revocation",
                opts.name
            );
            return Ok(());
        }
        // SAFETY: SSL_CTX_set_tlsext_status_type (a macro over SSL_CTX_ctrl) on a live
        // context; connections made from it then send status_request.
        let set = unsafe {
            ffi::SSL_CTX_ctrl(
                ctx.as_ptr(),
                ffi::SSL_CTRL_SET_TLSEXT_STATUS_REQ_TYPE,
                ffi::TLSEXT_STATUSTYPE_ocsp as libc::c_long,
                std::ptr::null_mut(),
            )
        };
        if set != 1 {
            return Err(TlsSetupError::new("OCSP status request", ErrorStack::get()));
        }
        let check = PeerCheck { settings };
        return ctx
            .set_status_callback(move |ssl| Ok(check.check_in_status_callback(ssl)))
            .map_err(|e| TlsSetupError::new("OCSP status callback", e));
    }
    if asks && !opts.verify.any_check() {
        log_info!(
            "Service [{}]: verifyChain and verifyPeer are off: client certificates are not \
             checked for revocation",
            opts.name
        );
    }
    if !load_files {
        return Ok(());
    }
    let Some(stapler) = Stapler::for_service(opts, &settings) else {
        return Ok(());
    };
    log_info!(
        "Service [{}]: OCSP stapling from {}",
        opts.name,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn http_responses() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(parse_http_response(ok, false), Ok(Some(b"abc".to_vec())));
        let partial = b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nab";
        assert_eq!(parse_http_response(partial, false), Ok(None));
        assert!(parse_http_response(partial, true).is_err());
        let no_length = b"HTTP/1.1 200 OK\r\n\r\nxyz";
        assert_eq!(parse_http_response(no_length, false), Ok(None));
        assert_eq!(
            parse_http_response(no_length, true),
            Ok(Some(b"xyz".to_vec()))
        );
        assert_eq!(parse_http_response(b"HTTP/1.0 200", true), Ok(None));
        let err = parse_http_response(b"HTTP/1.0 404 Not Found\r\n\r\n", true).unwrap_err();
        assert!(err.contains("404"), "{err}");
        assert!(parse_http_response(b"SSH-2.0\r\n\r\n", true).is_err());
    }

    /// A one-shot HTTP server on loopback that answers with `reply` after reading the request.
    fn serve_once(reply: &'static [u8]) -> (ResponderUrl, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            // The request is small: read until its 4-byte body arrived.
            while !got.ends_with(b"\r\n\r\nDER!") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(reply);
            got
        });
        let url = ResponderUrl::parse(&format!("http://127.0.0.1:{port}/ocsp")).unwrap();
        (url, t)
    }

    #[test]
    fn http_post_sends_a_request_and_reads_the_body() {
        let (url, server) = serve_once(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nRESP");
        let body = http_post(&url, b"DER!", Duration::from_secs(5)).unwrap();
        assert_eq!(body, b"RESP");
        let request = String::from_utf8_lossy(&server.join().unwrap()).into_owned();
        assert!(request.starts_with("POST /ocsp HTTP/1.0\r\n"), "{request}");
        assert!(request.contains("Content-Type: application/ocsp-request\r\n"));
        assert!(request.contains("Content-Length: 4\r\n"));
        assert!(request.contains(&format!("Host: 127.0.0.1:{}\r\n", url.port)));
    }

    #[test]
    fn http_post_errors() {
        let (url, server) = serve_once(b"HTTP/1.0 500 Internal Server Error\r\n\r\n");
        let err = http_post(&url, b"DER!", Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("500"), "{err}");
        server.join().unwrap();
        // Nobody listening.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = ResponderUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        assert!(http_post(&url, b"x", Duration::from_secs(2))
            .unwrap_err()
            .starts_with("connect"));
        let url = ResponderUrl::parse("https://127.0.0.1/").unwrap();
        assert!(http_post(&url, b"x", Duration::from_secs(2))
            .unwrap_err()
            .contains("https"));
    }

    #[test]
    fn http_post_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = ResponderUrl::parse(&format!(
            "http://127.0.0.1:{}/",
            listener.local_addr().unwrap().port()
        ))
        .unwrap();
        let started = Instant::now();
        // Accepted by the kernel's backlog, never answered.
        let err = http_post(&url, b"x", Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        drop(listener);
    }

    #[test]
    fn garbage_is_not_a_response() {
        let store = X509StoreBuilder::new().unwrap().build();
        let empty = Stack::<X509>::new().unwrap();
        // Any certificate id works for this: the parse fails first.
        let key = openssl::pkey::PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_pubkey(&key).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let id = OcspCertId::from_cert(MessageDigest::sha1(), &cert, &cert).unwrap();
        assert_eq!(
            judge(b"nope", &id, None, &empty, &store, OcspFlag::empty()),
            Answer::Unusable("not an OCSP response".into())
        );
        let try_later = OcspResponse::create(OcspResponseStatus::TRY_LATER, None)
            .unwrap()
            .to_der()
            .unwrap();
        assert_eq!(
            judge(&try_later, &id, None, &empty, &store, OcspFlag::empty()),
            Answer::Unusable("responder error: tryLater".into())
        );
    }
}
