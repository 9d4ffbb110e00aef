//! Stapling of our own certificate (server side): a server whose certificate names an AIA
//! responder, or whose section has `OCSP = URL`, fetches a response for it at startup,
//! caches it and staples it when a client asks. The handshake that finds it due refetches
//! it (blocking up to TIMEOUTocsp) while the others staple the cached one; with none to be
//! had the server serves without stapling. Never judges a peer.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::error::ErrorStack;
use openssl::ocsp::{OcspFlag, OcspResponse};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509VerifyResult, X509};

use super::ffi;
use super::http::http_post;
use super::response::{judge, new_request, openssl_reason, stack_of, Answer};
use super::settings::Settings;
use crate::config::url::ResponderUrl;
use crate::config::TlsOptions;

/// A stapled response without nextUpdate is refetched after this; one with nextUpdate when
/// half its remaining lifetime is gone, but at least this often.
const STAPLE_REFRESH: Duration = Duration::from_secs(3600);
/// Lower bound on the refresh interval, so a response about to expire is not refetched by
/// every handshake.
const STAPLE_MIN_REFRESH: Duration = Duration::from_secs(10);
/// After a failed fetch for stapling, the next attempt waits this long.
const STAPLE_RETRY: Duration = Duration::from_secs(60);

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
pub(super) struct Stapler {
    service: String,
    pub(super) url: ResponderUrl,
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
    /// `service` is the section name, for messages.
    pub(super) fn for_service(
        opts: &TlsOptions,
        service: &str,
        settings: &Settings,
    ) -> Option<Stapler> {
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
                service
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
            service: service.to_string(),
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
                let next = ffi::as_time(next);
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
    pub(super) fn refresh(&self) {
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
    pub(super) fn current(&self) -> Option<Vec<u8>> {
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
