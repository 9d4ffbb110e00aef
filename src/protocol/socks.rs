//! `protocol = socks` (server side): SOCKS 4, 4a and 5, CONNECT only and no
//! authentication, spoken inside the TLS session over a blocking `Channel`. The one
//! protocol that picks the far side itself: it resolves the target the client names,
//! refuses loopback targets, connects with `net::connect::connect_first` (TIMEOUTconnect,
//! `local`, the `r:` socket options) and hands the connection back as the session's far
//! side. Must not run before the handshake (nothing of it is in clear) or connect to the
//! tunnel host's own loopback services.

use std::io;

use super::hook::{Channel, Settings};
use crate::net::Stream;

/// SOCKS 4, 4a and 5 (CONNECT only, no authentication) inside the TLS session: read the
/// request, connect to the named target within TIMEOUTconnect, answer, and hand the
/// connection back as the session's far side.
pub(super) fn socks_server(
    settings: &Settings<'_>,
    channel: &mut dyn Channel,
) -> Result<Stream, String> {
    let io = |e: io::Error| format!("SOCKS: {e}");
    let mut version = [0u8; 1];
    channel.read_exact(&mut version).map_err(io)?;
    match version[0] {
        4 => socks4(settings, channel),
        5 => socks5(settings, channel),
        v => Err(format!("SOCKS: unknown version {v}")),
    }
}

fn read_until_nul(channel: &mut dyn Channel, what: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        channel
            .read_exact(&mut byte)
            .map_err(|e| format!("SOCKS: {e}"))?;
        if byte[0] == 0 {
            return Ok(bytes);
        }
        if bytes.len() >= 255 {
            return Err(format!("SOCKS: {what} too long"));
        }
        bytes.push(byte[0]);
    }
}

/// Why a SOCKS target was refused before connecting.
enum SocksRefusal {
    /// 127.0.0.0/8 or ::1: the tunnel host's own local services are not for its clients.
    Loopback(String),
    Failed(String),
}

fn connect_target(settings: &Settings<'_>, host: &str, port: u16) -> Result<Stream, SocksRefusal> {
    let endpoint = crate::net::Endpoint::Tcp {
        host: Some(host.to_string()),
        port,
    };
    let addrs = endpoint.resolve_connect().map_err(SocksRefusal::Failed)?;
    let loopback =
        |a: &crate::net::Addr| matches!(a, crate::net::Addr::Inet(ip) if ip.ip().is_loopback());
    if addrs.iter().any(loopback) {
        let family = if addrs.iter().any(|a| a.is_ipv6() && loopback(a)) {
            "IPv6"
        } else {
            "IPv4"
        };
        return Err(SocksRefusal::Loopback(format!(
            "SOCKS connection to the {family} loopback rejected"
        )));
    }
    crate::net::connect::connect_first(&addrs, &settings.connect)
        .map(|(stream, _)| stream)
        .map_err(|_| SocksRefusal::Failed(format!("SOCKS: cannot connect to {host}:{port}")))
}

fn socks4(settings: &Settings<'_>, channel: &mut dyn Channel) -> Result<Stream, String> {
    let io = |e: io::Error| format!("SOCKS4: {e}");
    let mut head = [0u8; 7]; // command, port, IPv4
    channel.read_exact(&mut head).map_err(io)?;
    let port = u16::from_be_bytes([head[1], head[2]]);
    let ip = std::net::Ipv4Addr::new(head[3], head[4], head[5], head[6]);
    read_until_nul(channel, "user id")?;
    // SOCKS 4a: 0.0.0.x (x ≠ 0) means "the host name follows".
    let host = if head[3..6] == [0, 0, 0] && head[6] != 0 {
        String::from_utf8_lossy(&read_until_nul(channel, "host name")?).into_owned()
    } else {
        ip.to_string()
    };
    let answer = |granted: bool| {
        let code = if granted { 0x5a } else { 0x5b };
        [
            0, code, head[1], head[2], head[3], head[4], head[5], head[6],
        ]
    };
    if head[0] != 1 {
        let _ = channel.write_all(&answer(false));
        return Err("SOCKS4: only CONNECT is supported".into());
    }
    match connect_target(settings, &host, port) {
        Ok(stream) => {
            channel.write_all(&answer(true)).map_err(io)?;
            Ok(stream)
        }
        Err(SocksRefusal::Loopback(e) | SocksRefusal::Failed(e)) => {
            let _ = channel.write_all(&answer(false));
            Err(e)
        }
    }
}

fn socks5(settings: &Settings<'_>, channel: &mut dyn Channel) -> Result<Stream, String> {
    let io = |e: io::Error| format!("SOCKS5: {e}");
    let mut count = [0u8; 1];
    channel.read_exact(&mut count).map_err(io)?;
    let mut methods = vec![0u8; usize::from(count[0])];
    channel.read_exact(&mut methods).map_err(io)?;
    if !methods.contains(&0) {
        let _ = channel.write_all(&[5, 0xff]);
        return Err("SOCKS5: the client offers no method without authentication".into());
    }
    channel.write_all(&[5, 0]).map_err(io)?;
    let mut head = [0u8; 4]; // version, command, reserved, address type
    channel.read_exact(&mut head).map_err(io)?;
    let host = match head[3] {
        1 => {
            let mut ip = [0u8; 4];
            channel.read_exact(&mut ip).map_err(io)?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            channel.read_exact(&mut len).map_err(io)?;
            let mut name = vec![0u8; usize::from(len[0])];
            channel.read_exact(&mut name).map_err(io)?;
            String::from_utf8_lossy(&name).into_owned()
        }
        4 => {
            let mut ip = [0u8; 16];
            channel.read_exact(&mut ip).map_err(io)?;
            std::net::Ipv6Addr::from(ip).to_string()
        }
        _ => {
            let _ = channel.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
            return Err("SOCKS5: unknown address type".into());
        }
    };
    let mut port = [0u8; 2];
    channel.read_exact(&mut port).map_err(io)?;
    let port = u16::from_be_bytes(port);
    if head[1] != 1 {
        let _ = channel.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
        return Err("SOCKS5: only CONNECT is supported".into());
    }
    match connect_target(settings, &host, port) {
        Ok(stream) => {
            // The bound address is not something clients use; zeros are allowed.
            channel
                .write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])
                .map_err(io)?;
            Ok(stream)
        }
        // Reply 2: "connection not allowed by ruleset".
        Err(SocksRefusal::Loopback(e)) => {
            let _ = channel.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
            Err(e)
        }
        Err(SocksRefusal::Failed(e)) => {
            let _ = channel.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
            Err(e)
        }
    }
}
