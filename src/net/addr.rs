//! Address values of `accept`, `connect` and `redirect`: `PORT`, `HOST:PORT` split at the
//! last `:` (so `::1:443` is IPv6 loopback, without brackets), `/path` for a Unix socket,
//! and service names for ports. Resolution uses the system resolver.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address; `host: None` means a bare port.
    Tcp { host: Option<String>, port: u16 },
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

/// The longest path a Unix socket address can hold (`sun_path` is 108 bytes with the NUL).
const SUN_PATH_MAX: usize = 107;

impl Endpoint {
    /// Parses an address value. The port may be a number or an /etc/services name.
    pub fn parse(value: &str) -> Result<Endpoint, String> {
        if value.starts_with('/') {
            if value.len() > SUN_PATH_MAX {
                return Err(format!("Unix socket path is too long: {value}"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(value)));
        }
        let (host, port) = match value.rsplit_once(':') {
            Some((host, port)) => (Some(host), port),
            None => (None, value),
        };
        if host == Some("") {
            return Err(format!("Empty host name in \"{value}\""));
        }
        Ok(Endpoint::Tcp {
            host: host.map(str::to_string),
            port: port_number(port)?,
        })
    }

    /// Addresses to listen on: a bare port listens on every IPv4 address (as stunnel
    /// does on Linux); `*` is the same.
    pub fn resolve_accept(&self) -> Result<Vec<Addr>, String> {
        let any = |port| {
            Ok(vec![Addr::Inet(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port,
            ))])
        };
        match self {
            Endpoint::Unix(path) => Ok(vec![Addr::Unix(path.clone())]),
            Endpoint::Tcp { host: None, port } => any(*port),
            Endpoint::Tcp {
                host: Some(host),
                port,
            } if host == "*" => any(*port),
            Endpoint::Tcp {
                host: Some(host),
                port,
            } => resolve(host, *port),
        }
    }

    /// Addresses to connect to, in the resolver's order: a bare port means localhost,
    /// `::1` first, then `127.0.0.1`.
    pub fn resolve_connect(&self) -> Result<Vec<Addr>, String> {
        match self {
            Endpoint::Unix(path) => Ok(vec![Addr::Unix(path.clone())]),
            Endpoint::Tcp { host: None, port } => Ok(vec![
                Addr::Inet(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), *port)),
                Addr::Inet(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *port)),
            ]),
            Endpoint::Tcp {
                host: Some(host),
                port,
            } => resolve(host, *port),
        }
    }

    /// The host part, for a client's default SNI name.
    pub fn host(&self) -> Option<&str> {
        match self {
            Endpoint::Tcp { host, .. } => host.as_deref(),
            Endpoint::Unix(_) => None,
        }
    }
}

fn resolve(host: &str, port: u16) -> Result<Vec<Addr>, String> {
    let addrs: Vec<Addr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("Error resolving \"{host}\": {e}"))?
        .map(Addr::Inet)
        .collect();
    if addrs.is_empty() {
        return Err(format!("Error resolving \"{host}\": no address"));
    }
    Ok(addrs)
}

/// A port number, or a TCP service name looked up in /etc/services.
fn port_number(port: &str) -> Result<u16, String> {
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        return port
            .parse::<u16>()
            .map_err(|_| format!("Invalid port number \"{port}\""));
    }
    let name =
        std::ffi::CString::new(port).map_err(|_| format!("Unknown TCP service \"{port}\""))?;
    // SAFETY: getservbyname reads two NUL-terminated strings; the result points into
    // libc's static storage and is read at once, before any other call could reuse it.
    let entry = unsafe { libc::getservbyname(name.as_ptr(), c"tcp".as_ptr()) };
    if entry.is_null() {
        return Err(format!("Unknown TCP service \"{port}\""));
    }
    // SAFETY: non-null entry from getservbyname; s_port is in network byte order.
    let raw = unsafe { (*entry).s_port };
    Ok(u16::from_be(raw as u16))
}

/// A resolved address: an IP socket address or a Unix-domain socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl Addr {
    pub fn is_ipv6(&self) -> bool {
        matches!(self, Addr::Inet(SocketAddr::V6(_)))
    }
}

impl std::fmt::Display for Addr {
    /// As stunnel logs it: IPv6 without brackets, a Unix socket as `localhost:/path`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Inet(addr) => write!(f, "{}", display_addr(addr)),
            Addr::Unix(path) => write!(f, "localhost:{}", path.display()),
        }
    }
}

/// An address as stunnel logs it: IPv6 without brackets (`::1:18080`).
pub fn display_addr(addr: &SocketAddr) -> String {
    format!("{}:{}", addr.ip(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: Option<&str>, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.map(str::to_string),
            port,
        }
    }

    #[test]
    fn bare_port_and_host_port() {
        assert_eq!(Endpoint::parse("60514"), Ok(tcp(None, 60514)));
        assert_eq!(
            Endpoint::parse("127.0.0.1:61514"),
            Ok(tcp(Some("127.0.0.1"), 61514))
        );
        assert_eq!(
            Endpoint::parse("example.org:443"),
            Ok(tcp(Some("example.org"), 443))
        );
    }

    #[test]
    fn ipv6_without_brackets_splits_at_the_last_colon() {
        assert_eq!(Endpoint::parse(":::443"), Ok(tcp(Some("::"), 443)));
        assert_eq!(Endpoint::parse("::1:443"), Ok(tcp(Some("::1"), 443)));
        let addrs = tcp(Some("::1"), 443).resolve_connect().unwrap();
        assert_eq!(addrs, vec![Addr::Inet("[::1]:443".parse().unwrap())]);
    }

    #[test]
    fn brackets_are_not_supported_like_stunnel() {
        let ep = Endpoint::parse("[::1]:443").unwrap();
        assert!(ep.resolve_connect().is_err());
    }

    #[test]
    fn empty_host_is_an_error() {
        assert!(Endpoint::parse(":443").is_err());
    }

    #[test]
    fn service_names_are_looked_up() {
        if std::path::Path::new("/etc/services").exists() {
            assert_eq!(
                Endpoint::parse("localhost:https"),
                Ok(tcp(Some("localhost"), 443))
            );
        }
        assert_eq!(
            Endpoint::parse("__PORT_SMTP__"),
            Err("Unknown TCP service \"__PORT_SMTP__\"".into())
        );
    }

    #[test]
    fn bare_port_connects_to_localhost_v6_then_v4() {
        let addrs = tcp(None, 61514).resolve_connect().unwrap();
        assert_eq!(
            addrs,
            vec![
                Addr::Inet("[::1]:61514".parse().unwrap()),
                Addr::Inet("127.0.0.1:61514".parse().unwrap())
            ]
        );
    }

    #[test]
    fn bare_port_accepts_on_all_ipv4() {
        let addrs = tcp(None, 60514).resolve_accept().unwrap();
        assert_eq!(addrs, vec![Addr::Inet("0.0.0.0:60514".parse().unwrap())]);
    }

    #[test]
    fn unix_paths() {
        assert_eq!(
            Endpoint::parse("/run/x.sock"),
            Ok(Endpoint::Unix("/run/x.sock".into()))
        );
        assert!(Endpoint::parse(&format!("/{}", "a".repeat(200))).is_err());
    }

    #[test]
    fn display_has_no_brackets() {
        assert_eq!(display_addr(&"[::1]:18080".parse().unwrap()), "::1:18080");
        assert_eq!(display_addr(&"127.0.0.1:5".parse().unwrap()), "127.0.0.1:5");
    }
}
