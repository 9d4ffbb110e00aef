//! Fuzz target `address_parse`: the address syntax of `accept`, `connect` and
//! `redirect` (`PORT`, `HOST:PORT` split at the last colon, bare IPv6, `/unix/path`,
//! service names from /etc/services), then resolution where no resolver is involved
//! (IP literals, bare ports, `*`, Unix paths) and printing of every address. The first
//! byte picks the accept (`a`) or connect reading.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rstunnel_fuzz::init();
    let Some((&side, rest)) = data.split_first() else {
        return;
    };
    let value = String::from_utf8_lossy(rest);
    rstunnel_fuzz::exercise_address(&value, side == b'a');
});
