//! Fuzz target `protocol_client`: the negotiators that read what a *far* server says in
//! clear: client-side STARTTLS (smtp, imap, pop3, nntp, pgsql, ldap), HTTP CONNECT
//! through a proxy, and the server side's skipping of the backend's greeting
//! (smtp, imap, pop3) and `proxy` header. Input: byte 0 picks the hook, byte 1 the
//! options (protocolHost, Basic credentials, extra headers); the rest is the far peer's
//! bytes, then EOF. The local client is a socket pair that nobody reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rstunnel::protocol::{Exchange, Hook, Settings, PROTOCOLS};

/// Every hook that reads from the far connection, in table order.
fn far_hooks() -> Vec<Hook> {
    PROTOCOLS
        .iter()
        .flat_map(|p| [p.client_before_tls, p.server_before_relay])
        .flatten()
        .collect()
}

fn settings(flags: u8, headers: &[String]) -> Settings<'_> {
    let mut settings = Settings::default();
    if flags & 1 != 0 {
        settings.host = Some("db.example:5432");
    }
    if flags & 2 != 0 {
        settings.username = Some("user");
        settings.password = Some("secret");
    }
    if flags & 4 != 0 {
        settings.headers = headers;
    }
    settings
}

fuzz_target!(|data: &[u8]| {
    rstunnel_fuzz::init();
    let [which, flags, peer @ ..] = data else {
        return;
    };
    if peer.len() > rstunnel_fuzz::MAX_PEER_BYTES {
        return;
    }
    let hooks = far_hooks();
    let hook = hooks[usize::from(*which) % hooks.len()];
    let headers = [
        "User-Agent: rstunnel-fuzz".to_string(),
        "X-A: b".to_string(),
    ];
    let settings = settings(*flags, &headers);
    let (far, _far_peer) = rstunnel_fuzz::scripted_peer(peer);
    let (local, _local_peer) = rstunnel_fuzz::scripted_peer(b"");
    let _ = hook(&Exchange {
        settings,
        local: &local,
        far: Some(&far),
    });
});
