//! Fuzz target `socks_server`: the SOCKS 4, 4a and 5 request parser that a `protocol =
//! socks` server runs inside TLS, fed the client's bytes from memory. A request that
//! parses makes rstunnel resolve and connect to the named target, so the process first
//! moves into an empty network namespace (root needed; the target refuses to run
//! without it rather than send packets): lookups and connects then fail at once, and
//! the refusal paths are exercised too.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rstunnel::protocol::{Settings, SOCKS};

fuzz_target!(|data: &[u8]| {
    rstunnel_fuzz::init();
    assert!(
        rstunnel_fuzz::isolate_network(),
        "socks_server needs CAP_SYS_ADMIN for unshare(CLONE_NEWNET): it must not reach the network"
    );
    let hook = SOCKS
        .server_chooses_target
        .expect("SOCKS has a target hook");
    let mut settings = Settings::default();
    settings.connect.timeout = Duration::from_millis(200);
    let mut channel = rstunnel_fuzz::MemoryChannel::new(data);
    let _ = hook(&settings, &mut channel);
});
