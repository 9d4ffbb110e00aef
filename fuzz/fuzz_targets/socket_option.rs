//! Fuzz target `socket_option`: `socket = a|l|r:OPTION=VALUE[:VALUE]` parsed, and every
//! option that parses set on fresh IPv4, IPv6 and Unix stream sockets as the runtime
//! does (a failing setsockopt is an answer, not a bug). The process runs in its own
//! network namespace when allowed, so SO_BINDTODEVICE and friends touch nothing shared.
#![no_main]

use std::os::fd::AsRawFd;

use libfuzzer_sys::fuzz_target;
use rstunnel::config::sockopt;
use rstunnel::net::sockopt::apply_all;

fuzz_target!(|data: &[u8]| {
    rstunnel_fuzz::init();
    rstunnel_fuzz::isolate_network();
    let text = String::from_utf8_lossy(data);
    let Ok(option) = sockopt::parse(&text) else {
        return;
    };
    let tcp4 = std::net::TcpListener::bind("0.0.0.0:0").ok();
    let tcp6 = std::net::TcpListener::bind("[::]:0").ok();
    let (unix, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    for fd in tcp4
        .iter()
        .map(AsRawFd::as_raw_fd)
        .chain(tcp6.iter().map(AsRawFd::as_raw_fd))
        .chain([unix.as_raw_fd()])
    {
        let _ = option.apply(fd);
        apply_all(fd, std::slice::from_ref(&option), option.which);
    }
});
