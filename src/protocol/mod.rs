//! `protocol = NAME`: what is said in clear before TLS starts (STARTTLS and proxies), as
//! one table of hooks per protocol: no `if protocol == …` anywhere else.
//!
//! Client side (`client = yes`), run on the far connection before the handshake:
//! `smtp`, `imap`, `pop3`, `nntp` (greeting passed to the local client, then STARTTLS),
//! `pgsql` and `ldap` (their binary StartTLS requests), `connect` (HTTP CONNECT through
//! a proxy, with Basic authentication). Server side, on the accepted connection before
//! the handshake: `smtp`, `imap`, `pop3` (rstunnel greets and offers STARTTLS; the
//! backend's own greeting is consumed once it is connected, since the client already had
//! one) and `pgsql` (SSLRequest answered `S`); after the far connection is made: `proxy`
//! (a PROXY protocol v1 header to the target). These clear-text exchanges read exactly
//! what each needs (line by line), so no TLS byte is consumed by them; they block, under
//! TIMEOUTbusy as a socket timeout. The exception is `socks` (server side): it runs inside
//! TLS, after the handshake, over a blocking `Channel` with a deadline, and opens the
//! outgoing connection itself (`socks.rs`).
//!
//! One job per file: this one holds the table and the lookup; `hook` what a hook is given;
//! `line` the line I/O the exchanges share; `mail` (smtp, pop3, imap, nntp), `binary` (pgsql, ldap), `proxy`
//! (connect, proxy) and `socks` the exchanges themselves.

mod binary;
mod hook;
mod line;
mod mail;
mod proxy;
mod socks;

use binary::{ldap_client, pgsql_client, pgsql_server};
use mail::{
    imap_client, imap_server, nntp_client, pop3_client, pop3_server, skip_imap_greeting,
    skip_pop3_greeting, skip_smtp_greeting, smtp_client, smtp_server,
};
use proxy::{http_connect, proxy_header};
use socks::socks_server;

pub use hook::{Channel, Exchange, Hook, Settings, TargetHook};

/// A protocol's name and its hooks; `None`: nothing to do at that point.
pub struct Protocol {
    pub name: &'static str,
    /// Client side, after connecting, before the TLS handshake on `far`.
    pub client_before_tls: Option<Hook>,
    /// Server side, on the accepted connection before the TLS handshake.
    pub server_before_tls: Option<Hook>,
    /// Server side, after the handshake and the far connection, before relaying.
    pub server_before_relay: Option<Hook>,
    /// Server side, after the handshake: the client names the target inside TLS (SOCKS);
    /// the hook connects there and answers. Replaces `connect`.
    pub server_chooses_target: Option<TargetHook>,
}

/// Every protocol stunnel 5.68 knows but `socks` (below: its hook has another shape). Those
/// without a hook for a side are refused for that side when the configuration is checked,
/// by `config::protocol_names` (a test below keeps its table in step with this one).
#[rustfmt::skip]
pub static PROTOCOLS: &[Protocol] = &[
    proto("cifs", None, None, None),
    proto("capwin", None, None, None),
    proto("capwinctrl", None, None, None),
    proto("connect", Some(http_connect), None, None),
    proto("imap", Some(imap_client), Some(imap_server), Some(skip_imap_greeting)),
    proto("ldap", Some(ldap_client), None, None),
    proto("nntp", Some(nntp_client), None, None),
    proto("pgsql", Some(pgsql_client), Some(pgsql_server), None),
    proto("pop3", Some(pop3_client), Some(pop3_server), Some(skip_pop3_greeting)),
    proto("proxy", None, None, Some(proxy_header)),
    proto("smtp", Some(smtp_client), Some(smtp_server), Some(skip_smtp_greeting)),
];

/// SOCKS (server side) is the one protocol that picks the target itself.
pub static SOCKS: Protocol = Protocol {
    name: "socks",
    client_before_tls: None,
    server_before_tls: None,
    server_before_relay: None,
    server_chooses_target: Some(socks_server),
};

const fn proto(
    name: &'static str,
    client: Option<Hook>,
    server_before_tls: Option<Hook>,
    server_before_relay: Option<Hook>,
) -> Protocol {
    Protocol {
        name,
        client_before_tls: client,
        server_before_tls,
        server_before_relay,
        server_chooses_target: None,
    }
}

/// Looks a protocol up by name (case-insensitive).
pub fn find(name: &str) -> Option<&'static Protocol> {
    if SOCKS.name.eq_ignore_ascii_case(name) {
        return Some(&SOCKS);
    }
    PROTOCOLS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}
#[cfg(test)]
mod tests {
    use super::line::{pair, send};
    use super::*;
    use crate::config::protocol_names::PROTOCOL_NAMES;
    use crate::protocol::Settings;

    #[test]
    fn every_protocol_of_stunnel_is_known() {
        for name in [
            "cifs",
            "capwin",
            "capwinctrl",
            "connect",
            "imap",
            "ldap",
            "nntp",
            "pgsql",
            "pop3",
            "proxy",
            "smtp",
            "socks",
        ] {
            assert!(find(name).is_some(), "{name}");
        }
        assert!(find("SMTP").is_some());
        assert!(find("http").is_none());
    }

    /// `config::protocol_names` (what the parser accepts, on which side) says what this
    /// table's hooks do: the same names, and a side is accepted where a hook speaks it.
    #[test]
    fn the_parsers_names_and_sides_match_the_hooks() {
        let ours: Vec<&Protocol> = PROTOCOLS.iter().chain([&SOCKS]).collect();
        assert_eq!(ours.len(), PROTOCOL_NAMES.len());
        for (p, names) in ours.iter().zip(PROTOCOL_NAMES) {
            let server = p.server_before_tls.is_some()
                || p.server_before_relay.is_some()
                || p.server_chooses_target.is_some();
            assert_eq!(
                (p.name, p.client_before_tls.is_some(), server),
                (names.name, names.client, names.server)
            );
        }
    }

    /// A far server that never ends its reply is cut off after MAX_REPLY_LINES lines
    /// instead of being read (and, for SMTP, kept in memory) for ever. Found while
    /// writing the fuzz targets (fuzz/, issue 8).
    #[test]
    fn endless_replies_are_refused() {
        let endless = |line: &'static str| {
            let (ours, theirs) = pair();
            let writer = std::thread::spawn(move || {
                // Stops when the negotiator gives up and the socket closes.
                while send(&theirs, line).is_ok() {}
            });
            (ours, writer)
        };
        let settings = Settings {
            host: Some("db.example:5432"),
            ..Settings::default()
        };
        let cases: [(&'static str, Hook, &'static str); 3] = [
            ("220-more\r\n", skip_smtp_greeting, "too many lines"),
            ("* OK ready\r\n", imap_client, "too many lines"),
            ("HTTP/1.1 200 OK\r\n", http_connect, "too many lines"),
        ];
        for (line, hook, expected) in cases {
            let (far, writer) = endless(line);
            let (local, _client) = pair();
            let e = hook(&Exchange {
                settings,
                local: &local,
                far: Some(&far),
            })
            .unwrap_err();
            assert!(e.contains(expected), "{line:?}: {e}");
            drop(far);
            writer.join().unwrap();
        }
    }
}
