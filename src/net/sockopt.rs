//! `socket = a|l|r:OPTION=VALUE[:VALUE2]`: socket options for the listening socket (`a`),
//! accepted connections (`l`, local) and outgoing connections (`r`, remote), with
//! stunnel's defaults `a:SO_REUSEADDR=yes`, `l:TCP_NODELAY=yes`, `r:TCP_NODELAY=yes`.
//! Parses values (for the config table) and applies them with setsockopt; nothing else.

use std::io;
use std::os::fd::RawFd;

/// Which sockets an option is for (the letter before the colon; case-sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Accept,
    Local,
    Remote,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(libc::c_int),
    Linger { on: bool, seconds: libc::c_int },
    Time { seconds: i64, micros: i64 },
    Text(String),
}

/// One parsed `socket` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOption {
    pub which: Which,
    pub name: &'static str,
    level: libc::c_int,
    optname: libc::c_int,
    pub value: Value,
}

#[derive(Clone, Copy)]
enum Kind {
    Flag,
    Int,
    Linger,
    Time,
    Text,
}

/// The options stunnel knows (names are case-sensitive, as in stunnel).
const TABLE: &[(&str, libc::c_int, libc::c_int, Kind)] = &[
    ("SO_DEBUG", libc::SOL_SOCKET, libc::SO_DEBUG, Kind::Flag),
    (
        "SO_DONTROUTE",
        libc::SOL_SOCKET,
        libc::SO_DONTROUTE,
        Kind::Flag,
    ),
    (
        "SO_KEEPALIVE",
        libc::SOL_SOCKET,
        libc::SO_KEEPALIVE,
        Kind::Flag,
    ),
    ("SO_LINGER", libc::SOL_SOCKET, libc::SO_LINGER, Kind::Linger),
    (
        "SO_OOBINLINE",
        libc::SOL_SOCKET,
        libc::SO_OOBINLINE,
        Kind::Flag,
    ),
    ("SO_RCVBUF", libc::SOL_SOCKET, libc::SO_RCVBUF, Kind::Int),
    ("SO_SNDBUF", libc::SOL_SOCKET, libc::SO_SNDBUF, Kind::Int),
    (
        "SO_RCVLOWAT",
        libc::SOL_SOCKET,
        libc::SO_RCVLOWAT,
        Kind::Int,
    ),
    (
        "SO_SNDLOWAT",
        libc::SOL_SOCKET,
        libc::SO_SNDLOWAT,
        Kind::Int,
    ),
    (
        "SO_RCVTIMEO",
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        Kind::Time,
    ),
    (
        "SO_SNDTIMEO",
        libc::SOL_SOCKET,
        libc::SO_SNDTIMEO,
        Kind::Time,
    ),
    (
        "SO_REUSEADDR",
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        Kind::Flag,
    ),
    (
        "SO_BINDTODEVICE",
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        Kind::Text,
    ),
    (
        "TCP_KEEPCNT",
        libc::IPPROTO_TCP,
        libc::TCP_KEEPCNT,
        Kind::Int,
    ),
    (
        "TCP_KEEPIDLE",
        libc::IPPROTO_TCP,
        libc::TCP_KEEPIDLE,
        Kind::Int,
    ),
    (
        "TCP_KEEPINTVL",
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        Kind::Int,
    ),
    ("IP_TOS", libc::IPPROTO_IP, libc::IP_TOS, Kind::Int),
    ("IP_TTL", libc::IPPROTO_IP, libc::IP_TTL, Kind::Int),
    (
        "TCP_NODELAY",
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        Kind::Flag,
    ),
    (
        "IP_FREEBIND",
        libc::IPPROTO_IP,
        libc::IP_FREEBIND,
        Kind::Flag,
    ),
    (
        "IPV6_V6ONLY",
        libc::IPPROTO_IPV6,
        libc::IPV6_V6ONLY,
        Kind::Flag,
    ),
];

const ILLEGAL: &str = "Illegal socket option";

fn int(text: &str) -> Result<libc::c_int, String> {
    crate::config::values::integer(text)
        .and_then(|n| libc::c_int::try_from(n).ok())
        .ok_or_else(|| ILLEGAL.to_string())
}

fn flag(text: &str) -> Result<libc::c_int, String> {
    match text {
        "1" => Ok(1),
        "0" => Ok(0),
        _ if text.eq_ignore_ascii_case("yes") => Ok(1),
        _ if text.eq_ignore_ascii_case("no") => Ok(0),
        _ => Err(ILLEGAL.into()),
    }
}

/// Parses one `socket` value, e.g. `r:TCP_KEEPIDLE=60` or `l:SO_LINGER=1:0`.
pub fn parse(text: &str) -> Result<SocketOption, String> {
    let (letter, rest) = text.split_once(':').ok_or(ILLEGAL)?;
    let which = match letter {
        "a" => Which::Accept,
        "l" => Which::Local,
        "r" => Which::Remote,
        _ => return Err(ILLEGAL.into()),
    };
    let (name, value) = rest.split_once('=').ok_or(ILLEGAL)?;
    let &(name, level, optname, kind) = TABLE.iter().find(|(n, ..)| *n == name).ok_or(ILLEGAL)?;
    let value = match kind {
        Kind::Flag => Value::Int(flag(value)?),
        Kind::Int => Value::Int(int(value)?),
        Kind::Linger => {
            let (on, seconds) = value.split_once(':').unwrap_or((value, "0"));
            Value::Linger {
                on: flag(on)? != 0,
                seconds: int(seconds)?,
            }
        }
        Kind::Time => {
            let (seconds, micros) = value.split_once(':').unwrap_or((value, "0"));
            Value::Time {
                seconds: int(seconds)?.into(),
                micros: int(micros)?.into(),
            }
        }
        Kind::Text => Value::Text(value.to_string()),
    };
    Ok(SocketOption {
        which,
        name,
        level,
        optname,
        value,
    })
}

/// stunnel's defaults, which `socket` lines override.
pub fn defaults() -> Vec<SocketOption> {
    [
        "a:SO_REUSEADDR=yes",
        "l:TCP_NODELAY=yes",
        "r:TCP_NODELAY=yes",
    ]
    .iter()
    .filter_map(|text| parse(text).ok())
    .collect()
}

fn set(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: *const libc::c_void,
    len: usize,
) -> io::Result<()> {
    // SAFETY: `value` points to `len` readable bytes for the duration of the call.
    let rc = unsafe { libc::setsockopt(fd, level, name, value, len as libc::socklen_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl SocketOption {
    /// Sets the option on `fd`.
    pub fn apply(&self, fd: RawFd) -> io::Result<()> {
        match &self.value {
            Value::Int(n) => set(
                fd,
                self.level,
                self.optname,
                (n as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>(),
            ),
            Value::Linger { on, seconds } => {
                let linger = libc::linger {
                    l_onoff: libc::c_int::from(*on),
                    l_linger: *seconds,
                };
                set(
                    fd,
                    self.level,
                    self.optname,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>(),
                )
            }
            Value::Time { seconds, micros } => {
                let tv = libc::timeval {
                    tv_sec: *seconds as libc::time_t,
                    tv_usec: *micros as libc::suseconds_t,
                };
                set(
                    fd,
                    self.level,
                    self.optname,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>(),
                )
            }
            Value::Text(text) => set(
                fd,
                self.level,
                self.optname,
                text.as_ptr().cast(),
                text.len(),
            ),
        }
    }
}

/// The address family of a socket (SO_DOMAIN), or `None` for a non-socket.
fn family(fd: RawFd) -> Option<libc::c_int> {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `domain`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(domain)
}

/// Applies every option meant for `which` to `fd`, in order (a later line for the same
/// option wins). An option the kernel refuses is logged and skipped, as in stunnel.
/// Options of another protocol level than the socket's are skipped silently: IPv4
/// options on an IPv6 socket and the reverse, TCP and IP options on a Unix socket.
pub fn apply_all(fd: RawFd, options: &[SocketOption], which: Which) {
    let Some(domain) = family(fd) else {
        return;
    };
    for option in options.iter().filter(|o| o.which == which) {
        let applies = match option.level {
            libc::SOL_SOCKET => true,
            libc::IPPROTO_TCP => domain == libc::AF_INET || domain == libc::AF_INET6,
            libc::IPPROTO_IP => domain == libc::AF_INET,
            libc::IPPROTO_IPV6 => domain == libc::AF_INET6,
            _ => false,
        };
        if !applies {
            continue;
        }
        if let Err(e) = option.apply(fd) {
            log_err!("setsockopt {}: {e}", option.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_in_the_wild() {
        let o = parse("l:TCP_NODELAY=1").unwrap();
        assert_eq!(
            (o.which, o.name, &o.value),
            (Which::Local, "TCP_NODELAY", &Value::Int(1))
        );
        assert_eq!(parse("a:SO_REUSEADDR=no").unwrap().value, Value::Int(0));
        assert_eq!(
            parse("r:SO_LINGER=1:0").unwrap().value,
            Value::Linger {
                on: true,
                seconds: 0
            }
        );
        assert_eq!(parse("r:TCP_KEEPIDLE=60").unwrap().value, Value::Int(60));
        assert_eq!(
            parse("l:SO_RCVTIMEO=5:500").unwrap().value,
            Value::Time {
                seconds: 5,
                micros: 500
            }
        );
        assert_eq!(
            parse("r:SO_BINDTODEVICE=eth0").unwrap().value,
            Value::Text("eth0".into())
        );
    }

    #[test]
    fn rejects_unknown_letters_names_and_values() {
        for bad in [
            "x:TCP_NODELAY=1",
            "L:TCP_NODELAY=1",
            "l:tcp_nodelay=1",
            "l:TCP_NODELAY=maybe",
            "l:TCP_NODELAY",
            "TCP_NODELAY=1",
            "r:TCP_KEEPIDLE=1m",
        ] {
            assert_eq!(parse(bad), Err(ILLEGAL.to_string()), "{bad}");
        }
    }

    #[test]
    fn options_reach_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        use std::os::fd::AsRawFd;
        let opts = vec![
            parse("r:TCP_NODELAY=yes").unwrap(),
            parse("r:SO_KEEPALIVE=yes").unwrap(),
        ];
        apply_all(stream.as_raw_fd(), &opts, Which::Remote);
        assert!(stream.nodelay().unwrap());
        assert!(socket2::SockRef::from(&stream).keepalive().unwrap());
    }
}
