//! `protocol = NAME` as the parser sees it: the names stunnel 5.68 knows and the sides
//! rstunnel speaks each on, for `Unsupported protocol` and the section check ("… is not
//! supported on the server side yet"). Names and sides only: the hooks that speak them are
//! the top-level `protocol` module's table, which a test there keeps in step with this one.

/// One `protocol` value and whether rstunnel speaks it as a client (`client = yes`) and as
/// a server.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolName {
    pub name: &'static str,
    pub client: bool,
    pub server: bool,
}

const fn sides(name: &'static str, client: bool, server: bool) -> ProtocolName {
    ProtocolName {
        name,
        client,
        server,
    }
}

/// Every protocol stunnel 5.68 knows, in `protocol`'s order (`socks` last).
#[rustfmt::skip]
pub static PROTOCOL_NAMES: &[ProtocolName] = &[
    sides("cifs", false, false),
    sides("capwin", false, false),
    sides("capwinctrl", false, false),
    sides("connect", true, false),
    sides("imap", true, true),
    sides("ldap", true, false),
    sides("nntp", true, false),
    sides("pgsql", true, true),
    sides("pop3", true, true),
    sides("proxy", false, true),
    sides("smtp", true, true),
    sides("socks", false, true),
];

/// Looks a protocol up by name (case-insensitive).
pub fn find(name: &str) -> Option<&'static ProtocolName> {
    PROTOCOL_NAMES
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Why a protocol cannot be used on a side, for the configuration check.
pub fn unsupported_on(protocol: &ProtocolName, client: bool) -> Option<String> {
    let spoken = if client {
        protocol.client
    } else {
        protocol.server
    };
    (!spoken).then(|| {
        format!(
            "protocol = {} is not supported {} yet",
            protocol.name,
            if client {
                "on the client side (client = yes)"
            } else {
                "on the server side"
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_without_a_hook_are_refused() {
        let smtp = find("smtp").unwrap();
        assert!(unsupported_on(smtp, true).is_none());
        assert!(unsupported_on(smtp, false).is_none());
        let nntp = find("nntp").unwrap();
        assert!(unsupported_on(nntp, false).is_some());
        let proxy = find("proxy").unwrap();
        assert!(unsupported_on(proxy, false).is_none());
        assert!(unsupported_on(proxy, true).is_some());
    }
}
