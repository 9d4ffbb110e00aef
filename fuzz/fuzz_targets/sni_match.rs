//! Fuzz target `sni_match`: the virtual-host matcher that runs inside OpenSSL's servername
//! callback on whatever name a client sends, where a panic aborts the whole daemon. Input:
//! `PATTERN \n NAME`, both as bytes (a name that is not UTF-8 is read lossily, as OpenSSL
//! hands it over). The answer must also agree with a plain byte-wise rule.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rstunnel_fuzz::init();
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let pattern = String::from_utf8_lossy(&data[..split]);
    let name = String::from_utf8_lossy(data.get(split + 1..).unwrap_or_default());
    let got = rstunnel::tls::sni_matches(&pattern, &name);
    let expected = match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let (n, s) = (name.as_bytes(), suffix.as_bytes());
            n.len() > s.len() + 1
                && n[n.len() - s.len() - 1] == b'.'
                && n[n.len() - s.len()..].eq_ignore_ascii_case(s)
        }
        None => pattern.as_bytes().eq_ignore_ascii_case(name.as_bytes()),
    };
    assert_eq!(got, expected, "pattern {pattern:?} name {name:?}");
});
