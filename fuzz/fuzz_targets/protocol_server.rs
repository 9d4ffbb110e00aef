//! Fuzz target `protocol_server`: the server-side STARTTLS negotiators (smtp, imap, pop3,
//! pgsql) reading what an accepted *client* says before TLS. Input: byte 0 picks the
//! hook, byte 1 bit 0 sets protocolHost (the greeting name); the rest is the client's
//! bytes, then EOF. There is no far connection yet at that point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rstunnel::protocol::{Exchange, Hook, Settings, PROTOCOLS};

fn server_hooks() -> Vec<Hook> {
    PROTOCOLS
        .iter()
        .filter_map(|p| p.server_before_tls)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    rstunnel_fuzz::init();
    let [which, flags, peer @ ..] = data else {
        return;
    };
    if peer.len() > rstunnel_fuzz::MAX_PEER_BYTES {
        return;
    }
    let hooks = server_hooks();
    let hook = hooks[usize::from(*which) % hooks.len()];
    let mut settings = Settings::default();
    if flags & 1 != 0 {
        settings.host = Some("mail.example");
    }
    let (local, _client) = rstunnel_fuzz::scripted_peer(peer);
    let _ = hook(&Exchange {
        settings,
        local: &local,
        far: None,
    });
});
