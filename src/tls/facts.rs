//! What `tls` needs to know about a service besides its `TlsOptions`: its name (for
//! messages), its role, whether it has `redirect` targets or is an SNI virtual host, and
//! its OCSP timeout. Built by the service layer (`service::build`), so that `tls` never
//! sees the whole `ServiceOptions` (narrow views, docs/ARCHITECTURE.md). A leaf: plain
//! data, no OpenSSL.

use std::time::Duration;

/// Which end of the TLS connection the service is (`client = yes|no`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// TLS towards `connect`: sends SNI, offers a cached session, judges the server.
    Client,
    /// TLS on `accept`: presents `cert`, may ask for a client certificate.
    Server,
}

/// The service facts `tls` reads while building one context.
#[derive(Debug, Clone, Copy)]
pub struct ServiceFacts<'a> {
    /// The section name, for `Service [NAME]` messages and the session id context.
    pub name: &'a str,
    pub role: Role,
    /// `redirect` is set (server): a failed client check redirects the session instead
    /// of failing the handshake, and such a service never resumes sessions.
    pub redirect: bool,
    /// A server section with `sni = PRIMARY:PATTERN`: a virtual host of another section,
    /// which never resumes sessions either.
    pub virtual_host: bool,
    /// `TIMEOUTocsp`: one exchange with an OCSP responder.
    pub ocsp_timeout: Duration,
}

impl ServiceFacts<'_> {
    pub fn is_client(&self) -> bool {
        self.role == Role::Client
    }
}
