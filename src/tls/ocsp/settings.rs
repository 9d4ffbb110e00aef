//! The OCSP options of one service (`OCSP`, `OCSPaia`, `OCSPflag`, `OCSPnonce`,
//! `OCSPrequire`, `TIMEOUTocsp`) as the peer checks and stapling use them, and the
//! responders a certificate's AIA names. Reads options and certificates only.

use std::time::Duration;

use openssl::ocsp::OcspFlag;
use openssl::x509::X509Ref;

use crate::config::url::ResponderUrl;
use crate::config::TlsOptions;
use crate::openssl_names::ocsp_flag_bits;

/// The OCSP options of one service, as used by both the peer checks and stapling.
#[derive(Clone)]
pub(super) struct Settings {
    pub(super) url: Option<ResponderUrl>,
    pub(super) aia: bool,
    pub(super) flags: OcspFlag,
    pub(super) nonce: bool,
    pub(super) require: bool,
    pub(super) timeout: Duration,
}

impl Settings {
    /// `timeout` is the service's `TIMEOUTocsp`.
    pub(super) fn from_options(opts: &TlsOptions, timeout: Duration) -> Settings {
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
            timeout,
        }
    }

    /// The responders of `cert`'s AIA extension that this module can ask, in order.
    pub(super) fn aia_responders(cert: &X509Ref) -> Vec<ResponderUrl> {
        cert.ocsp_responders()
            .map(|list| {
                list.iter()
                    .filter_map(|u| ResponderUrl::parse(u).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}
